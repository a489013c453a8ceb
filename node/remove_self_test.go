package node_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node/nodetest"
)

// `edgechat cluster remove NODE` sent to NODE itself (--server of the
// node to take out, a natural choice) removes it as a leave does, and
// answers so. Before, the node asked the leader to remove it, then tried
// to drop its own routes and client registry entries through a cluster it
// was no longer in: 503 'drop routes of n3: ... no leader' after the
// removal had committed, and every retry against it 503 again ('remove
// n3: no leader'), where operations.md says to retry until done or "no
// such member"; its routes stayed until a removal was sent to another
// member.
func TestRemovingANodeThroughItselfIsALeave(t *testing.T) {
	for _, leader := range []bool{false, true} {
		t.Run(fmt.Sprintf("leader=%v", leader), func(t *testing.T) {
			nodes := nodetest.StartCluster(t, 3)
			root := nodes[0].NewUser(t, "root")
			aliceTok := nodes[0].NewUser(t, "alice")
			var self, other *nodetest.Node
			for _, n := range nodes {
				if n.IsLeader() == leader && self == nil {
					self = n
				} else if other == nil {
					other = n
				}
			}
			name := self.Config.NodeID
			alice := mustConnectV5(t, self.MQTTURL, "alice", "phone", aliceTok)
			alice.Sub(t, "user/alice/#")
			var out map[string]any
			if st := api(t, self, root, "DELETE", "/cluster/nodes/"+name, nil, &out); st != http.StatusNoContent {
				t.Fatalf("DELETE /cluster/nodes/%s on %s itself: %d %v, want 204", name, name, st, out)
			}
			checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
				var st struct {
					Members []struct{ Name string } `json:"members"`
				}
				api(t, other, root, "GET", "/cluster/status", nil, &st)
				for _, m := range st.Members {
					if m.Name == name {
						return fmt.Errorf("%s is still a member in %s's view", name, other.Config.NodeID)
					}
				}
				if f := other.Broker.RouteTable().Filters(name); len(f) > 0 {
					return fmt.Errorf("%s's routes are left on %s: %v", name, other.Config.NodeID, f)
				}
				if _, ok := alice.ServerDisconnect(); !ok {
					return fmt.Errorf("alice is still connected to %s", name)
				}
				return nil
			})
		})
	}
}
