package auth

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/wire"
)

// AccountInfo is one account as an admin lists it (GET /admin/users).
type AccountInfo struct {
	UserID    string    `json:"userId"`
	Admin     bool      `json:"admin"`
	Suspended bool      `json:"suspended,omitempty"`
	Password  bool      `json:"password"` // it can sign in with a password (else only through a provider)
	CreatedAt time.Time `json:"createdAt"`
}

// Bounds of a page of GET /admin/users.
const (
	defaultAccountPage = 100
	maxAccountPage     = 1000
)

// Accounts lists accounts in user-ID order after the user ID after
// ("" from the start), at most limit, skipping deleted ones; only
// suspended ones when suspendedOnly. next is where the following page
// starts ("" after the last).
func (s *Service) Accounts(after string, limit int, suspendedOnly bool) (list []AccountInfo, next string, err error) {
	if suspendedOnly {
		return s.suspendedAccounts(after, limit)
	}
	err = s.db.View(func(tx *badger.Txn) error {
		it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixAccount), PrefetchValues: true})
		defer it.Close()
		for it.Seek([]byte(prefixAccount + after)); it.Valid(); it.Next() {
			uid := string(it.Item().Key()[len(prefixAccount):])
			if uid == after || s.gone.has(uid) || (suspendedOnly && !s.suspended.has(uid)) {
				continue
			}
			if len(list) == limit {
				next = list[len(list)-1].UserID
				return nil
			}
			var a account
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &a) }); err != nil {
				return err
			}
			list = append(list, AccountInfo{UserID: uid, Admin: a.Admin, Suspended: s.suspended.has(uid), Password: a.Hash != "", CreatedAt: a.CreatedAt})
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("auth: list accounts: %w", err)
	}
	return list, next, nil
}

// suspendedAccounts is Accounts of the suspended accounts only, read
// from their suspension records (r/auth/suspended/, in user-ID order
// too), not by reading every account and keeping the suspended ones: a
// page read the whole user base when few are suspended.
func (s *Service) suspendedAccounts(after string, limit int) (list []AccountInfo, next string, err error) {
	err = s.db.View(func(tx *badger.Txn) error {
		it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixSuspended)})
		defer it.Close()
		for it.Seek([]byte(prefixSuspended + after)); it.Valid(); it.Next() {
			uid := string(it.Item().Key()[len(prefixSuspended):])
			if uid == after || s.gone.has(uid) || !s.suspended.has(uid) {
				continue
			}
			var a account
			if found, err := getJSON(tx, prefixAccount+uid, &a); err != nil {
				return err
			} else if !found {
				continue
			}
			if len(list) == limit {
				next = list[len(list)-1].UserID
				return nil
			}
			list = append(list, AccountInfo{UserID: uid, Admin: a.Admin, Suspended: true, Password: a.Hash != "", CreatedAt: a.CreatedAt})
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("auth: list suspended accounts: %w", err)
	}
	return list, next, nil
}

// handleListAccounts answers GET /admin/users?cursor=&limit=&suspended=true:
// {users, nextCursor?}.
func (s *Service) handleListAccounts(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := defaultAccountPage
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxAccountPage {
			httpapi.WriteError(w, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeValidation, "limit must be 1 to %d", maxAccountPage))
			return
		}
		limit = n
	}
	cursor := q.Get("cursor")
	if cursor != "" && wire.ValidUserID(cursor) != nil {
		httpapi.WriteError(w, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeValidation, "malformed cursor"))
		return
	}
	suspendedOnly := false
	switch q.Get("suspended") {
	case "", "false":
	case "true":
		suspendedOnly = true
	default:
		httpapi.WriteError(w, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeValidation, "suspended must be true or false"))
		return
	}
	list, next, err := s.Accounts(cursor, limit, suspendedOnly)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if list == nil {
		list = []AccountInfo{}
	}
	ans := map[string]any{"users": list}
	if next != "" {
		ans["nextCursor"] = next
	}
	w.Header().Set("Cache-Control", "no-store")
	httpapi.WriteJSON(w, http.StatusOK, ans)
}
