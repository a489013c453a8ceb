package node_test

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// With the local media store only the node that received an upload
// processes it, so a node without the media role (--roles none, "keep
// processing off small edge boxes") accepted uploads that stayed
// "processing" for good: its users never got mediaReady, could never
// send them, and the sweeper never removed them. Such a node is refused
// at start, naming what to change.
func TestANodeWithoutTheMediaRoleNeedsASharedStore(t *testing.T) {
	cfg := nodetest.TestConfig(t)
	cfg.Roles = []string{}
	cfg.MediaStore = node.MediaStoreLocal
	n, err := nodetest.Start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil {
		t.Cleanup(func() { n.Stop() })
		alice := newMediaUser(t, n, "alice")
		id := upload(t, n, alice.token, "p.jpg", "image/jpeg", jpegWithGPS(t, 64, 32))
		time.Sleep(5 * time.Second) // what is checked is that nothing happens
		var info struct{ Status string }
		if st := api(t, n, alice.token, "GET", "/media/"+id+"/info", nil, &info); st != 200 {
			t.Fatalf("info: %d", st)
		}
		b, _ := json.Marshal(info)
		t.Fatalf("a node with the local store and no media role started, took an upload and left it %s 5 s later", b)
	}
	if !errors.Is(err, node.ErrConfig) {
		t.Fatalf("start: %v, want ErrConfig", err)
	}
	t.Log(err)
}
