package presence

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

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
	if name, region, ok := strings.Cut(uid, "@"); ok && s.region != "" && region == s.region {
		uid = name // name@{this region} is the local user (docs/regions.md)
	}
	if strings.IndexByte(uid, '@') >= 0 && wire.ValidPeerID(uid) == nil {
		// A user of another region: the copy the region link keeps
		// (bridge/region), current while a client of this region
		// subscribes to presence/{uid}; "unknown" without one.
		if err := s.canSeeCaughtUp(r.Context(), p, uid); err != nil {
			httpapi.WriteError(w, err)
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
	if err := s.canSeeCaughtUp(r.Context(), p, uid); err != nil {
		// 403 rather than 404 for strangers: the contract says so, and it
		// reveals nothing a stranger could not learn by asking anyway.
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, s.StatusContext(r.Context(), uid))
}

var errNotVisible = errors.New("presence of this user is not visible to you")

// catchUpTimeout bounds how long a refused GET /presence/{uid} waits for
// this node to apply what the cluster committed before it.
const catchUpTimeout = 5 * time.Second

// canSeeCaughtUp is canSee as an HTTP error, refusing (403) only once
// this node has applied what the cluster had committed, as the broker
// refuses presence/{uid}: the contact, group or lifted block that allows
// the viewer may have been committed through another node a moment ago.
// A node that cannot catch up answers 503 (retry); an allowed read does
// not wait.
func (s *Service) canSeeCaughtUp(ctx context.Context, p wire.Principal, uid string) error {
	err := s.canSee(p, uid)
	if err == nil {
		return nil
	}
	if s.barrier != nil {
		bctx, cancel := context.WithTimeout(ctx, catchUpTimeout)
		berr := s.barrier(bctx)
		cancel()
		if berr != nil {
			return &httpapi.Error{Status: http.StatusServiceUnavailable, Code: httpapi.CodeUnavailable,
				Message: "cannot tell now: this node cannot reach its cluster's leader; retry", RetryAfter: time.Second}
		}
		if err = s.canSee(p, uid); err == nil {
			return nil
		}
	}
	return httpapi.Errorf(http.StatusForbidden, httpapi.CodeForbidden, "%v", err)
}

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
