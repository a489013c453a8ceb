package node_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node/nodetest"
)

// Three real nodes in one process: accounts, tokens, durable messages and
// history are the same on every node; /cluster/nodes and /cluster/connect
// describe the cluster.
func TestClusterOfThreeSharesEverything(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	aliceTok := n1.NewUser(t, "alice") // created through n1 ...
	n1.NewUser(t, "bob")
	// ... and a token minted by n1 verifies on n3 (keys travel in the log).
	bobTok := n1.Token(t, "bob")
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if st := api(t, n3, bobTok, "GET", "/user/me", nil, nil); st != 200 {
			return fmt.Errorf("n3 /user/me with n1's token: %d", st)
		}
		return nil
	})
	// A durable publish on a follower is acknowledged after the majority commit.
	alice := mustConnectV5(t, n2.MQTTURL, "alice", "phone", aliceTok)
	for i := 0; i < 20; i++ {
		if code := publish(t, alice, "user/bob/newMessage", textMsg(fmt.Sprintf("c%d", i), fmt.Sprintf("m%d", i))); code != 0 {
			t.Fatalf("publish on n2: %#x", code)
		}
	}
	// History is on every node.
	for _, n := range nodes {
		checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			var page historyPage
			if st := api(t, n, bobTok, "GET", "/chat/history?with=alice&limit=100", nil, &page); st != 200 || len(page.Messages) != 20 {
				return fmt.Errorf("%s history: %d, %d messages", n.Config.NodeID, st, len(page.Messages))
			}
			return nil
		})
	}
	// The members and their load.
	var out struct {
		Nodes []struct {
			Name        string `json:"name"`
			Healthy     bool   `json:"healthy"`
			Voter       bool   `json:"voter"`
			Connections int    `json:"connections"`
			MQTT        string `json:"mqtt"`
		} `json:"nodes"`
	}
	if st := api(t, n3, bobTok, "GET", "/cluster/nodes", nil, &out); st != 200 || len(out.Nodes) != 3 {
		t.Fatalf("/cluster/nodes: %d %+v", st, out)
	}
	for _, nv := range out.Nodes {
		if !nv.Healthy || !nv.Voter || nv.MQTT == "" {
			t.Fatalf("node %+v", nv)
		}
		if nv.Name == "n2" && nv.Connections != 1 {
			t.Fatalf("n2 should report alice's connection: %+v", nv)
		}
	}
	var conn struct {
		Node string `json:"node"`
		MQTT string `json:"mqtt"`
	}
	if st := api(t, n1, bobTok, "GET", "/cluster/connect", nil, &conn); st != 200 || conn.Node == "n2" || conn.MQTT == "" {
		t.Fatalf("/cluster/connect should avoid the loaded n2: %d %+v", st, conn)
	}
	// Admin operations are for admins; alice is the first account.
	if st := api(t, n1, bobTok, "GET", "/cluster/status", nil, nil); st != 403 {
		t.Fatalf("status for a user: %d", st)
	}
	var status struct {
		Leader  string `json:"leader"`
		Members []struct {
			Name string `json:"name"`
		} `json:"members"`
	}
	if st := api(t, n1, aliceTok, "GET", "/cluster/status", nil, &status); st != 200 || len(status.Members) != 3 || status.Leader == "" {
		t.Fatalf("status: %d %+v", st, status)
	}
	// n3 leaves gracefully; the others see two members.
	if st := api(t, n3, aliceTok, "POST", "/cluster/leave", nil, nil); st != 200 {
		t.Fatalf("leave: %d", st)
	}
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		api(t, n1, aliceTok, "GET", "/cluster/status", nil, &status)
		if len(status.Members) != 2 {
			return errors.New("n3 still a member")
		}
		return nil
	})
}
