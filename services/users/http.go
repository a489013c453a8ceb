package users

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/wire"
)

// Error codes of this service (besides httpapi's shared codes).
const (
	CodeInvalidDisplayName = "invalid_display_name"
	CodeInvalidAbout       = "invalid_about"
	CodeInvalidQuery       = "invalid_query"
	CodeSelf               = "self_not_allowed"
	CodeInvalidGroupName   = "invalid_group_name"
	CodeInvalidDescription = "invalid_description"
	CodeInvalidAvatar      = "invalid_avatar"
	CodeInvalidRole        = "invalid_role"
	CodeUnknownUsers       = "unknown_users"
	CodeNotMember          = "not_a_member"
	CodeOwnerMustTransfer  = "owner_must_transfer"
	CodeGroupFull          = "group_full"
)

const maxPatchBody = 4 << 10

// patchRequest is the body of PATCH /user/me; absent fields are unchanged.
type patchRequest struct {
	DisplayName *string `json:"displayName,omitempty"`
	About       *string `json:"about,omitempty"`
	Avatar      *string `json:"avatar,omitempty"` // "" removes it
}

// decodePatch is the strict decoder of PATCH /user/me bodies (fuzzed).
func decodePatch(body []byte) (patchRequest, error) {
	var req patchRequest
	err := httpapi.DecodeJSONBytes(body, &req)
	return req, err
}

// Routes are the service's HTTP endpoints; all need a principal.
func (s *Service) Routes() []httpapi.Route {
	routes := []httpapi.Route{
		{Method: http.MethodGet, Pattern: "/user/me", Handler: s.handleGetMe, Class: "read"},
		{Method: http.MethodPatch, Pattern: "/user/me", Handler: s.handlePatchMe, Class: "write", CatchUp: true, MaxBody: maxPatchBody},
		{Method: http.MethodGet, Pattern: "/user/{uid}", Handler: s.handleGetUser, Class: "read"},
		{Method: http.MethodGet, Pattern: "/user/search", Handler: s.handleSearch, Class: "read", CatchUp: true},
	}
	routes = append(routes, s.relationRoutes()...)
	return append(routes, s.groupRoutes()...)
}

func httpError(err error) error {
	var rule *RuleError
	var unknown *UnknownUsersError
	var unreachable *wire.RegionUnreachableError
	switch {
	case errors.As(err, &rule):
		return httpapi.Errorf(http.StatusForbidden, httpapi.CodeForbidden, "%s", rule.Rule)
	case errors.As(err, &unknown):
		return httpapi.Errorf(http.StatusBadRequest, CodeUnknownUsers, "%s", unknown.Error())
	case errors.Is(err, ErrInvalidDisplayName):
		return httpapi.Errorf(http.StatusBadRequest, CodeInvalidDisplayName, "%v", err)
	case errors.Is(err, ErrInvalidAbout):
		return httpapi.Errorf(http.StatusBadRequest, CodeInvalidAbout, "%v", err)
	case errors.Is(err, ErrInvalidQuery):
		return httpapi.Errorf(http.StatusBadRequest, CodeInvalidQuery, "%v", err)
	case errors.Is(err, ErrSelf):
		return httpapi.Errorf(http.StatusBadRequest, CodeSelf, "you cannot do that to yourself")
	case errors.Is(err, ErrInvalidGroupName):
		return httpapi.Errorf(http.StatusBadRequest, CodeInvalidGroupName, "%v", err)
	case errors.Is(err, ErrInvalidDescription):
		return httpapi.Errorf(http.StatusBadRequest, CodeInvalidDescription, "%v", err)
	case errors.Is(err, ErrInvalidRetention):
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeValidation, "%v", err)
	case errors.Is(err, ErrInvalidAvatar):
		return httpapi.Errorf(http.StatusBadRequest, CodeInvalidAvatar, "%v", err)
	case errors.Is(err, ErrInvalidRole):
		return httpapi.Errorf(http.StatusBadRequest, CodeInvalidRole, "%v", err)
	case errors.Is(err, ErrOwnerMustTransfer):
		return httpapi.Errorf(http.StatusConflict, CodeOwnerMustTransfer, "the owner must transfer ownership before leaving")
	case errors.Is(err, ErrGroupFull):
		return httpapi.Errorf(http.StatusConflict, CodeGroupFull, "%v", err)
	case errors.Is(err, ErrKeyReused):
		return httpapi.KeyReused()
	case errors.Is(err, ErrGroupExists):
		return httpapi.Errorf(http.StatusConflict, httpapi.CodeConflict, "group ID taken; retry")
	case errors.Is(err, ErrNotMember):
		return httpapi.Errorf(http.StatusNotFound, CodeNotMember, "%v", err)
	case errors.Is(err, ErrNoGroup):
		return httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no such group")
	case errors.Is(err, errBadCommand):
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "%v", err)
	case errors.Is(err, wire.ErrNotFound), errors.Is(err, ErrInvalidUserID):
		return httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no such user")
	case errors.As(err, &unreachable):
		return &httpapi.Error{Status: http.StatusServiceUnavailable, Code: httpapi.CodeUnavailable,
			Message: "region " + unreachable.Region + " cannot be reached now; retry", RetryAfter: 5 * time.Second}
	case errors.Is(err, wire.ErrUnavailable):
		return &httpapi.Error{Status: http.StatusServiceUnavailable, Code: httpapi.CodeUnavailable,
			Message: "cannot commit now; retry", RetryAfter: time.Second}
	}
	return err
}

