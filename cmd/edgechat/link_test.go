package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// edgechat link status with an admin's token shows a node's link (here
// to a region nobody answers for: down, nothing queued); a user's token
// is refused.
func TestLinkStatusCommand(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("a-shared-link-secret-of-the-test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) {
		c.Region = "eu"
		c.Links = []string{"us=tcp://127.0.0.1:1"}
		c.LinkSecretFile = secret
	}))
	admin := n.NewUser(t, "alice") // the first account is an admin
	user := n.NewUser(t, "bob")
	var out, errOut bytes.Buffer
	// Once the link's first attempt has failed, a line below the table
	// says why (the link is down: nothing listens at its URL).
	nodetest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		out.Reset()
		errOut.Reset()
		if code := run(context.Background(), []string{"link", "status", "--server", n.HTTPURL, "--token", admin}, nil, &out, &errOut); code != 0 {
			t.Fatalf("exit %d: %s", code, errOut.String())
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if len(lines) < 3 || lines[0] != "region eu" || !strings.HasPrefix(lines[1], "LINK") ||
			!strings.Contains(lines[2], "us ") || !strings.Contains(lines[2], " down ") || !strings.Contains(lines[2], "tcp://127.0.0.1:1") {
			t.Fatalf("output:\n%s", out.String())
		}
		if len(lines) != 4 || !strings.HasPrefix(lines[3], "us: cannot connect: ") || !strings.Contains(lines[3], "connection refused") {
			return fmt.Errorf("output:\n%s", out.String())
		}
		return nil
	})
	out.Reset()
	errOut.Reset()
	if code := run(context.Background(), []string{"link", "status", "--server", n.HTTPURL, "--token", user}, nil, &out, &errOut); code == 0 || !strings.Contains(errOut.String(), "403") {
		t.Fatalf("a user's token: exit %d, %s", code, errOut.String())
	}
}
