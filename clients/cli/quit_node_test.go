package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	edgechat "github.com/edgechat/edgechat/clients/go"
	"github.com/edgechat/edgechat/node/nodetest"
)

// Signed in with the password, the terminal client keeps no tokens, so
// its session is of no use once it quits: /quit ends it. Before, every
// start left one more "laptop" session in the user's list for as long
// as its refresh token lived.
func TestQuitEndsAPasswordSignInsSession(t *testing.T) {
	n := nodetest.StartNode(t)
	lister := edgechat.Tokens{AccessToken: n.NewUser(t, "ann")}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	keys, typing := io.Pipe()
	defer typing.Close()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Server: n.HTTPURL, User: "ann", Device: "laptop",
			Password: func() (string, error) { return nodetest.Password("ann"), nil }}, keys, io.Discard)
	}()
	laptop := func() (bool, error) {
		list, err := sessionsOf(ctx, n.HTTPURL, lister)
		if err != nil {
			return false, err
		}
		for _, s := range list {
			if s.Device == "laptop" {
				return true, nil
			}
		}
		return false, nil
	}
	nodetest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if ok, err := laptop(); err != nil || !ok {
			return fmt.Errorf("the laptop's session is not listed yet (%v)", err)
		}
		return nil
	})
	if _, err := io.WriteString(typing, "/quit\r"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the client did not quit")
	}
	if ok, err := laptop(); err != nil || ok {
		t.Fatalf("after /quit the laptop's session is listed: %v (%v)", ok, err)
	}
}

// Stopped by a signal rather than /quit (edgechat chat's context ends on
// SIGTERM, and on SIGHUP when its terminal closes), a run signed in with
// the password ends its session too: before, only /quit, Esc or Ctrl+C
// did, so every terminal closed on a running client left one more
// session in the user's list, for as long as its refresh token lived.
func TestAStoppedRunEndsAPasswordSignInsSession(t *testing.T) {
	n := nodetest.StartNode(t)
	lister := edgechat.Tokens{AccessToken: n.NewUser(t, "ann")}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx) // what main's signal handling cancels
	keys, typing := io.Pipe()
	defer typing.Close()
	done := make(chan error, 1)
	screen := &screenBuffer{}
	go func() {
		done <- Run(runCtx, Config{Server: n.HTTPURL, User: "ann", Device: "laptop",
			Password: func() (string, error) { return nodetest.Password("ann"), nil }}, keys, screen)
	}()
	laptop := func() (bool, error) {
		list, err := sessionsOf(ctx, n.HTTPURL, lister)
		if err != nil {
			return false, err
		}
		for _, s := range list {
			if s.Device == "laptop" {
				return true, nil
			}
		}
		return false, nil
	}
	nodetest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if ok, err := laptop(); err != nil || !ok {
			return fmt.Errorf("the laptop's session is not listed yet (%v)", err)
		}
		if !strings.Contains(screen.String(), "ann") {
			return fmt.Errorf("the screen is not up yet")
		}
		return nil
	})
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the client did not stop")
	}
	if ok, err := laptop(); err != nil || ok {
		t.Fatalf("after the run was stopped the laptop's session is listed: %v (%v)", ok, err)
	}
}

// A run that signed in with the password but could not connect (the
// node's /mqtt unreachable behind a proxy that passes only the API: the
// user gives up with Ctrl+C) ends the session its sign-in made: before,
// every such attempt left one more session in the user's list.
func TestARunThatCannotConnectEndsItsSignIn(t *testing.T) {
	n := nodetest.StartNode(t)
	lister := edgechat.Tokens{AccessToken: n.NewUser(t, "ann")}
	target, err := url.Parse(n.HTTPURL)
	if err != nil {
		t.Fatal(err)
	}
	api := httputil.NewSingleHostReverseProxy(target)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/mqtt" {
			http.Error(w, "no WebSocket here", http.StatusBadGateway)
			return
		}
		api.ServeHTTP(w, r)
	}))
	defer proxy.Close()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	runCtx, giveUp := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- Run(runCtx, Config{Server: proxy.URL, User: "ann", Device: "laptop",
			Password: func() (string, error) { return nodetest.Password("ann"), nil }}, strings.NewReader(""), io.Discard)
	}()
	laptop := func() (bool, error) {
		list, err := sessionsOf(ctx, n.HTTPURL, lister)
		if err != nil {
			return false, err
		}
		for _, s := range list {
			if s.Device == "laptop" {
				return true, nil
			}
		}
		return false, nil
	}
	nodetest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if ok, err := laptop(); err != nil || !ok {
			return fmt.Errorf("the laptop's session is not listed yet (%v)", err)
		}
		return nil
	})
	giveUp()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Run that never connected returned no error")
		}
	case <-ctx.Done():
		t.Fatal("Run did not return")
	}
	if ok, err := laptop(); err != nil || ok {
		t.Fatalf("after the run gave up connecting the laptop's session is listed: %v (%v)", ok, err)
	}
}
