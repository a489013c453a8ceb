package node

import (
	"errors"
	"testing"
)

func TestMediaSettings(t *testing.T) {
	c, err := LoadConfig([]string{"--roles", "none", "--media-store", "s3", "--s3-endpoint", "127.0.0.1:9000",
		"--media-max-size", "1000"}, []string{"EDGECHAT_MEDIA_COLD_AFTER=48h"})
	if err != nil {
		t.Fatal(err)
	}
	if c.HasRole(RoleMedia) || c.MediaStore != MediaStoreS3 || c.MediaMaxSize != 1000 || c.MediaColdAfter.Hours() != 48 {
		t.Fatalf("%+v", c)
	}
	if d, _ := LoadConfig(nil, nil); !d.HasRole(RoleMedia) {
		t.Fatal("a node takes every role by default")
	}
	for name, args := range map[string][]string{
		"unknown role":        {"--roles", "media,coffee"},
		"unknown store":       {"--media-store", "ftp"},
		"s3 without endpoint": {"--media-store", "s3"},
		"endpoint without s3": {"--s3-endpoint", "x:1"},
		"half the keys":       {"--media-store", "s3", "--s3-endpoint", "x:1", "--s3-access-key", "a"},
		"zero max size":       {"--media-max-size", "0"},
		"tiny dimension":      {"--media-max-dimension", "10"},
		"cold too soon":       {"--media-cold-after", "5m"},
		"bad clamd":           {"--clamd-addr", "localhost:3310"},
		"bad public endpoint": {"--media-public-endpoint", "cdn.example"},
		"negative quota":      {"--media-quota-count", "-1"},
		"quota not a number":  {"--media-quota-bytes", "lots"},
	} {
		if _, err := LoadConfig(args, nil); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
}
