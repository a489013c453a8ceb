package edgechat

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
)

// fakeJWTNamed is fakeJWT with a name, so that two tokens of one user
// differ.
func fakeJWTNamed(sub, name string) string {
	enc := base64.RawURLEncoding
	payload, _ := json.Marshal(map[string]any{"sub": sub, "exp": time.Now().Add(time.Hour).Unix(), "name": name})
	return enc.EncodeToString([]byte(`{"alg":"none"}`)) + "." + enc.EncodeToString(payload) + ".sig"
}

// The server closes the changing client's connection when the password
// change commits, before its answer (the new tokens) arrives. The
// client waits for them rather than reconnect with the revoked token,
// which would be refused and reported as a sign-out.
func TestChangePasswordReconnectsWithTheNewTokens(t *testing.T) {
	f := newFakeServer(t)
	oldTok, newTok := fakeJWTNamed("bob", "old"), fakeJWTNamed("bob", "new")
	answered := make(chan struct{})
	f.set(func(f *fakeServer) {
		f.routes = map[string]http.HandlerFunc{"/auth/password": func(w http.ResponseWriter, r *http.Request) {
			f.set(func(f *fakeServer) { f.refused = map[string]bool{oldTok: true} })
			f.cutAll()                         // the commit ends every session, this one's too
			time.Sleep(300 * time.Millisecond) // the answer is on its way meanwhile
			_, _ = fmt.Fprintf(w, `{"accessToken":%q,"refreshToken":"r-new","expiresIn":900,"revoked":2}`, newTok)
			close(answered)
		}}
	})
	var signedOut, ups atomic.Int32
	bob := dialFake(t, f, "bob", nil, func(o *Options) {
		o.Token = oldTok
		o.OnSignedOut = func(error) { signedOut.Add(1) }
		o.OnConnectionChange = func(up bool) {
			if up {
				ups.Add(1)
			}
		}
	})
	upsBefore := ups.Load()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pc, err := bob.ChangePassword(ctx, "old-password", "new-password", nil)
	if err != nil || pc.AccessToken != newTok {
		t.Fatalf("change: %+v %v", pc, err)
	}
	testutil.Receive(t, answered, time.Second)
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if ups.Load() == upsBefore || !bob.Connected() {
			return fmt.Errorf("not reconnected")
		}
		return nil
	})
	if err := bob.flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := signedOut.Load(); n != 0 {
		t.Fatalf("OnSignedOut ran %d times: the reconnection presented the revoked token", n)
	}
}

// A reconnection that got its token just before a password change began
// presents it after the change revoked it: the server refuses that
// CONNECT, and the client must not take the refusal of a token it had
// before the change for a sign-out (the next attempt has the new one).
func TestChangePasswordWhileAReconnectionHoldsTheOldToken(t *testing.T) {
	f := newFakeServer(t)
	oldTok, newTok := fakeJWTNamed("bob", "old"), fakeJWTNamed("bob", "new")
	f.set(func(f *fakeServer) {
		f.routes = map[string]http.HandlerFunc{"/auth/password": func(w http.ResponseWriter, r *http.Request) {
			f.set(func(f *fakeServer) { f.refused = map[string]bool{oldTok: true} })
			f.cutAll()
			_, _ = fmt.Fprintf(w, `{"accessToken":%q,"refreshToken":"r-new","expiresIn":900,"revoked":2}`, newTok)
		}}
	})
	var hold atomic.Bool
	held, release := make(chan struct{}), make(chan struct{})
	var signedOut, ups atomic.Int32
	bob := dialFake(t, f, "bob", nil, func(o *Options) {
		o.Token = ""
		o.TokenSource = func(ctx context.Context) (string, error) {
			// The reconnection's call (the first after hold is set; it
			// has a deadline, the API calls' have none) gets the old
			// token, but only once the change is done.
			if _, ok := ctx.Deadline(); ok && hold.CompareAndSwap(true, false) {
				close(held)
				<-release
			}
			return oldTok, nil
		}
		o.OnSignedOut = func(error) { signedOut.Add(1) }
		o.OnConnectionChange = func(up bool) {
			if up {
				ups.Add(1)
			}
		}
	})
	upsBefore := ups.Load()
	hold.Store(true)
	f.cutAll()
	testutil.Receive(t, held, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pc, err := bob.ChangePassword(ctx, "old-password", "new-password", nil)
	if err != nil || pc.AccessToken != newTok {
		t.Fatalf("change: %+v %v", pc, err)
	}
	close(release) // the reconnection presents the token it got before the change
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if ups.Load() == upsBefore || !bob.Connected() {
			return fmt.Errorf("not reconnected")
		}
		return nil
	})
	if err := bob.flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := signedOut.Load(); n != 0 {
		t.Fatalf("OnSignedOut ran %d times: the refusal of the token the reconnection had before the change was taken for a sign-out", n)
	}
}
