package node_test

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
	"github.com/edgechat/edgechat/services/backup"
)

// TestBackupEndpointAndSchedule: GET /admin/backup is for admins and
// streams state then manifest; --backup-every takes backups on the
// leader into --backup-to, keeps --backup-keep and reports them.
func TestBackupEndpointAndSchedule(t *testing.T) {
	store := t.TempDir()
	n := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) {
		c.BackupEvery, c.BackupTo, c.BackupKeep = time.Second, store, 2
	}))
	root := n.NewUser(t, "root") // the first account is the admin
	bob := n.NewUser(t, "bob")
	get := func(tok, path string) *http.Response {
		req, _ := http.NewRequest(http.MethodGet, n.HTTPURL+path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	for tok, want := range map[string]int{"": http.StatusUnauthorized, bob: http.StatusForbidden} {
		resp := get(tok, "/admin/backup")
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("GET /admin/backup as %q: %d, want %d", tok[:min(len(tok), 8)], resp.StatusCode, want)
		}
	}
	resp := get(root, "/admin/backup")
	defer resp.Body.Close()
	id := resp.Header.Get(backup.HeaderID)
	if resp.StatusCode != http.StatusOK || backup.ValidID(id) != nil || resp.Header.Get("Content-Type") != "application/x-tar" {
		t.Fatalf("GET /admin/backup: %d id %q %v", resp.StatusCode, id, resp.Header)
	}
	var names []string
	tr := tar.NewReader(resp.Body)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
	if strings.Join(names, ",") != "state,manifest.json" {
		t.Fatalf("stream entries %v", names)
	}

	// Scheduled: at least three by now, two kept.
	testutil.CheckFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		v, _ := testutil.MetricValue(t, n.Registry(), "edgechat_backups_total", map[string]string{"kind": "scheduled", "result": "ok"})
		if v < 3 {
			return fmt.Errorf("%v scheduled backups", v)
		}
		return nil
	})
	var st struct {
		Scheduled bool
		Status    backup.Status
	}
	if code := api(t, n, root, http.MethodGet, "/admin/backup/status", nil, &st); code != 200 || !st.Scheduled ||
		st.Status.LastID == "" || st.Status.Overdue || st.Status.Keep != 2 {
		t.Fatalf("status %d %+v", code, st)
	}
	testutil.CheckFor(t, 5*time.Second, 50*time.Millisecond, func() error {
		ds, _ := backup.NewDirStore(store)
		ids, err := ds.IDs(t.Context())
		if err != nil || len(ids) > 3 { // two kept, one maybe being written
			return fmt.Errorf("store holds %v (%v)", ids, err)
		}
		return nil
	})
	if last, ok := n.Backup.Scheduler().LastBackup(); !ok || time.Since(last) > 10*time.Second {
		t.Fatalf("LastBackup %v %v", last, ok)
	}
}

func TestBackupConfig(t *testing.T) {
	for name, tc := range map[string]struct {
		args []string
		msg  string
	}{
		"every without to":   {[]string{"--backup-every", "1h"}, "--backup-every needs --backup-to"},
		"to without every":   {[]string{"--backup-to", "/b"}, "--backup-to needs --backup-every"},
		"too often":          {[]string{"--backup-every", "10ms", "--backup-to", "/b"}, "want at least 1s"},
		"keep 0":             {[]string{"--backup-keep", "0"}, "want a number >= 1"},
		"s3 without ep":      {[]string{"--backup-every", "1h", "--backup-to", "s3://b/p"}, "needs --s3-endpoint"},
		"other scheme":       {[]string{"--backup-every", "1h", "--backup-to", "gs://b"}, "want a directory or s3://"},
		"ep with local only": {[]string{"--s3-endpoint", "minio:9000"}, "--s3-endpoint needs --media-store s3"},
	} {
		_, err := node.LoadConfig(tc.args, nil)
		if !errors.Is(err, node.ErrConfig) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v, want %q", name, err, tc.msg)
		}
	}
	cfg, err := node.LoadConfig([]string{"--backup-every", "6h", "--backup-to", "s3://b/edge", "--s3-endpoint", "minio:9000"}, []string{"EDGECHAT_BACKUP_KEEP=3"})
	if err != nil || cfg.BackupEvery != 6*time.Hour || cfg.BackupKeep != 3 || cfg.BackupS3().Endpoint != "minio:9000" {
		t.Fatalf("%+v %v", cfg, err)
	}
}
