package node

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestPushConfig(t *testing.T) {
	dir := t.TempDir()
	p8 := filepath.Join(dir, "AuthKey.p8")
	p12 := filepath.Join(dir, "apns.p12")
	creds := filepath.Join(dir, "fcm.json")
	for _, f := range []string{p8, p12, creds} {
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfgFile := filepath.Join(dir, "edgechat.yaml")
	if err := os.WriteFile(cfgFile, []byte("apns_cert_file: "+p12+"\napns_topic: com.example.chat\npush_group_limit: 50\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		args, env []string
		platforms []string
		err       string // "" : valid
	}{
		{name: "defaults: all off", platforms: nil},
		{name: "apns token", args: []string{"--apns-key-file", p8, "--apns-key-id", "ABC123DEFG", "--apns-team-id", "DEF123GHIJ", "--apns-topic", "com.example.chat"},
			platforms: []string{"apns"}},
		{name: "apns cert from yaml", args: []string{"--config", cfgFile}, platforms: []string{"apns"}},
		{name: "fcm from env", env: []string{"EDGECHAT_FCM_CREDENTIALS_FILE=" + creds, "EDGECHAT_FCM_ENDPOINT=https://127.0.0.1:9443"}, platforms: []string{"fcm"}},
		{name: "webpush", args: []string{"--webpush-subject", "mailto:ops@example.com"}, platforms: []string{"webpush"}},
		{name: "webpush https", args: []string{"--webpush-subject", "https://example.com/contact"}, platforms: []string{"webpush"}},
		{name: "grace 0", args: []string{"--push-grace", "0s"}},
		{name: "apns dev endpoint", args: []string{"--apns-cert-file", p12, "--apns-topic", "x", "--apns-endpoint", "development"}, platforms: []string{"apns"}},
		{name: "apns url endpoint", args: []string{"--apns-cert-file", p12, "--apns-topic", "x", "--apns-endpoint", "https://127.0.0.1:8443"}, platforms: []string{"apns"}},
		{name: "both apns auths", args: []string{"--apns-cert-file", p12, "--apns-key-file", p8, "--apns-key-id", "ABC123DEFG", "--apns-team-id", "DEF123GHIJ", "--apns-topic", "x"}, err: "exclude"},
		{name: "key without ids", args: []string{"--apns-key-file", p8, "--apns-topic", "x"}, err: "--apns-key-id"},
		{name: "short key id", args: []string{"--apns-key-file", p8, "--apns-key-id", "ABC", "--apns-team-id", "DEF123GHIJ", "--apns-topic", "x"}, err: "--apns-key-id"},
		{name: "ids without key", args: []string{"--apns-key-id", "ABC123DEFG"}, err: "need --apns-key-file"},
		{name: "password without cert", args: []string{"--apns-cert-password", "pw"}, err: "--apns-cert-file"},
		{name: "no topic", args: []string{"--apns-cert-file", p12}, err: "--apns-topic"},
		{name: "topic alone", args: []string{"--apns-topic", "x"}, err: "--apns-topic needs"},
		{name: "missing file", args: []string{"--fcm-credentials-file", filepath.Join(dir, "nope.json")}, err: "not a readable file"},
		{name: "dir as file", args: []string{"--fcm-credentials-file", dir}, err: "not a readable file"},
		{name: "bad apns endpoint", args: []string{"--apns-cert-file", p12, "--apns-topic", "x", "--apns-endpoint", "staging"}, err: "--apns-endpoint"},
		{name: "bad fcm endpoint", args: []string{"--fcm-endpoint", "fcm.googleapis.com"}, err: "--fcm-endpoint"},
		{name: "bad subject", args: []string{"--webpush-subject", "ops@example.com"}, err: "--webpush-subject"},
		{name: "http subject", args: []string{"--webpush-subject", "http://example.com"}, err: "--webpush-subject"},
		{name: "negative grace", args: []string{"--push-grace", "-1s"}, err: "duration"},
		{name: "long grace", args: []string{"--push-grace", "2h"}, err: "--push-grace"},
		{name: "ack timeout 0", args: []string{"--push-ack-timeout", "0s"}},
		{name: "ack timeout from env", env: []string{"EDGECHAT_PUSH_ACK_TIMEOUT=15s"}},
		{name: "negative ack timeout", args: []string{"--push-ack-timeout", "-1s"}, err: "duration"},
		{name: "long ack timeout", args: []string{"--push-ack-timeout", "1h"}, err: "--push-ack-timeout"},
		// Below a second a healthy phone's acknowledgement, a round trip
		// away, comes after the bound: every message pushed to devices
		// that have it (1ms: 10 pushes for 10 messages acknowledged 50 ms
		// after they were sent).
		{name: "tiny ack timeout", args: []string{"--push-ack-timeout", "1ns"}, err: "--push-ack-timeout"},
		{name: "short ack timeout", args: []string{"--push-ack-timeout", "500ms"}, err: "--push-ack-timeout"},
		{name: "short ack timeout from env", env: []string{"EDGECHAT_PUSH_ACK_TIMEOUT=1ms"}, err: "--push-ack-timeout"},
		{name: "ack timeout 1s", args: []string{"--push-ack-timeout", "1s"}},
		{name: "ack timeout 10m", args: []string{"--push-ack-timeout", "10m"}},
		{name: "group limit 0", args: []string{"--push-group-limit", "0"}, err: "--push-group-limit"},
		{name: "group limit text", env: []string{"EDGECHAT_PUSH_GROUP_LIMIT=many"}, err: "not a number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := LoadConfig(tc.args, tc.env)
			if tc.err != "" {
				if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want one with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.PushPlatforms(); !slices.Equal(got, tc.platforms) {
				t.Fatalf("platforms %v, want %v", got, tc.platforms)
			}
		})
	}
	d := Defaults()
	if d.PushGrace != 5*time.Second || d.PushGroupLimit != 100 || d.APNsEndpoint != "production" || d.PushAckTimeout != 10*time.Second {
		t.Fatalf("defaults %v %d %q %v", d.PushGrace, d.PushGroupLimit, d.APNsEndpoint, d.PushAckTimeout)
	}
	cfg, _ := LoadConfig([]string{"--config", cfgFile}, nil)
	if cfg.PushGroupLimit != 50 {
		t.Fatalf("push_group_limit from YAML: %d", cfg.PushGroupLimit)
	}
}
