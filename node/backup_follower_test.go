package node_test

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node/nodetest"
)

// With local archive stores, a node that installed a snapshot (a new
// member, one that fell behind) has the segment index but not the
// files: it copies a segment from a peer when a read needs it. A backup
// taken from that node (any node may serve GET /admin/backup; the
// scheduled one runs on whichever node leads) must hold the segments
// too, not fail (before, it read only its own directory and failed).
func TestBackupFromANodeWithoutSegmentFilesCopiesThemFromPeers(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	f := writeTieringHistory(t, nodes[0])
	for _, n := range nodes {
		checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
			if fmt.Sprint(f.reads(t, n)) != fmt.Sprint(f.reads(t, nodes[0])) {
				return fmt.Errorf("%s behind", n.Config.NodeID)
			}
			return nil
		})
	}
	sealAll(t, nodes, f)
	lost := nodes[2]
	for _, d := range []string{"d", "g"} {
		if err := os.RemoveAll(filepath.Join(lost.Config.DataDir, "archive", d)); err != nil {
			t.Fatal(err)
		}
	}
	if _, last := streamBackupFrom(t, lost, f.tokens["alice"]); last != "manifest.json" {
		t.Fatalf("stream ended with %q", last)
	}
}

// streamBackupFrom takes a streamed backup (GET /admin/backup) from n as
// the admin token holder and reads it through: it answers the segment
// files the stream held and its last entry's name (manifest.json for a
// whole backup), and fails the test on a stream that reports an error.
func streamBackupFrom(t *testing.T, n *nodetest.Node, token string) (segs int, last string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, n.HTTPURL+"/admin/backup", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /admin/backup: %d %s", resp.StatusCode, b)
	}
	tr := tar.NewReader(resp.Body)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return segs, last
		}
		if err != nil {
			t.Fatal(err)
		}
		last = h.Name
		if h.Name == "error" {
			b, _ := io.ReadAll(tr)
			t.Fatalf("the backup from %s failed after %d segments: %s", n.Config.NodeID, segs, b)
		}
		if strings.HasPrefix(h.Name, "segments/") {
			segs++
		}
	}
}
