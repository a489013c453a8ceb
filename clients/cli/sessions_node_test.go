package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	edgechat "github.com/edgechat/edgechat/clients/go"
	"github.com/edgechat/edgechat/node/nodetest"
)

// The terminal client against a real node: signed in with --device, its
// session is listed under that name, and /sessions then /signout 2 end
// the user's other session (a phone), whose refresh token is refused
// from then on.
func TestTerminalClientNamesItsDeviceAndEndsAnotherSession(t *testing.T) {
	n := nodetest.StartNode(t)
	lister := edgechat.Tokens{AccessToken: n.NewUser(t, "ann")} // a session of its own, unnamed
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	phone, err := edgechat.LoginDevice(ctx, n.HTTPURL, "ann", nodetest.Password("ann"), "phone")
	if err != nil {
		t.Fatal(err)
	}

	keys, typing := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Server: n.HTTPURL, User: "ann", Device: "laptop",
			Password: func() (string, error) { return nodetest.Password("ann"), nil }}, keys, io.Discard)
	}()
	defer func() {
		typing.Close()
		cancel()
		<-done
	}()

	// The laptop's session, named at sign-in, and the phone's.
	var laptopSession string
	nodetest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		list, err := sessionsOf(ctx, n.HTTPURL, lister)
		if err != nil {
			return err
		}
		for _, s := range list {
			if s.Device == "laptop" {
				laptopSession = s.ID
				return nil
			}
		}
		return fmt.Errorf("no session named laptop in %+v", list)
	})

	// /sessions, then /signout 2 (the phone: the laptop signed in last
	// and is listed first) until the list has arrived (Ctrl+U clears the
	// input line a refused command leaves).
	if _, err := io.WriteString(typing, "/sessions\r"); err != nil {
		t.Fatal(err)
	}
	nodetest.CheckFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		if _, err := io.WriteString(typing, "\x15/signout 2\r"); err != nil {
			return err
		}
		list, err := sessionsOf(ctx, n.HTTPURL, lister)
		if err != nil {
			return err
		}
		for _, s := range list {
			if s.Device == "phone" {
				return errors.New("the phone's session is still listed")
			}
		}
		return nil
	})
	if _, err := edgechat.Refresh(ctx, n.HTTPURL, phone.RefreshToken); err == nil {
		t.Fatal("the phone's refresh token still works")
	}
	list, err := sessionsOf(ctx, n.HTTPURL, lister)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range list {
		names = append(names, s.Device)
		if s.Device == "laptop" && s.ID != laptopSession {
			t.Fatalf("the laptop's session changed: %s then %s", laptopSession, s.ID)
		}
	}
	if got := strings.Join(names, ","); got != "laptop," {
		t.Fatalf("sessions left: %q, want the laptop's and the unnamed one", got)
	}
}

// sessionsOf lists the sessions with tokens t, through the SDK's HTTP client.
func sessionsOf(ctx context.Context, httpURL string, t edgechat.Tokens) ([]edgechat.Session, error) {
	cl, err := edgechat.Dial(ctx, edgechat.Options{URLs: []string{mustWS(httpURL)}, HTTPURL: httpURL, Token: t.AccessToken, Device: "lister"})
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	return cl.Sessions(ctx)
}

func mustWS(httpURL string) string {
	u, err := edgechat.WebSocketURL(httpURL)
	if err != nil {
		panic(err)
	}
	return u
}
