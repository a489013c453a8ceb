package cli_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgechat/edgechat/clients/cli"
	edgechat "github.com/edgechat/edgechat/clients/go"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
	"github.com/edgechat/edgechat/services/auth/idp"
	"github.com/edgechat/edgechat/services/auth/idp/idptest"
)

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var userCode = regexp.MustCompile(`code (ABCD-\d{4})`)

func TestOIDCDeviceLoginKeepsTheSession(t *testing.T) {
	op := idptest.Start(t)
	n := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) {
		c.OIDCProviders = []idp.ProviderConfig{{Name: "corp", Issuer: op.Issuer, ClientID: idptest.ClientID, CAFile: op.CAFile}}
	}))
	session := filepath.Join(t.TempDir(), "cfg", "edgechat", "sessions", "corp.json")
	out := &syncBuffer{}
	login := cli.OIDCLogin{Server: n.HTTPURL, Provider: "corp", SessionFile: session, Device: "laptop", Out: out, HTTPClient: op.Client()}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	type result struct {
		userID, refresh, access string
		err                     error
	}
	done := make(chan result, 1)
	go func() {
		tk, err := login.Tokens(ctx)
		done <- result{tk.UserID, tk.RefreshToken, tk.AccessToken, err}
	}()
	// The user reads the code off the terminal and approves it at the provider.
	testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		m := userCode.FindStringSubmatch(out.String())
		if m == nil {
			return fmt.Errorf("no code printed yet: %q", out.String())
		}
		if !op.ApproveDevice(m[1], idptest.Claims{"sub": "t-1", "preferred_username": "tess"}) {
			return fmt.Errorf("the provider does not know code %s", m[1])
		}
		return nil
	})
	r := <-done
	if r.err != nil || r.userID != "tess" {
		t.Fatalf("device login: %+v; output %q", r, out.String())
	}
	if !strings.Contains(out.String(), op.Issuer+"/activate") {
		t.Fatalf("output does not say where to go: %q", out.String())
	}
	// The session the device flow made carries the device's name.
	ws, err := edgechat.WebSocketURL(n.HTTPURL)
	if err != nil {
		t.Fatal(err)
	}
	c, err := edgechat.Dial(ctx, edgechat.Options{URLs: []string{ws}, HTTPURL: n.HTTPURL, Token: r.access, Device: "lister"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ss, err := c.Sessions(ctx); err != nil || len(ss) != 1 || ss[0].Device != "laptop" {
		t.Fatalf("sessions %+v %v: want one named laptop", ss, err)
	}
	st, err := os.Stat(session)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("session file: %v %v", st, err)
	}
	if dst, err := os.Stat(filepath.Dir(session)); err != nil || dst.Mode().Perm() != 0o700 {
		t.Fatalf("session directory: %v %v", dst, err)
	}
	before, _ := os.ReadFile(session)

	// The next start signs in with the kept session: the provider is not asked.
	hits := op.DiscoveryHits()
	tk, err := login.Tokens(ctx)
	if err != nil || tk.UserID != "tess" || op.DiscoveryHits() != hits {
		t.Fatalf("second start: %+v %v (provider asked %d times)", tk, err, op.DiscoveryHits()-hits)
	}
	if after, _ := os.ReadFile(session); string(after) == string(before) {
		t.Fatal("the kept refresh token was not rotated")
	}

	// An unknown provider is a configuration error naming the known ones.
	_, err = cli.OIDCLogin{Server: n.HTTPURL, Provider: "nope", Out: out, HTTPClient: op.Client()}.Tokens(ctx)
	if !errors.Is(err, cli.ErrConfig) || !strings.Contains(err.Error(), "corp") {
		t.Fatalf("unknown provider: %v", err)
	}
}
