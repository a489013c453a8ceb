// Package admin serves the operator endpoints under /admin: cluster-wide
// statistics and role grants. Every route requires the admin role, which
// the gateway enforces.
package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/wire"
)

// Deps are the counters and actions the admin endpoints need.
type Deps struct {
	Accounts    func() (int, error)                                     // number of accounts
	Groups      func() (own, mirrored int, err error)                   // groups of this region with members; mirrors of others'
	Node        string                                                  // this node's ID
	Connections func() int                                              // live MQTT connections on this node
	Messages    func() uint64                                           // messages stored since start (for messages/s)
	SetAdmin    func(ctx context.Context, uid string, admin bool) error // grant or revoke the admin role
	Now         func() time.Time
}

// ErrMissingDep is returned by New when a dependency is nil.
var ErrMissingDep = errors.New("admin: missing dependency")

// Service serves /admin.
type Service struct {
	deps Deps

	started time.Time // when the node's counters started

	mu       sync.Mutex
	lastAt   time.Time
	lastMsgs uint64
	rate     float64
}

// New builds the service.
func New(deps Deps) (*Service, error) {
	if deps.Accounts == nil || deps.Groups == nil || deps.Connections == nil || deps.Messages == nil || deps.SetAdmin == nil {
		return nil, ErrMissingDep
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	now := deps.Now()
	return &Service{deps: deps, started: now, lastAt: now, lastMsgs: deps.Messages()}, nil
}

// Stats is the answer of GET /admin/stats: the cluster's accounts and
// groups, then this node's figures (Node, since Since).
type Stats struct {
	Users          int `json:"users"`
	Groups         int `json:"groups"`         // of this region, with members
	MirroredGroups int `json:"mirroredGroups"` // other regions' groups with members here
	// Node names the node whose figures follow; Since is when it started
	// counting them.
	Node           string    `json:"node"`
	Since          time.Time `json:"since"`
	Connections    int       `json:"connections"`
	MessagesStored uint64    `json:"messagesStored"` // by this node, since Since
	MessagesPerSec float64   `json:"messagesPerSecond"`
}

// Routes are the admin endpoints.
func (s *Service) Routes() []httpapi.Route {
	return []httpapi.Route{
		{Method: http.MethodGet, Pattern: "/admin/stats", Handler: s.handleStats, Admin: true, Class: httpapi.ClassAdmin},
		{Method: http.MethodPut, Pattern: "/admin/users/{uid}/admin", Handler: s.handleGrant, Admin: true, Class: httpapi.ClassAdmin, MaxBody: 1 << 10},
		// Go's profiler, for admins only (a CPU profile is 30 s by default).
		{Method: http.MethodGet, Pattern: "/debug/pprof/", Handler: pprof.Index, Admin: true, Class: httpapi.ClassAdmin},
		{Method: http.MethodGet, Pattern: "/debug/pprof/profile", Handler: pprof.Profile, Admin: true, Class: httpapi.ClassAdmin},
		{Method: http.MethodGet, Pattern: "/debug/pprof/trace", Handler: pprof.Trace, Admin: true, Class: httpapi.ClassAdmin},
		{Method: http.MethodGet, Pattern: "/debug/pprof/symbol", Handler: pprof.Symbol, Admin: true, Class: httpapi.ClassAdmin},
	}
}

// messageRate is messages/s since the previous call, at least a second
// apart so that a burst of polls does not return noise.
func (s *Service) messageRate() (uint64, float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now, total := s.deps.Now(), s.deps.Messages()
	if d := now.Sub(s.lastAt); d >= time.Second {
		s.rate = float64(total-s.lastMsgs) / d.Seconds()
		s.lastAt, s.lastMsgs = now, total
	}
	return total, s.rate
}

func (s *Service) handleStats(w http.ResponseWriter, r *http.Request) {
	users, err := s.deps.Accounts()
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	groups, mirrored, err := s.deps.Groups()
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	total, rate := s.messageRate()
	httpapi.WriteJSON(w, http.StatusOK, Stats{Users: users, Groups: groups, MirroredGroups: mirrored,
		Node: s.deps.Node, Since: s.started.UTC().Truncate(time.Second), Connections: s.deps.Connections(),
		MessagesStored: total, MessagesPerSec: rate})
}

func (s *Service) handleGrant(w http.ResponseWriter, r *http.Request) {
	uid, err := httpapi.AdminUserID(r)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	var body struct {
		Admin *bool `json:"admin"`
	}
	if err := httpapi.DecodeJSON(r, &body, 1<<10); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if body.Admin == nil {
		httpapi.WriteError(w, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeValidation, "field \"admin\" (true or false) is required"))
		return
	}
	if err := s.deps.SetAdmin(r.Context(), uid, *body.Admin); err != nil {
		switch {
		case errors.Is(err, wire.ErrNotFound):
			httpapi.WriteError(w, httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no user %q", uid))
		case errors.Is(err, wire.ErrUnavailable):
			httpapi.WriteError(w, httpapi.Errorf(http.StatusServiceUnavailable, httpapi.CodeUnavailable, "%v", err))
		default:
			httpapi.WriteError(w, fmt.Errorf("admin: set admin: %w", err))
		}
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"userId": uid, "admin": *body.Admin})
}
