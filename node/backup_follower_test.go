package node_test

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
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
	req, _ := http.NewRequest(http.MethodGet, lost.HTTPURL+"/admin/backup", nil)
	req.Header.Set("Authorization", "Bearer "+f.tokens["alice"])
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
	var last string
	segs := 0
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		last = h.Name
		if h.Name == "error" {
			b, _ := io.ReadAll(tr)
			t.Fatalf("the backup from %s failed after %d segments: %s", lost.Config.NodeID, segs, b)
		}
		if len(h.Name) > 9 && h.Name[:9] == "segments/" {
			segs++
		}
	}
	if last != "manifest.json" {
		t.Fatalf("stream ended with %q", last)
	}
}
