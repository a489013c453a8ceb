package presence

import (
	"errors"
	"net/http"
	"strings"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/wire"
)

// heartbeatMaxBody: the heartbeat carries no body; refuse anything sizeable.
const heartbeatMaxBody = 1 << 10

// Routes are the presence endpoints for the gateway:
//
//	POST /presence/heartbeat  → 204; the caller is seen now
//	GET  /presence/{uid}      → 200 wire.Presence; 403 unless the caller may see uid
func (s *Service) Routes() []httpapi.Route {
	return []httpapi.Route{
		{Method: http.MethodPost, Pattern: "/presence/heartbeat", Handler: s.handleHeartbeat, Class: "write", MaxBody: heartbeatMaxBody},
		{Method: http.MethodGet, Pattern: "/presence/{uid}", Handler: s.handleStatus, Class: "read"},
	}
}

func (s *Service) handleHeartbeat(w http.ResponseWriter, r *http.Request) {
	p, ok := httpapi.PrincipalFrom(r.Context())
	if !ok || p.UserID == "" {
		httpapi.WriteError(w, httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnauthorized, "%v", errNoUserInfo))
		return
	}
	s.Heartbeat(p.UserID)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Service) handleStatus(w http.ResponseWriter, r *http.Request) {
	p, ok := httpapi.PrincipalFrom(r.Context())
	if !ok || p.UserID == "" {
		httpapi.WriteError(w, httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnauthorized, "%v", errNoUserInfo))
		return
	}
	uid := r.PathValue("uid")
	if strings.IndexByte(uid, '@') >= 0 && wire.ValidPeerID(uid) == nil {
		// A user of another region: the copy the region link keeps
		// (bridge/region), current while a client of this region
		// subscribes to presence/{uid}; "unknown" without one.
		if err := s.canSee(p, uid); err != nil {
			httpapi.WriteError(w, httpapi.Errorf(http.StatusForbidden, httpapi.CodeForbidden, "%v", err))
			return
		}
		pr := wire.Presence{Status: "unknown"}
		if s.retained != nil {
			if rp, ok := s.retained.RetainedPresence(uid); ok {
				pr = rp
			}
		}
		httpapi.WriteJSON(w, http.StatusOK, pr)
		return
	}
	if err := wire.ValidUserID(uid); err != nil {
		httpapi.WriteError(w, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeValidation, "user id: %v", err))
		return
	}
	if err := s.canSee(p, uid); err != nil {
		// 403 rather than 404 for strangers: the contract says so, and it
		// reveals nothing a stranger could not learn by asking anyway.
		httpapi.WriteError(w, httpapi.Errorf(http.StatusForbidden, httpapi.CodeForbidden, "%v", err))
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, s.StatusContext(r.Context(), uid))
}

var errNotVisible = errors.New("presence of this user is not visible to you")

// canSee applies the visibility rule as the broker does: an admin role
// grants nothing here (the first account of a cluster is an admin, and a
// user's block must hold against it too).
func (s *Service) canSee(p wire.Principal, uid string) error {
	if p.UserID == uid {
		return nil
	}
	if s.CanSeePresence(p.UserID, uid) {
		return nil
	}
	return errNotVisible
}
