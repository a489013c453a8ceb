package push

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/edgechat/edgechat/internal/httpapi"
)

// TestNotificationText is the body of the test notification.
const TestNotificationText = "edgechat test notification"

// testTimeout bounds one test send (the whole request waits for the
// slowest device).
const testTimeout = 20 * time.Second

// Registered is one of a user's device registrations, as the bridge
// reads them: the device ID, where to send, and when the registration
// was last refreshed (an APNs 410 older than it does not remove it).
type Registered struct {
	Name      string
	Device    Device
	UpdatedAt time.Time
	// Session is the sign-in session that registered it last ("" for
	// none): see SignedIn.
	Session string
}

// Registrations is where the bridge reads a user's devices and removes
// the dead ones (the push data service, adapted by the node).
type Registrations interface {
	Devices(uid string) ([]Registered, error)
	// RemoveToken removes uid's registration of a dead token (for Web
	// Push, the subscription's endpoint).
	RemoveToken(ctx context.Context, uid string, p Platform, token string) error
}

// TesterDeps are what the test route needs.
type TesterDeps struct {
	Sender        Provider // the Router, usually Counted
	Registrations Registrations
	Metrics       *Metrics // nil: not counted
	Logger        *slog.Logger
}

// Tester sends test notifications: POST /admin/push/test/{uid}.
type Tester struct {
	sender  Provider
	regs    Registrations
	metrics *Metrics
	log     *slog.Logger
}

// NewTester checks deps.
func NewTester(deps TesterDeps) (*Tester, error) {
	if deps.Sender == nil || deps.Registrations == nil {
		return nil, errors.New("push: TesterDeps.Sender and TesterDeps.Registrations are required")
	}
	return &Tester{sender: deps.Sender, regs: deps.Registrations, metrics: deps.Metrics,
		log: orDiscard(deps.Logger).With("component", "push")}, nil
}

// TestResult is one device's answer to a test notification.
type TestResult struct {
	Device   string `json:"device"`
	Platform string `json:"platform"`
	// Outcome is delivered, dead_token, retry or failed.
	Outcome string `json:"outcome"`
	// Status is the provider's HTTP status (0: no answer).
	Status int `json:"status"`
	// Reason is the provider's reason code, or why nothing was sent.
	Reason string `json:"reason,omitempty"`
	// Removed: the registration was removed (a dead token).
	Removed bool `json:"removed,omitempty"`
}

// Test sends the test notification to each of uid's devices at once and
// removes the registrations whose token the provider reports dead. The
// results are in the order of Registrations.Devices.
func (t *Tester) Test(ctx context.Context, uid string) ([]TestResult, error) {
	devs, err := t.regs.Devices(uid)
	if err != nil {
		return nil, fmt.Errorf("push: devices of %s: %w", uid, err)
	}
	out := make([]TestResult, len(devs))
	var wg sync.WaitGroup
	for i, reg := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = t.testOne(ctx, uid, reg)
		}()
	}
	wg.Wait()
	return out, nil
}

func (t *Tester) testOne(ctx context.Context, uid string, reg Registered) TestResult {
	sctx, cancel := context.WithTimeout(ctx, testTimeout)
	defer cancel()
	n := Notification{Title: "edgechat", Body: TestNotificationText, Sound: "default",
		CollapseID: "edgechat-test", Expiry: time.Now().Add(time.Hour)}
	res, err := t.sender.Send(sctx, reg.Device, n)
	r := TestResult{Device: reg.Name, Platform: string(reg.Device.Platform), Outcome: res.Outcome.String(),
		Status: res.Status, Reason: res.Reason}
	switch {
	case errors.Is(err, ErrNoProvider):
		r.Reason = "no provider"
	case err != nil && r.Reason == "":
		r.Reason = err.Error()
	}
	if err != nil {
		t.log.LogAttrs(ctx, slog.LevelInfo, "push test notification not delivered",
			slog.String("uid", uid), slog.String("device", reg.Name), slog.String("provider", r.Platform),
			slog.String("outcome", r.Outcome), slog.Int("status", r.Status), slog.String("reason", res.Reason))
	}
	if res.Outcome == DeadToken {
		r.Removed = removeDeadToken(ctx, t.regs, t.metrics, t.log, uid, reg, res)
	}
	return r
}

// removeDeadToken removes a registration whose token the provider
// reported dead, unless it was refreshed after the provider saw it dead,
// and reports whether it did.
func removeDeadToken(ctx context.Context, regs Registrations, m *Metrics, log *slog.Logger, uid string, reg Registered, res Result) bool {
	// APNs gives the time it last saw the token invalid in milliseconds,
	// which apns2 cuts to the second: a registration refreshed after
	// that second is still good.
	if !res.InvalidSince.IsZero() && reg.UpdatedAt.After(res.InvalidSince.Add(time.Second)) {
		return false
	}
	// The removal must not fail because the caller went away.
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), testTimeout)
	defer rcancel()
	if err := regs.RemoveToken(rctx, uid, reg.Device.Platform, tokenOf(reg.Device)); err != nil {
		log.Warn("push: removing a dead token", "uid", uid, "device", reg.Name, "provider", reg.Device.Platform, "err", err)
		return false
	}
	m.TokenRemoved(reg.Device.Platform)
	log.Info("push: dead token removed", "uid", uid, "device", reg.Name, "provider", reg.Device.Platform,
		"reason", res.Reason)
	return true
}

// Routes is the admin route.
func (t *Tester) Routes() []httpapi.Route {
	return []httpapi.Route{
		{Method: http.MethodPost, Pattern: "/admin/push/test/{uid}", Handler: t.handleTest, Admin: true, Class: httpapi.ClassAdmin},
	}
}

func (t *Tester) handleTest(w http.ResponseWriter, r *http.Request) {
	// As the /admin/users/{uid} endpoints read it: Bob is 404 with the
	// lowercase hint, a malformed ID 400 validation_failed.
	uid, err := httpapi.AdminUserID(r)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	results, err := t.Test(r.Context(), uid)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"results": results})
}
