package main

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

// EDGECHAT_STOP_TIMEOUT bounds a stop that hangs. A malformed value
// ("60" without a unit, "soon") was taken silently for the default 45 s,
// found out only when a stop hung; serve now refuses it at start, naming
// the variable, before it binds anything.
func TestServeRefusesAMalformedStopTimeout(t *testing.T) {
	for _, v := range []string{"60", "soon", "-1s", "0s"} {
		t.Setenv("EDGECHAT_STOP_TIMEOUT", v)
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // a serve that starts stops at once
		err := serve(ctx, []string{"--data", t.TempDir(), "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0",
			"--cluster-addr", "127.0.0.1:0", "--log-level", "error"}, io.Discard, io.Discard)
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "EDGECHAT_STOP_TIMEOUT") {
			t.Errorf("EDGECHAT_STOP_TIMEOUT=%q: serve returned %v, want a usage error naming it", v, err)
		}
	}
}
