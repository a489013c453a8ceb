package push

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
)

var _ Proposer = (*fsmtest.Harness)(nil)

type env struct {
	t     testing.TB
	svc   *Service
	prop  *fsmtest.Harness
	clock *testutil.FakeClock
	mux   *http.ServeMux
}

func newEnv(t testing.TB, enabled ...string) *env {
	t.Helper()
	if enabled == nil {
		enabled = Platforms()
	}
	prop := fsmtest.New(t)
	e := &env{t: t, prop: prop, clock: testutil.NewFakeClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))}
	var err error
	e.svc, err = New(Deps{DB: prop.DB, Proposer: prop, FSM: prop.FSM, Enabled: enabled, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	e.mux = http.NewServeMux()
	for _, r := range e.svc.Routes() {
		e.mux.HandleFunc(r.Method+" "+r.Pattern, r.Handler)
	}
	return e
}

type resp struct {
	Code int
	Body []byte
}

func (r resp) errCode() string {
	var v struct {
		Error struct{ Code string } `json:"error"`
	}
	_ = json.Unmarshal(r.Body, &v)
	return v.Error.Code
}

func (e *env) do(method, path, body, user string) resp {
	e.t.Helper()
	req := httptest.NewRequest(method, path, bytes.NewBufferString(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if user != "" {
		req = req.WithContext(httpapi.WithPrincipal(req.Context(), wire.Principal{UserID: user}))
	}
	rec := httptest.NewRecorder()
	e.mux.ServeHTTP(rec, req)
	return resp{Code: rec.Code, Body: rec.Body.Bytes()}
}

func (e *env) state() map[string]string {
	e.t.Helper()
	return fsmtest.Dump(e.t, e.prop.DB, "r/push/")
}

// apnsToken is a valid APNs token derived from a seed.
func apnsToken(seed string) string {
	return strings.Repeat(hexOf(seed), 64)[:64]
}

func hexOf(s string) string {
	const digits = "0123456789abcdef"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		b.WriteByte(digits[s[i]>>4])
		b.WriteByte(digits[s[i]&15])
	}
	return b.String()
}

// fcmToken is a realistic FCM registration token.
func fcmToken(seed string) string {
	return "dX" + seed + ":APA91b" + strings.Repeat("Hq_-7", 30)
}

// subscription is a valid browser subscription with a fresh key.
func subscription(t testing.TB, endpoint string) *Subscription {
	t.Helper()
	k, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	auth := make([]byte, 16)
	_, _ = rand.Read(auth)
	return &Subscription{Endpoint: endpoint, Keys: SubscriptionKeys{
		P256dh: base64.RawURLEncoding.EncodeToString(k.PublicKey().Bytes()),
		Auth:   base64.RawURLEncoding.EncodeToString(auth)}}
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
