package edgechat

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
)

// OnSignedOut's doc tells an app to call Close; callbacks may call the
// client's methods. Close (and a second Close) from a callback return at
// once instead of waiting for the dispatcher, which is running them.
func TestCloseFromACallbackReturns(t *testing.T) {
	f := newFakeServer(t)
	var c atomic.Pointer[Client]
	closed := make(chan struct{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := Dial(ctx, Options{
		URLs: []string{f.tcpURL}, HTTPURL: f.httpURL, Token: fakeJWT("bob"), HeartbeatInterval: -1,
		OnSignedOut: func(error) {
			_ = c.Load().Close() // what the doc tells an app to do
			_ = c.Load().Close() // and again: an app's two paths to sign-out
			close(closed)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	c.Store(cl)
	// No t.Cleanup(Close): a deadlocked Close would hang the cleanup too.
	f.set(func(f *fakeServer) { f.denyAuth = true }) // the session was ended elsewhere
	f.cutAll()
	testutil.Receive(t, closed, 15*time.Second)
	done := make(chan struct{})
	go func() { _ = cl.Close(); close(done) }() // from outside, after the callback's
	testutil.Receive(t, done, 5*time.Second)
	if _, err := cl.Send(context.Background(), "alice", "x"); err == nil {
		t.Fatal("Send after Close succeeded")
	}
}

// Close from outside waits for the callback that is running; that
// callback's own Close must not wait for the first one in turn.
func TestCloseWhileACallbackClosesToo(t *testing.T) {
	f := newFakeServer(t)
	var c atomic.Pointer[Client]
	entered, release := make(chan struct{}), make(chan struct{})
	inner := make(chan struct{})
	bob := dialFake(t, f, "bob", nil, func(o *Options) {
		o.OnMessage = func(m Message) {
			if m.From != "alice" {
				return
			}
			close(entered)
			<-release
			_ = c.Load().Close()
			close(inner)
		}
	})
	c.Store(bob)
	alice := dialFake(t, f, "alice", nil, nil)
	if _, err := alice.Send(context.Background(), "bob", "hi"); err != nil {
		t.Fatal(err)
	}
	testutil.Receive(t, entered, 10*time.Second)
	outer := make(chan struct{})
	go func() { _ = bob.Close(); close(outer) }()
	// The outer Close is under way (it marks the client closed first).
	testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if _, _, err := bob.waitReady(context.Background()); err != ErrClosed {
			return err
		}
		return nil
	})
	close(release)
	testutil.Receive(t, inner, 5*time.Second)
	testutil.Receive(t, outer, 5*time.Second)
}

// A callback that answers a message with Send (callbacks may call the
// client's methods) gets the stored copy, with its ID, as soon as it
// arrives: the copy is matched where it is received, not by the
// dispatcher that the callback is blocking.
func TestSendFromACallbackReturnsTheStoredCopy(t *testing.T) {
	f := newFakeServer(t)
	var bobC atomic.Pointer[Client]
	type res struct {
		m   Message
		d   time.Duration
		err error
	}
	out := make(chan res, 1)
	bob := dialFake(t, f, "bob", nil, func(o *Options) {
		o.EchoWait = 5 * time.Second
		o.OnMessage = func(m Message) {
			if m.From != "alice" {
				return
			}
			start := time.Now()
			got, err := bobC.Load().Send(context.Background(), "alice", "pong")
			out <- res{got, time.Since(start), err}
		}
	})
	bobC.Store(bob)
	alice := dialFake(t, f, "alice", nil, nil)
	if _, err := alice.Send(context.Background(), "bob", "ping"); err != nil {
		t.Fatal(err)
	}
	r := testutil.Receive(t, out, 15*time.Second)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if stored := f.stored("alice"); r.m.ID == "" || r.m.ID != stored[len(stored)-1].ID || r.d >= 4*time.Second {
		t.Fatalf("Send from OnMessage took %v and returned ID %q: it waited out EchoWait for a copy the blocked dispatcher held", r.d.Round(time.Millisecond), r.m.ID)
	}
}

// Close ends the API calls in flight (a node that does not answer) and
// those made after it with ErrClosed, as it does Send and Sync: the
// caller is not left waiting for its own deadline.
func TestCloseEndsAPICallsInFlight(t *testing.T) {
	f := newFakeServer(t)
	asked := make(chan struct{}, 1)
	f.set(func(f *fakeServer) {
		f.routes = map[string]http.HandlerFunc{"/chat/history": func(w http.ResponseWriter, r *http.Request) {
			asked <- struct{}{}
			<-r.Context().Done() // never answers
		}}
	})
	bob := dialFake(t, f, "bob", nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, _, err := bob.History(ctx, "carol", "", 10)
		done <- err
	}()
	<-asked
	_ = bob.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("History in flight at Close: %v, want ErrClosed", err)
	}
	if _, err := bob.Conversations(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Conversations after Close: %v, want ErrClosed", err)
	}
	if _, err := bob.DownloadMedia(ctx, "m1", io.Discard, false); !errors.Is(err, ErrClosed) {
		t.Fatalf("DownloadMedia after Close: %v, want ErrClosed", err)
	}
}

// After Close the client says it is not connected, and Typing (best
// effort, but told ErrNotConnected while down) says ErrClosed.
func TestTypingAndConnectedAfterClose(t *testing.T) {
	f := newFakeServer(t)
	bob := dialFake(t, f, "bob", nil, nil)
	_ = bob.Close()
	if bob.Connected() {
		t.Error("Connected() after Close: true")
	}
	if err := bob.Typing(context.Background(), "carol"); !errors.Is(err, ErrClosed) {
		t.Errorf("Typing after Close: %v, want ErrClosed", err)
	}
}

// Close does not wait for a reconnection whose token call is slow (a
// token source refreshing against a node that does not answer): it ends
// that call at once, as it ends every other call of the client, instead
// of waiting for the MQTT library to give up first. The wait for the
// library is made an hour here, so that a Close that depended on it
// could not return.
func TestCloseDuringAReconnectionsSlowTokenCall(t *testing.T) {
	f := newFakeServer(t)
	wait := disconnectWait
	t.Cleanup(func() { disconnectWait = wait }) // after the client's Close
	disconnectWait = time.Hour
	var hold atomic.Bool
	held, release := make(chan struct{}, 1), make(chan struct{})
	bob := dialFake(t, f, "bob", nil, func(o *Options) {
		o.Token = ""
		o.TokenSource = func(ctx context.Context) (string, error) {
			// A reconnection's token call has a deadline (tokenTimeout);
			// the API calls' have none here.
			if _, ok := ctx.Deadline(); ok && hold.Load() {
				select {
				case held <- struct{}{}:
				default:
				}
				select { // returns only when its context ends
				case <-ctx.Done():
					return "", ctx.Err()
				case <-release: // the test failed: let the cleanup's Close end
					return "", errors.New("released")
				}
			}
			return fakeJWT("bob"), nil
		}
	})
	t.Cleanup(func() { close(release) }) // runs before dialFake's Close
	hold.Store(true)
	f.cutAll()
	testutil.Receive(t, held, 10*time.Second) // the reconnection waits for its token
	done := make(chan struct{})
	go func() { _ = bob.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close has not returned: it waits for the MQTT library, which waits for the token call, which waits for Close")
	}
}
