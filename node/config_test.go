package node

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestConfigPrecedenceFlagsEnvFileDefaults(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "edgechat.yaml")
	yaml := "data: /from/file\nhttp_addr: 127.0.0.1:1\nmqtt_addr: 127.0.0.1:2\nheartbeat_interval: 7s\nallowed_origins: [https://a.example]\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"EDGECHAT_HTTP_ADDR=127.0.0.1:3", "EDGECHAT_MQTT_ADDR=127.0.0.1:4", "PATH=/bin"}
	cfg, err := LoadConfig([]string{"--config", file, "--mqtt-addr", "127.0.0.1:5", "--dev"}, env)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "/from/file" || cfg.HTTPAddr != "127.0.0.1:3" || cfg.MQTTAddr != "127.0.0.1:5" {
		t.Fatalf("precedence wrong: %+v", cfg)
	}
	if cfg.Heartbeat != 7*time.Second || !cfg.Dev || len(cfg.AllowedOrigins) != 1 {
		t.Fatalf("values: %+v", cfg)
	}
	if cfg.ClusterAddr != ":7946" || cfg.PresenceGrace != 5*time.Second {
		t.Fatalf("defaults lost: %+v", cfg)
	}
}

func TestConfigRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	_ = os.WriteFile(bad, []byte("no_such_key: 1\n"), 0o600)
	cases := map[string]struct {
		args []string
		env  []string
	}{
		"unknown flag":        {args: []string{"--nope"}},
		"bad duration":        {args: []string{"--heartbeat-interval", "soon"}},
		"negative duration":   {env: []string{"EDGECHAT_PRESENCE_GRACE=-1s"}},
		"unknown yaml key":    {args: []string{"--config", bad}},
		"missing file":        {args: []string{"--config", filepath.Join(dir, "missing.yaml")}},
		"cert without key":    {args: []string{"--tls-cert", "c.pem"}},
		"bad log level":       {args: []string{"--log-level", "loud"}},
		"stray argument":      {args: []string{"extra"}},
		"node id with slash":  {args: []string{"--node-id", "a/b"}},
		"bad bool in env var": {env: []string{"EDGECHAT_DEV=maybe"}},
	}
	for name, c := range cases {
		if _, err := LoadConfig(c.args, c.env); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: err %v, want ErrConfig", name, err)
		}
	}
}

func TestDefaultsAreTheProductDefaults(t *testing.T) {
	cfg, err := LoadConfig(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "./data" || cfg.HTTPAddr != ":8080" || cfg.MQTTAddr != ":1883" || cfg.ClusterAddr != ":7946" || cfg.Dev {
		t.Fatalf("defaults: %+v", cfg)
	}
}

func TestNewFailsCleanlyWhenAPortIsTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cfg := Defaults()
	cfg.DataDir = t.TempDir()
	cfg.HTTPAddr = l.Addr().String() // taken
	cfg.MQTTAddr = "127.0.0.1:0"
	cfg.ClusterAddr = "127.0.0.1:0"
	if _, err := New(cfg, nil); err == nil {
		t.Fatal("New succeeded on a taken port")
	}
	// Everything New opened was released: the data dir can be opened again.
	cfg.HTTPAddr = "127.0.0.1:0"
	n, err := New(cfg, nil)
	if err != nil {
		t.Fatalf("second New on the same data dir: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = n.Run(ctx)
}
