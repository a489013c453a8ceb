package edgechat

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
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
	requireReconnectedNotSignedOut(ctx, t, bob, &ups, upsBefore, &signedOut, "the reconnection presented the revoked token")
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
	requireReconnectedNotSignedOut(ctx, t, bob, &ups, upsBefore, &signedOut, "the refusal of the token the reconnection had before the change was taken for a sign-out")
}

// requireReconnectedNotSignedOut: bob connected again since ups was
// upsBefore, and OnSignedOut (counted in signedOut) never ran (why: what
// a run would mean).
func requireReconnectedNotSignedOut(ctx context.Context, t *testing.T, bob *Client, ups *atomic.Int32, upsBefore int32, signedOut *atomic.Int32, why string) {
	t.Helper()
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
		t.Fatalf("OnSignedOut ran %d times: %s", n, why)
	}
}

// holdKey marks the context of a call whose token call the test holds.
type holdKey struct{}

// An API call that got its token just before a password change began
// sends it after the change revoked it: the 401 is not the end of the
// session (the change keeps it), so the call is made again with the new
// token instead of failing with ErrUnauthorized, which an app takes for
// "sign in again".
func TestAPICallWithATokenFromBeforeAPasswordChange(t *testing.T) {
	f := newFakeServer(t)
	oldTok, newTok := fakeJWTNamed("bob", "old"), fakeJWTNamed("bob", "new")
	f.set(func(f *fakeServer) {
		f.routes = map[string]http.HandlerFunc{
			"/auth/password": func(w http.ResponseWriter, r *http.Request) {
				f.set(func(f *fakeServer) { f.refused = map[string]bool{oldTok: true} })
				_, _ = fmt.Fprintf(w, `{"accessToken":%q,"refreshToken":"r-new","expiresIn":900,"revoked":2}`, newTok)
			},
			"/chat/history": func(w http.ResponseWriter, r *http.Request) {
				f.mu.Lock()
				refused := f.refused[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
				f.mu.Unlock()
				if refused {
					w.WriteHeader(http.StatusUnauthorized)
					_, _ = w.Write([]byte(`{"error":{"code":"unauthorized","message":"token revoked"}}`))
					return
				}
				_, _ = w.Write([]byte(`{"messages":[],"hasMore":false}`))
			},
		}
	})
	held, release := make(chan struct{}), make(chan struct{})
	var signedOut atomic.Int32
	bob := dialFake(t, f, "bob", nil, func(o *Options) {
		o.Token = ""
		o.TokenSource = func(ctx context.Context) (string, error) {
			if ctx.Value(holdKey{}) != nil {
				close(held)
				<-release // returns the old token once the change is done
			}
			return oldTok, nil
		}
		o.OnSignedOut = func(error) { signedOut.Add(1) }
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, _, err := bob.History(context.WithValue(ctx, holdKey{}, true), "carol", "", 10)
		done <- err
	}()
	testutil.Receive(t, held, 10*time.Second)
	if _, err := bob.ChangePassword(ctx, "old-password", "new-password", nil); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := testutil.Receive(t, done, 10*time.Second); err != nil {
		t.Fatalf("History with a token from before the password change: %v, want it made again with the new token", err)
	}
}
