package node_test

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A member restarted on its data directory at another cluster address
// (another port or IP: a rescheduled container, a new DHCP lease) without
// --join keeps its Raft state, whose configuration names it at its old
// address. The other members went on sending it the log and heartbeats
// there, so it never heard a leader: unready for good (or, when it won an
// election itself, cut off again at the next leader change), though its
// configuration names every member it could ask. It now asks them, as a
// restart with --join does, and the leader updates its address.
func TestAMemberRestartedAtAnotherAddressWithoutJoinIsUpdated(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	n1, n3 := nodes[0], nodes[2]
	root := n1.NewUser(t, "root")
	dir, old := n3.Config.DataDir, n3.ClusterAddr()
	if err := n3.Stop(); err != nil {
		t.Fatal(err)
	}
	cfg := nodetest.TestConfig(t)
	cfg.NodeID, cfg.DataDir = "n3", dir // cluster address 127.0.0.1:0: another port; no Join
	back, err := nodetest.Start(cfg, nil)
	if err != nil {
		t.Fatalf("n3 restarted at another address without --join: %v", err)
	}
	t.Cleanup(func() { _ = back.Stop() })
	if back.ClusterAddr() == old {
		t.Fatalf("n3 came back at its old address %s", old)
	}
	nodetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		var views struct {
			Nodes []struct {
				Name        string `json:"name"`
				ClusterAddr string `json:"clusterAddr"`
			} `json:"nodes"`
		}
		if st := api(t, n1, root, "GET", "/cluster/nodes", nil, &views); st != http.StatusOK {
			return fmt.Errorf("/cluster/nodes: %d", st)
		}
		for _, v := range views.Nodes {
			if v.Name == "n3" && v.ClusterAddr != back.ClusterAddr() {
				return fmt.Errorf("n3 listed at %s, it listens at %s", v.ClusterAddr, back.ClusterAddr())
			}
			if v.Name == "n3" {
				return nil
			}
		}
		return fmt.Errorf("n3 not listed: %+v", views.Nodes)
	})
	// It takes writes (forwarded to the leader, applied from its log).
	if err := back.CreateAccount(t.Context(), "after-move", ""); err != nil {
		t.Fatalf("an account through n3: %v", err)
	}
}

// The same member removed while it was away (`edgechat cluster remove`)
// stays out: its request only updates a member's address, never adds one,
// and it says in its log how to come back.
func TestAMemberRemovedWhileAwayRestartedElsewhereStaysOut(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	n1, n3 := nodes[0], nodes[2]
	root := n1.NewUser(t, "root")
	dir := n3.Config.DataDir
	if err := n3.Stop(); err != nil {
		t.Fatal(err)
	}
	nodetest.CheckFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		if st := api(t, n1, root, "DELETE", "/cluster/nodes/n3", nil, nil); st/100 != 2 {
			return fmt.Errorf("removal: %d", st)
		}
		return nil
	})
	cfg := nodetest.TestConfig(t)
	cfg.NodeID, cfg.DataDir = "n3", dir
	_, logs := runLogged(t, cfg)
	nodetest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(logs.String(), "removed from its cluster while it was away") {
			return errors.New("no line saying it was removed")
		}
		return nil
	})
	var views struct {
		Nodes []struct {
			Name string `json:"name"`
		} `json:"nodes"`
	}
	if st := api(t, n1, root, "GET", "/cluster/nodes", nil, &views); st != http.StatusOK {
		t.Fatalf("/cluster/nodes: %d", st)
	}
	for _, v := range views.Nodes {
		if v.Name == "n3" {
			t.Fatalf("the removed n3 is a member again: %+v", views.Nodes)
		}
	}
}