func principal(w http.ResponseWriter, r *http.Request) (wire.Principal, bool) {
	p, ok := httpapi.PrincipalFrom(r.Context())
	if !ok || p.UserID == "" {
		httpapi.WriteError(w, httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnauthorized, "a bearer token is required"))
		return wire.Principal{}, false
	}
	return p, true
}

func (s *Service) handleGetMe(w http.ResponseWriter, r *http.Request) {
	p, ok := principal(w, r)
	if !ok {
		return
	}
	s.writeProfile(w, r, p.UserID)
}

func (s *Service) handleGetUser(w http.ResponseWriter, r *http.Request) {
	if _, ok := principal(w, r); !ok {
		return
	}
	if hint := wire.LowercaseHint(r.PathValue("uid")); hint != "" {
		httpapi.WriteError(w, httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no such user%s", hint))
		return
	}
	if uid := r.PathValue("uid"); strings.IndexByte(uid, '@') >= 0 {
		s.writeQualifiedProfile(w, r, uid) // a user of another region (remote.go)
		return
	}
	s.writeProfile(w, r, r.PathValue("uid"))
}

// markDeleted marks the profile of an account deleted and not erased
// yet as its tombstone will be, and as another region is told
// (ProfileJSON): messages to it are refused from the deletion on, so a
// client must not offer a conversation with it (GET /user/{uid}, the
// contact and block lists).
func (s *Service) markDeleted(prof Profile) Profile {
	s.mu.RLock()
	a := s.accounts
	s.mu.RUnlock()
	if a != nil && a.Deleted(prof.UserID) {
		prof.Deleted = true
	}
	return prof
}

func (s *Service) handlePatchMe(w http.ResponseWriter, r *http.Request) {
	p, ok := principal(w, r)
	if !ok {
		return
	}
	var req patchRequest
	if err := httpapi.DecodeJSON(r, &req, maxPatchBody); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	prof, err := s.update(r.Context(), p.UserID, req.DisplayName, req.About, req.Avatar)
	if err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	writeWithETag(w, r, prof)
}

// writeProfile answers uid's profile, marked deleted when its account
// is deleted and waits for its erasure (GET /user/{uid}, also as
// {uid}@{this region}).
func (s *Service) writeProfile(w http.ResponseWriter, r *http.Request, uid string) {
	prof, err := s.Profile(uid)
	if err != nil {
		httpapi.WriteError(w, httpError(err))
		return
	}
	writeWithETag(w, r, s.markDeleted(prof))
}

// writeWithETag writes v as JSON with a strong ETag (a hash of the body)
// and answers 304 when the client's If-None-Match already has it.
func writeWithETag(w http.ResponseWriter, r *http.Request, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	body = append(body, '\n')
	sum := sha256.Sum256(body)
	etag := `"` + base64.RawURLEncoding.EncodeToString(sum[:16]) + `"`
	h := w.Header()
	h.Set("ETag", etag)
	// Profiles change; clients may keep a copy but must revalidate it.
	h.Set("Cache-Control", "private, no-cache")
	if r.Method == http.MethodGet && etagMatch(r.Header.Get("If-None-Match"), etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// etagMatch implements If-None-Match's weak comparison over a list.
func etagMatch(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || strings.TrimPrefix(t, "W/") == etag {
			return true
		}
	}
	return false
}
