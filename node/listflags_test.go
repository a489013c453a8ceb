package node

import (
	"slices"
	"testing"
)

// The list flags (--join, --allowed-origins, --trusted-proxies) given
// more than once add up, as --link, --roles and --http-rate do. Before,
// `--join n1:7946 --join n2:7946` (Consul's and many tools' way) kept only
// the last address, silently: a node whose last listed member was down
// could not join though the first was up, and an origin or proxy listed
// first was refused.
func TestListFlagsGivenTwiceAddUp(t *testing.T) {
	cfg, err := LoadConfig([]string{"--join", "10.0.0.1:7946", "--join", "10.0.0.2:7946,10.0.0.3:7946",
		"--allowed-origins", "https://a.example", "--allowed-origins", "https://b.example",
		"--trusted-proxies", "10.1.0.0/16", "--trusted-proxies", "10.2.0.0/16"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, got := range map[string][]string{"--join": cfg.Join, "--allowed-origins": cfg.AllowedOrigins, "--trusted-proxies": cfg.TrustedProxies} {
		want := map[string][]string{
			"--join":            {"10.0.0.1:7946", "10.0.0.2:7946", "10.0.0.3:7946"},
			"--allowed-origins": {"https://a.example", "https://b.example"},
			"--trusted-proxies": {"10.1.0.0/16", "10.2.0.0/16"},
		}[name]
		if !slices.Equal(got, want) {
			t.Errorf("%s given twice: %q, want %q", name, got, want)
		}
	}
	// A flag still replaces what the environment gave.
	cfg, err = LoadConfig([]string{"--join", "10.0.0.9:7946"}, []string{"EDGECHAT_JOIN=10.0.0.1:7946,10.0.0.2:7946"})
	if err != nil || !slices.Equal(cfg.Join, []string{"10.0.0.9:7946"}) {
		t.Errorf("--join over EDGECHAT_JOIN: %q %v", cfg.Join, err)
	}
}
