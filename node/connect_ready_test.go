package node_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A node that is not ready (here: cut off from its quorum, so /readyz
// answers 503) does not call itself healthy in /cluster/nodes, and
// /cluster/connect does not send clients to it. The web page asks its
// own origin first and stays where a 200 points: a node in a minority
// that named itself kept the page on a node that could not commit.
func TestClusterConnectSkipsAnUnreadyNode(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	n1 := nodes[0]
	n1.NewUser(t, "alice")
	tok := n1.Token(t, "alice")
	for _, n := range nodes[1:] {
		if err := n.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	checkFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		if st := api(t, n1, "", "GET", "/readyz", nil, nil); st != http.StatusServiceUnavailable {
			return fmt.Errorf("/readyz on a node without a quorum: %d", st)
		}
		return nil
	})
	var out struct {
		Nodes []struct {
			Name    string `json:"name"`
			Healthy bool   `json:"healthy"`
			Ready   bool   `json:"ready"`
		} `json:"nodes"`
	}
	if st := api(t, n1, tok, "GET", "/cluster/nodes", nil, &out); st != 200 || len(out.Nodes) != 3 {
		t.Fatalf("/cluster/nodes: %d %+v", st, out)
	}
	for _, nv := range out.Nodes {
		if nv.Healthy || nv.Ready {
			t.Errorf("/cluster/nodes while /readyz says 503: %+v", nv)
		}
	}
	var conn map[string]any
	if st := api(t, n1, tok, "GET", "/cluster/connect", nil, &conn); st != http.StatusServiceUnavailable {
		t.Fatalf("/cluster/connect on a node without a quorum: %d %v, want 503", st, conn)
	}
}
