package node

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The duration settings an operator gives (flags, environment, file)
// took any positive value: --heartbeat-interval 1ns (a ticker that never
// rests, clients told to heartbeat a billion times a second),
// --presence-grace 1ns (every reconnect an offline and online),
// --presence-lastseen-every 1ns (a Raft write loop), --access-token-ttl
// 1ns (tokens dead on arrival) or 10000h, --link-retention 1ns (every
// message for another region dropped at once), --link-backlog-warn 1ns.
// They are refused at start, naming the setting and what it takes.
func TestAbsurdDurationsAreRefusedNamingTheFlag(t *testing.T) {
	for _, tc := range []struct{ flag, value string }{
		{"heartbeat-interval", "1ns"},
		{"heartbeat-interval", "500ms"},
		{"heartbeat-interval", "2h"},
		{"presence-grace", "1ns"},
		{"presence-grace", "2h"},
		{"presence-lastseen-every", "1ns"},
		{"access-token-ttl", "1ns"},
		{"access-token-ttl", "30s"},
		{"access-token-ttl", "10000h"},
		{"link-retention", "1ns"},
		{"link-retention", "30s"},
		{"link-backlog-warn", "1ns"},
	} {
		_, err := LoadConfig([]string{"--" + tc.flag, tc.value}, nil)
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "--"+tc.flag) {
			t.Errorf("--%s %s: %v, want ErrConfig naming --%s", tc.flag, tc.value, err, tc.flag)
		}
		env := envName(tc.flag) + "=" + tc.value
		if _, err := LoadConfig(nil, []string{env}); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", env, err)
		}
		p := filepath.Join(t.TempDir(), "edgechat.yaml")
		line := strings.ReplaceAll(tc.flag, "-", "_") + ": " + tc.value
		if err := os.WriteFile(p, []byte(line+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadConfig([]string{"--config", p}, nil); !errors.Is(err, ErrConfig) {
			t.Errorf("file %q: %v, want ErrConfig", line, err)
		}
	}
	// The edges and what the tests of the project give are taken.
	for _, args := range [][]string{
		{"--heartbeat-interval", "1s", "--presence-grace", "300ms", "--presence-lastseen-every", "1s", "--access-token-ttl", "1m",
			"--link-retention", "1m", "--link-backlog-warn", "1s", "--archive-hot-age", "1ms"},
		{"--heartbeat-interval", "1h", "--presence-grace", "1h", "--access-token-ttl", "24h", "--link-retention", "8760h"},
	} {
		if _, err := LoadConfig(args, nil); err != nil {
			t.Errorf("%v: %v", args, err)
		}
	}
}
