package cli

import (
	"context"
	"fmt"
	"io"
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
