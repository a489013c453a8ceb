package node

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestRegionFlags(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("0123456789abcdef-shared\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig([]string{"--region", "eu", "--link", "us=tls://mqtt.us.example.com:8883", "--link", "ap=tcp://10.0.0.9:1883",
		"--link-secret-file", secret}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Region != "eu" || len(cfg.Links) != 2 {
		t.Fatalf("config %q %q", cfg.Region, cfg.Links)
	}
	links, err := cfg.regionLinks()
	if err != nil || len(links) != 2 || links[0].Secret != "0123456789abcdef-shared" {
		t.Fatalf("links %+v, %v", links, err)
	}
	if d, err := LoadConfig(nil, []string{"EDGECHAT_LINK=us=tcp://h:1,ap=tcp://h:2", "EDGECHAT_LINK_SECRET_FILE=" + secret}); err != nil || len(d.Links) != 2 || d.Region != DefaultRegion {
		t.Fatalf("from the environment: %+v, %v", d.Links, err)
	}
	// The command line's links replace the environment's (flags win), as
	// the environment's replace the file's.
	if d, err := LoadConfig([]string{"--link", "ap=tcp://h:3", "--link-secret-file", secret}, []string{"EDGECHAT_LINK=us=tcp://h:1,ap=tcp://h:2"}); err != nil || len(d.Links) != 1 || d.Links[0] != "ap=tcp://h:3" {
		t.Fatalf("--link over EDGECHAT_LINK: %q, %v", d.Links, err)
	}
	// Certificates instead of a secret file; a wss:// link.
	mtls, err := LoadConfig([]string{"--region", "eu", "--link", "us=wss://chat.us.example.com", "--tls-cert", "s.pem", "--tls-key", "k.pem",
		"--link-ca", "ca.pem", "--link-cert", "c.pem", "--link-key", "ck.pem"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if links, err := mtls.regionLinks(); err != nil || len(links) != 1 || links[0].Secret != "" || links[0].URL != "wss://chat.us.example.com/mqtt" {
		t.Fatalf("links by certificate %+v, %v", links, err)
	}
	for name, args := range map[string][]string{
		"bad region":             {"--region", "e u"},
		"region with @":          {"--region", "e@u"},
		"link without file":      {"--link", "us=tcp://h:1"},
		"link to itself":         {"--region", "us", "--link", "us=tcp://h:1", "--link-secret-file", secret},
		"link twice":             {"--link", "us=tcp://h:1", "--link", "us=tcp://h:2", "--link-secret-file", secret},
		"link bad scheme":        {"--link", "us=http://h:1", "--link-secret-file", secret},
		"link without port":      {"--link", "us=tcp://h", "--link-secret-file", secret},
		"link without name=":     {"--link", "tcp://h:1", "--link-secret-file", secret},
		"link-cert without key":  {"--link-cert", "c.pem"},
		"link-ca without tls":    {"--link-ca", "ca.pem"},
		"link, ca, no cert":      {"--link", "us=tcp://h:1", "--link-ca", "ca.pem", "--tls-cert", "s.pem", "--tls-key", "k.pem"},
		"link wss with userinfo": {"--link", "us=wss://u:p@h/mqtt", "--link-secret-file", secret},
		"region number 16":       {"--region-number", "16"},
		"region number -1":       {"--region-number", "-1"},
	} {
		if _, err := LoadConfig(args, nil); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
}

// The machine number is region number << 6 | the cluster's number; a
// linked or numbered region refuses a cluster number over 63, a single
// region keeps 1..1023 unchanged.
func TestMachineNumberOfRegion(t *testing.T) {
	for _, c := range []struct {
		cfg     Config
		cluster uint16
		want    uint16
		err     bool
	}{
		{Config{}, 1, 1, false},
		{Config{}, 700, 700, false}, // no links: as before
		{Config{RegionNumber: 0, Links: []string{"us=tcp://h:1"}}, 5, 5, false},
		{Config{RegionNumber: 0, Links: []string{"us=tcp://h:1"}}, 64, 0, true},
		{Config{RegionNumber: 3}, 5, 3<<6 | 5, false},
		{Config{RegionNumber: 15}, 63, 1023, false},
		{Config{RegionNumber: 1}, 64, 0, true},
	} {
		got, err := c.cfg.machineNumber(c.cluster)
		if (err != nil) != c.err || got != c.want {
			t.Errorf("region %d links %v cluster %d: %d, %v; want %d (error %v)", c.cfg.RegionNumber, c.cfg.Links, c.cluster, got, err, c.want, c.err)
		}
		if err != nil && !errors.Is(err, ErrConfig) {
			t.Errorf("%v is not ErrConfig", err)
		}
	}
	if cfg, err := LoadConfig([]string{"--region-number", "7"}, nil); err != nil || cfg.RegionNumber != 7 {
		t.Fatalf("--region-number 7: %d, %v", cfg.RegionNumber, err)
	}
}
