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
	for name, args := range map[string][]string{
		"bad region":         {"--region", "e u"},
		"region with @":      {"--region", "e@u"},
		"link without file":  {"--link", "us=tcp://h:1"},
		"link to itself":     {"--region", "us", "--link", "us=tcp://h:1", "--link-secret-file", secret},
		"link twice":         {"--link", "us=tcp://h:1", "--link", "us=tcp://h:2", "--link-secret-file", secret},
		"link bad scheme":    {"--link", "us=http://h:1", "--link-secret-file", secret},
		"link without port":  {"--link", "us=tcp://h", "--link-secret-file", secret},
		"link without name=": {"--link", "tcp://h:1", "--link-secret-file", secret},
	} {
		if _, err := LoadConfig(args, nil); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
}
