package node

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
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
		{"push-ack-timeout", "1ns"},
		{"account-delete-grace", "30s"},
		{"account-delete-grace", "100000h"},
		{"archive-hot-age", "1ns"},
		{"archive-hot-age", "100000h"},
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
		{"--heartbeat-interval", "1h", "--presence-grace", "1h", "--access-token-ttl", "24h", "--link-retention", "8760h",
			"--account-delete-grace", "2160h", "--archive-hot-age", "87600h"},
		{"--account-delete-grace", "0", "--archive-hot-age", "0"},
		{"--account-delete-grace", "1m"},
	} {
		if _, err := LoadConfig(args, nil); err != nil {
			t.Errorf("%v: %v", args, err)
		}
	}
}

// A node built through node.New (the Go API) is held to the same ranges
// as one `edgechat serve` starts: a 1ns heartbeat or push ack timeout
// built a node whose presence ticker never rests, or which pushes every
// connected device as if it had not acknowledged. The error names the
// setting and the Config field. Config.FastTimers (tests) lifts the
// minimums only.
func TestNewHoldsDurationsToTheirRanges(t *testing.T) {
	base := func() Config {
		cfg := Defaults()
		cfg.DataDir = t.TempDir()
		cfg.HTTPAddr, cfg.MQTTAddr, cfg.MQTTSAddr, cfg.ClusterAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
		cfg.LogLevel = "error"
		return cfg
	}
	for _, tc := range []struct {
		flag, field string
		set         func(c *Config)
	}{
		{"heartbeat-interval", "Heartbeat", func(c *Config) { c.Heartbeat = time.Nanosecond }},
		{"push-ack-timeout", "PushAckTimeout", func(c *Config) { c.PushAckTimeout = time.Nanosecond }},
		{"access-token-ttl", "AccessTTL", func(c *Config) { c.AccessTTL = time.Nanosecond }},
		{"presence-grace", "PresenceGrace", func(c *Config) { c.PresenceGrace = 10000 * time.Hour }},
		{"link-retention", "LinkRetention", func(c *Config) { c.LinkRetention = time.Nanosecond }},
	} {
		cfg := base()
		tc.set(&cfg)
		n, err := New(cfg, slog.New(slog.DiscardHandler))
		if err == nil {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			_ = n.Run(ctx)
		}
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "--"+tc.flag) || !strings.Contains(err.Error(), "Config."+tc.field) {
			t.Errorf("New with %s out of range: %v, want ErrConfig naming --%s and Config.%s", tc.field, err, tc.flag, tc.field)
		}
		// Tests run timers faster than a server should: FastTimers lets
		// values under the minimum through, not those over the maximum.
		cfg.FastTimers = true
		err = cfg.Validate()
		if tooLong := tc.field == "PresenceGrace"; tooLong != (err != nil) {
			t.Errorf("FastTimers, %s out of range: Validate %v", tc.field, err)
		}
	}
}

// Each range of durationRanges names its setting's flag and Config
// field truly (the error names both): the field exists, its YAML key is
// the flag's, and the range reads that field.
func TestDurationRangesNameTheirField(t *testing.T) {
	for i, d := range durationRanges {
		f, ok := reflect.TypeOf(Config{}).FieldByName(d.field)
		if !ok {
			t.Errorf("--%s: no field Config.%s", d.flag, d.field)
			continue
		}
		if key := strings.ReplaceAll(d.flag, "-", "_"); f.Tag.Get("yaml") != key {
			t.Errorf("Config.%s: yaml key %q, want %q (--%s)", d.field, f.Tag.Get("yaml"), key, d.flag)
		}
		var c Config
		want := time.Duration(1000 + i)
		reflect.ValueOf(&c).Elem().FieldByIndex(f.Index).Set(reflect.ValueOf(want))
		if got := d.get(&c); got != want {
			t.Errorf("--%s: reads %v, not Config.%s (%v)", d.flag, got, d.field, want)
		}
	}
}
