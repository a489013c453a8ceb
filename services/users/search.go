package users

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/wire"
)

// Search limits.
const (
	MaxSearchQuery     = 64
	MaxSearchLimit     = 50
	defaultSearchLimit = 20
)

// ErrInvalidQuery refuses an empty, overlong or unprintable search query.
var ErrInvalidQuery = errors.New("users: invalid search query")

// Search finds users whose user ID or display name starts with q, case
// insensitively: first the user-ID matches in user-ID order, then the
// other display-name matches in name order. after is the cursor of the
// previous page ("" for the first); next is "" on the last page.
//
// The cursor names the last key seen in one of the two indexes, so paging
// needs no server state and a user changing their name mid-way at worst
// moves between pages.
func (s *Service) Search(q, after string, limit int) (found []Profile, next string, err error) {
	q = strings.TrimSpace(q)
	if n := utf8.RuneCountInString(q); n < 1 || n > MaxSearchQuery || !utf8.ValidString(q) {
		return nil, "", fmt.Errorf("%w: 1 to %d characters", ErrInvalidQuery, MaxSearchQuery)
	}
	for _, r := range q {
		if !unicode.IsPrint(r) && r != wire.ZWNJ && r != wire.ZWJ { // names may hold joiners
			return nil, "", fmt.Errorf("%w: printable characters only", ErrInvalidQuery)
		}
	}
	limit = min(max(limit, 1), MaxSearchLimit)
	lq := strings.ToLower(q)
	phase, last, _ := strings.Cut(after, "\x00")
	if phase != "n" {
		phase = "u"
	}
	if after == "" {
		last = ""
	}
	found = make([]Profile, 0, limit)
	more := false
	s.mu.RLock()
	accounts := s.accounts
	s.mu.RUnlock()
	// A deleted account is an unknown user: never found (its profile
	// stays until the erase; the tombstone after it is not indexed).
	deleted := func(uid string) bool { return accounts != nil && accounts.Deleted(uid) }
	err = s.db.View(func(tx *badger.Txn) error {
		if phase == "u" {
			var err error
			if more, err = scan(tx, prefixProfile, lq, last, true, func(k string, v []byte) (bool, error) {
				if deleted(k) {
					return false, nil
				}
				if len(found) == limit {
					return true, nil
				}
				var p Profile
				if err := json.Unmarshal(v, &p); err != nil {
					return false, err
				}
				found = append(found, p)
				next = "u\x00" + k
				return false, nil
			}); err != nil || more {
				return err
			}
			last = ""
		}
		var err error
		more, err = scan(tx, prefixName, lq, last, false, func(k string, _ []byte) (bool, error) {
			i := strings.LastIndexByte(k, 0)
			if i < 0 {
				return false, nil
			}
			uid := k[i+1:]
			if strings.HasPrefix(uid, lq) || deleted(uid) {
				return false, nil // already listed as a user-ID match, or deleted
			}
			if len(found) == limit {
				return true, nil
			}
			p, err := profileIn(tx, uid)
			if err != nil {
				return false, err
			}
			found = append(found, p)
			next = "n\x00" + k
			return false, nil
		})
		return err
	})
	if err != nil {
		return nil, "", fmt.Errorf("users: search: %w", err)
	}
	if !more {
		next = ""
	}
	return found, next, nil
}

// scan visits the keys under base+match whose suffix (after base) sorts
// after `after`, until fn says stop (returned as true).
func scan(tx *badger.Txn, base, match, after string, values bool, fn func(suffix string, v []byte) (bool, error)) (bool, error) {
	opts := badger.DefaultIteratorOptions
	opts.PrefetchValues = values
	opts.PrefetchSize = 16
	opts.Prefix = []byte(base + match)
	it := tx.NewIterator(opts)
	defer it.Close()
	start := opts.Prefix
	if after != "" {
		start = []byte(base + after + "\x00")
	}
	for it.Seek(start); it.Valid(); it.Next() {
		item := it.Item()
		var v []byte
		if values {
			var err error
			if v, err = item.ValueCopy(nil); err != nil {
				return false, err
			}
		}
		stop, err := fn(string(item.Key()[len(base):]), v)
		if stop || err != nil {
			return stop, err
		}
	}
	return false, nil
}

func profileIn(tx *badger.Txn, uid string) (Profile, error) {
	var p Profile
	it, err := tx.Get([]byte(prefixProfile + uid))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return Profile{UserID: uid, DisplayName: uid}, nil
	}
	if err != nil {
		return p, err
	}
	return p, it.Value(func(b []byte) error { return json.Unmarshal(b, &p) })
}

// searchCursor tells the cursors Search makes: "u\x00{uid}" (a user-ID
// match) or "n\x00{lowered name}\x00{uid}" (a display-name match).
func searchCursor(c string) bool {
	phase, rest, ok := strings.Cut(c, "\x00")
	switch {
	case !ok:
		return false
	case phase == "u":
		return wire.ValidUserID(rest) == nil
	case phase == "n":
		i := strings.LastIndexByte(rest, 0)
		return i > 0 && wire.ValidUserID(rest[i+1:]) == nil
	}
	return false
}

func (s *Service) handleSearch(w http.ResponseWriter, r *http.Request) {
	if _, ok := principal(w, r); !ok {
		return
	}
	cursor, limit, err := pageParams(r, defaultSearchLimit, MaxSearchLimit, searchCursor)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	q := r.URL.Query()
	allRegions := false
	switch q.Get("regions") {
	case "", "local":
	case "all":
		allRegions = true
	default:
		httpapi.WriteError(w, httpError(fmt.Errorf("%w: regions: want all or local", ErrInvalidQuery)))
		return
	}
	found, next, err := s.Search(q.Get("q"), cursor, limit)
	if err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	out := map[string]any{"users": found}
	if next != "" {
		out["nextCursor"] = encodeCursor(next)
	}
	// Other regions' matches come on the first page, after this
	// region's, at most limit from each (they are not paged).
	if rs, ok := s.remote.(RemoteSearcher); ok && allRegions && cursor == "" {
		remote, unanswered := rs.RemoteSearch(r.Context(), q.Get("q"), limit)
		users := make([]any, 0, len(found)+len(remote))
		for _, p := range found {
			users = append(users, p)
		}
		for _, p := range remote {
			users = append(users, p)
		}
		out["users"] = users
		if unanswered == nil {
			unanswered = []string{}
		}
		out["unanswered"] = unanswered
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
}
