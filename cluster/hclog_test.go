package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// A clean stop closes Raft's connections under its transport's readers,
// which report it as an error: that must not reach the log as one, while
// any other error still does.
func TestHclogAdapterQuietsOwnClosedConnections(t *testing.T) {
	var buf bytes.Buffer
	h := newHclog(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})), "raft", hclog.Warn)
	closed := &net.OpError{Op: "read", Net: "tcp", Err: net.ErrClosed}
	h.Error("failed to decode incoming command", "error", closed)
	h.Error("failed to decode incoming command", "error", fmt.Errorf("decode: %w", closed))
	if buf.Len() != 0 {
		t.Fatalf("a read of a connection we closed was logged: %s", buf.String())
	}
	h.Error("failed to decode incoming command", "error", errors.New("unexpected EOF"))
	h.Error("failed to decode incoming command", "error", closed, "other", errors.New("disk full"))
	if got := strings.Count(buf.String(), "level=ERROR"); got != 2 {
		t.Fatalf("other errors: %d ERROR lines, want 2:\n%s", got, buf.String())
	}
}
