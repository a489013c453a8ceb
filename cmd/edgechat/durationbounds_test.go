package main

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

// `edgechat serve` refuses an absurd duration at start, naming it:
// --access-token-ttl 1ns, --link-retention 1ns and the like were taken
// (node.LoadConfig's ranges), and so was EDGECHAT_STOP_TIMEOUT=1ns, a
// stop that gives up at once.
func TestServeRefusesAbsurdDurations(t *testing.T) {
	base := []string{"--data", t.TempDir(), "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0",
		"--cluster-addr", "127.0.0.1:0", "--log-level", "error"}
	for _, tc := range []struct {
		args      []string
		env, want string
	}{
		{args: []string{"--access-token-ttl", "1ns"}, want: "--access-token-ttl"},
		{args: []string{"--link-retention", "1ns"}, want: "--link-retention"},
		{args: []string{"--heartbeat-interval", "1ns"}, want: "--heartbeat-interval"},
		{env: "1ns", want: "EDGECHAT_STOP_TIMEOUT"},
		{env: "500ms", want: "EDGECHAT_STOP_TIMEOUT"},
	} {
		t.Setenv("EDGECHAT_STOP_TIMEOUT", tc.env)
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // a serve that starts stops at once
		err := serve(ctx, append(append([]string{}, base...), tc.args...), io.Discard, io.Discard)
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v EDGECHAT_STOP_TIMEOUT=%q: serve returned %v, want a usage error naming %s", tc.args, tc.env, err, tc.want)
		}
	}
}
