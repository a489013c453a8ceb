//go:build unix

package cli

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
)

// Two runs of `edgechat chat --oidc` on one kept session signed each
// other out: both refreshed its refresh token at the start and as their
// access tokens aged, and the server takes a spent token presented
// again for a thief's (401 refresh_reused) and ends the session. A
// second run now stops at once, saying why, and leaves the session to
// the first; once the first is done, a run may take it.
func TestASecondRunOnTheKeptSessionIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sessions", "provider.json")
	release, err := lockSession(path) // the first run's
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Server: "http://127.0.0.1:1", OIDC: "corp", SessionFile: path}
	err = Run(context.Background(), cfg, strings.NewReader(""), io.Discard)
	if !errors.Is(err, ErrSessionInUse) {
		t.Fatalf("a second run on the session: %v, want ErrSessionInUse", err)
	}
	release()
	again, err := lockSession(path)
	if err != nil {
		t.Fatalf("after the first run ended: %v", err)
	}
	again()
}
