package broker

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestQuietRefusalsDemotesOnlyRefusals(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(quietRefusals{slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})}).With("component", "mochi")
	log.Error("publish packet error", "error", "quota exceeded")
	log.Error("listener failed", "error", "boom")
	out := buf.String()
	if strings.Contains(out, "publish packet error") || !strings.Contains(out, "listener failed") {
		t.Fatalf("log output:\n%s", out)
	}
}
