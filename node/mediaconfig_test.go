package node

import (
	"errors"
	"testing"
	"time"
)

func TestMediaSettings(t *testing.T) {
	c, err := LoadConfig([]string{"--roles", "none", "--media-store", "s3", "--s3-endpoint", "127.0.0.1:9000",
		"--media-max-size", "1000", "--media-job-lease", "3s"}, []string{"EDGECHAT_MEDIA_COLD_AFTER=48h"})
	if err != nil {
		t.Fatal(err)
	}
	if c.HasRole(RoleMedia) || c.MediaStore != MediaStoreS3 || c.MediaMaxSize != 1000 || c.MediaColdAfter.Hours() != 48 ||
		c.MediaJobLease != 3*time.Second {
		t.Fatalf("%+v", c)
	}
	if d, _ := LoadConfig(nil, nil); !d.HasRole(RoleMedia) || d.MediaJobLease != 2*time.Minute {
		t.Fatalf("defaults: roles %v, job lease %v; want every role and 2m", d.Roles, d.MediaJobLease)
	}
	for name, args := range map[string][]string{
		"unknown role":         {"--roles", "media,coffee"},
		"no media role, local": {"--roles", "none"},
		"unknown store":        {"--media-store", "ftp"},
		"s3 without endpoint":  {"--media-store", "s3"},
		"endpoint without s3":  {"--s3-endpoint", "x:1"},
		"half the keys":        {"--media-store", "s3", "--s3-endpoint", "x:1", "--s3-access-key", "a"},
		"zero max size":        {"--media-max-size", "0"},
		"tiny dimension":       {"--media-max-dimension", "10"},
		"cold too soon":        {"--media-cold-after", "5m"},
		"bad clamd":            {"--clamd-addr", "localhost:3310"},
		"bad public endpoint":  {"--media-public-endpoint", "cdn.example"},
		"negative quota":       {"--media-quota-count", "-1"},
		"quota not a number":   {"--media-quota-bytes", "lots"},
		"lease too short":      {"--media-job-lease", "500ms"},
		"lease too long":       {"--media-job-lease", "2h"},
		"lease negative":       {"--media-job-lease", "-1s"}, // 0 is the default (TestZeroMeansTheDefaultInEverySource)
	} {
		if _, err := LoadConfig(args, nil); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
}
