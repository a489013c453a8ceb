package users

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/wire"
)

// RemoteProfiles fetches the profiles of users of other regions
// (bridge/region): the profile as JSON with userId qualified (bob@us).
// Errors wrap wire.ErrNotFound (no such user or region) or
// wire.ErrUnavailable (the link is down and nothing is cached).
type RemoteProfiles interface {
	// Local is this region's name: name@{Local} is the local user name.
	Local() string
	RemoteProfile(ctx context.Context, addr string) ([]byte, error)
}

// RemoteSearcher asks the linked regions for users (bridge/region
// search.go): their profiles with userId qualified, and the regions that
// did not answer in time. The RemoteProfiles given to SetRemoteProfiles
// may implement it.
type RemoteSearcher interface {
	RemoteSearch(ctx context.Context, q string, limit int) (found []json.RawMessage, unanswered []string)
}

// SearchJSON is the first page of this region's search for q as JSON
// profiles, for another region's request; an invalid query finds no one.
func (s *Service) SearchJSON(q string, limit int) ([]json.RawMessage, error) {
	found, _, err := s.Search(q, "", min(max(limit, 1), MaxSearchLimit))
	if errors.Is(err, ErrInvalidQuery) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, 0, len(found))
	for _, p := range found {
		b, err := json.Marshal(p)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

// SetRemoteProfiles lets GET /user/{name@region} answer profiles of
// other regions (the region bridge is built after this service). Call
// it before serving.
func (s *Service) SetRemoteProfiles(r RemoteProfiles) { s.remote = r }

// ProfileJSON is uid's profile as JSON for another region's request;
// found is false for no such user. An account deleted and waiting for
// its erasure (--account-delete-grace) is marked deleted as its
// tombstone will be: the other region refuses it as a contact, as this
// one does (relate), instead of adding a user this region treats as
// unknown.
func (s *Service) ProfileJSON(uid string) ([]byte, bool, error) {
	p, err := s.Profile(uid)
	if err != nil {
		if errors.Is(err, wire.ErrNotFound) || errors.Is(err, ErrInvalidUserID) {
			return nil, false, nil
		}
		return nil, false, err
	}
	s.mu.RLock()
	a := s.accounts
	s.mu.RUnlock()
	if a != nil && a.Deleted(uid) {
		p.Deleted = true
	}
	b, err := json.Marshal(p)
	return b, err == nil, err
}

// writeQualifiedProfile answers GET /user/{name@region}.
func (s *Service) writeQualifiedProfile(w http.ResponseWriter, r *http.Request, addr string) {
	name, region, _ := strings.Cut(addr, "@")
	if s.remote != nil && region == s.remote.Local() {
		s.writeProfile(w, r, name)
		return
	}
	if s.remote == nil {
		httpapi.WriteError(w, httpError(fmt.Errorf("%w: %q", wire.ErrNoRegion, addr)))
		return
	}
	if p, erased, err := s.erasedRemote(addr); err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	} else if erased {
		// Its region erased it and told us (erase.go): whatever a
		// cache or the other region would answer.
		writeWithETag(w, r, p)
		return
	}
	body, err := s.remote.RemoteProfile(r.Context(), addr)
	if err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	writeWithETag(w, r, json.RawMessage(body))
}

// erasedRemote reads the tombstone of addr, a user of another region
// that its region erased and this region erased too (erase.go), or is
// erasing: from the replicated decision on (the auth service's record),
// before the erasure's steps wrote the tombstone, addr answers as it
// will, not with the profile a cache or the other region still holds.
func (s *Service) erasedRemote(addr string) (Profile, bool, error) {
	var p Profile
	var ok bool
	err := s.db.View(func(tx *badger.Txn) error {
		var err error
		if p, ok, err = erasedProfile(tx, addr); err != nil || ok {
			return err
		}
		if ok, err = s.erasedRemoteIn(tx, addr); ok {
			p = tombstone(addr)
		}
		return err
	})
	return p, ok, err
}
