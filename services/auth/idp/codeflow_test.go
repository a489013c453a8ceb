package idp

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/wire"
)

func loginPayload(t testing.TB, c loginCmd) []byte {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestLoginStateIsSpentOnceAndExpires(t *testing.T) {
	h := fsmtest.New(t)
	h.FSM.Register(wire.CmdOIDCLogin, applyLogin)
	ctx := context.Background()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	start := func(state string, at time.Time) {
		t.Helper()
		l := &pendingLogin{Provider: "p", Nonce: "n", Verifier: "v", Callback: "https://x/cb", Expires: at.Add(loginTTL)}
		if _, err := h.Propose(ctx, wire.CmdOIDCLogin, loginPayload(t, loginCmd{Op: "start", Key: stateKey(state), Login: l, At: at})); err != nil {
			t.Fatal(err)
		}
	}
	finish := func(state string, at time.Time) (any, error) {
		return h.Propose(ctx, wire.CmdOIDCLogin, loginPayload(t, loginCmd{Op: "finish", Key: stateKey(state), At: at}))
	}
	start("a", t0)
	if v, err := finish("a", t0.Add(time.Minute)); err != nil || v.(pendingLogin).Nonce != "n" {
		t.Fatalf("finish: %v %v", v, err)
	}
	if _, err := finish("a", t0.Add(time.Minute)); !errors.Is(err, ErrBadState) {
		t.Fatalf("second finish: %v", err)
	}
	start("b", t0)
	if _, err := finish("b", t0.Add(loginTTL)); !errors.Is(err, ErrBadState) {
		t.Fatalf("finish after the TTL: %v", err)
	}
	if _, err := finish("never", t0); !errors.Is(err, ErrBadState) {
		t.Fatalf("unknown state: %v", err)
	}
	// Unfinished logins are swept by later starts, oldest first, a bounded
	// number each time.
	for i := range loginGCPerStep + 5 {
		start(strings.Repeat("c", i+1), t0)
	}
	start("late", t0.Add(loginTTL+time.Second))
	left := len(fsmtest.Dump(t, h.DB, prefixLogin))
	if left != 5+1 {
		t.Fatalf("%d pending logins after a sweep, want 6", left)
	}
	start("later", t0.Add(loginTTL+2*time.Second))
	if left := len(fsmtest.Dump(t, h.DB, prefixLogin)); left != 2 {
		t.Fatalf("%d pending logins after the second sweep, want 2", left)
	}
	if n, m := len(fsmtest.Dump(t, h.DB, prefixLogin)), len(fsmtest.Dump(t, h.DB, prefixLoginExp)); n != m {
		t.Fatalf("%d logins but %d expiry keys", n, m)
	}
}

// FuzzApplyLogin: any command is applied or refused without writing; a
// finished login can never be finished again.
func FuzzApplyLogin(f *testing.F) {
	key := stateKey("s")
	f.Add([]byte(`{"op":"start","key":"` + key + `","login":{"provider":"p","nonce":"n","verifier":"v","callback":"c","expires":"2026-01-01T00:10:00Z"},"at":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"op":"finish","key":"` + key + `","at":"2026-01-01T00:01:00Z"}`))
	f.Add([]byte(`{"op":"start","key":"00"}`))
	h := fsmtest.New(f)
	h.FSM.Register(wire.CmdOIDCLogin, applyLogin)
	f.Fuzz(func(t *testing.T, payload []byte) {
		before := len(fsmtest.Dump(t, h.DB, ""))
		_, err := h.Propose(context.Background(), wire.CmdOIDCLogin, payload)
		if errors.Is(err, errBadLoginCmd) {
			if after := len(fsmtest.Dump(t, h.DB, "")); after != before {
				t.Fatalf("refused, yet changed %d keys", after-before)
			}
			return
		}
		var c loginCmd
		if err == nil && json.Unmarshal(payload, &c) == nil && c.Op == "finish" {
			if _, err := h.Propose(context.Background(), wire.CmdOIDCLogin, payload); !errors.Is(err, ErrBadState) {
				t.Fatalf("finished twice: %v", err)
			}
		}
	})
}
