package node_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// A node reads a media file another node holds (--media-store local)
// from that node's HTTP API where it listens, not at its public URL:
// the public URL is for clients, and the members may not reach it (the
// compose file advertises localhost:1808N, which inside a container is
// the container itself; a node bound to every interface without
// --advertise-ws called 127.0.0.1, itself). Here every node advertises
// a public URL nothing answers at: before, a read through the node that
// does not hold the file failed (503) for as long as it was asked.
func TestMediaReadThroughAnotherNodeDoesNotUseItsPublicURL(t *testing.T) {
	nodes := nodetest.StartCluster(t, 2, nodetest.WithConfig(func(c *node.Config) {
		c.AdvertiseWS = "ws://127.0.0.1:1/mqtt" // a public URL the members cannot reach
	}))
	alice, id, holder, through := pictureOnOneNode(t, nodes)
	testutil.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if st, _, body := get(t, through, alice.token, "/media/"+id+"/preview", nil); st != 200 {
			return fmt.Errorf("through %s (the file is on %s): %d %s", through.Config.NodeID, holder.Config.NodeID, st, body)
		}
		return nil
	})
}
