package node

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// link_retention and link_backlog_warn from the YAML file were taken
// whatever their value: 0 or a negative duration silently became the
// defaults (168h, 10m), so "link_retention: 0s" meant to keep messages
// for another region for ever dropped them after a week. The flags
// refuse such values; the file now does too, naming the setting.
func TestLinkDurationsFromTheFileAreChecked(t *testing.T) {
	for _, line := range []string{"link_retention: 0s", "link_retention: -1h", "link_backlog_warn: 0s", "link_backlog_warn: -5m"} {
		p := filepath.Join(t.TempDir(), "edgechat.yaml")
		if err := os.WriteFile(p, []byte(line+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadConfig([]string{"--config", p}, nil); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: err %v, want ErrConfig", line, err)
		}
	}
	for _, env := range []string{"EDGECHAT_LINK_RETENTION=0s", "EDGECHAT_LINK_BACKLOG_WARN=-1s"} {
		if _, err := LoadConfig(nil, []string{env}); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: err %v, want ErrConfig", env, err)
		}
	}
	if _, err := LoadConfig(nil, []string{"EDGECHAT_LINK_RETENTION=720h", "EDGECHAT_LINK_BACKLOG_WARN=1m"}); err != nil {
		t.Fatal(err)
	}
}
