package node_test

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

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
		if code, _ := alice.Pub(t, "user/bob/newMessage", 1, textMsg(fmt.Sprintf("c%d", i), fmt.Sprintf("m%d", i))); code != 0 {
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

// Clients on different nodes talk live: direct messages, group messages,
// typing and presence cross nodes once each, in per-sender order.
func TestCrossNodeDelivery(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	aliceTok, bobTok, carolTok := n1.NewUser(t, "alice"), n1.NewUser(t, "bob"), n1.NewUser(t, "carol")
	bob := mustConnectV5(t, n3.MQTTURL, "bob", "phone", bobTok)
	bob.Sub(t, "user/bob/#")
	carol := mustConnectV5(t, n2.MQTTURL, "carol", "phone", carolTok)
	alice := mustConnectV5(t, n1.MQTTURL, "alice", "laptop", aliceTok)
	// No waiting for routes: a SUBACK means this node's route is
	// committed, and alice's messages are committed after it.
	const count = 100
	for i := 0; i < count; i++ {
		if code, _ := alice.Pub(t, "user/bob/newMessage", 1, textMsg(fmt.Sprintf("x%d", i), fmt.Sprintf("%d", i))); code != 0 {
			t.Fatalf("publish %d: %#x", i, code)
		}
	}
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if got := len(bob.Received("user/bob/newMessage")); got != count {
			return fmt.Errorf("bob on n3 got %d of %d", got, count)
		}
		return nil
	})
	for i, m := range bob.Received("user/bob/newMessage") {
		e := decodeEnvelope(t, m.Payload)
		if e.Body != fmt.Sprint(i) || e.From != "alice" || m.Properties.User.Get("id") != e.ID {
			t.Fatalf("message %d on n3: %+v", i, e)
		}
	}
	// Typing crosses nodes too.
	alice.Pub(t, "user/bob/typing", 1, `{"state":"typing"}`)
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if len(bob.Received("user/bob/typing")) == 0 {
			return errors.New("typing not forwarded")
		}
		return nil
	})
	// A group with members on all three nodes.
	g := createGroup(t, n1, aliceTok, "spread", "bob", "carol")
	topic := "group/" + g.GroupID + "/newMessage"
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		// Membership is replicated: every node must know it before the subscribe.
		for _, n := range nodes {
			if st := api(t, n, carolTok, "GET", "/user/groups/"+g.GroupID, nil, nil); st != 200 {
				return fmt.Errorf("%s does not know the group yet", n.Config.NodeID)
			}
		}
		return nil
	})
	carol.Sub(t, topic)
	bob.Sub(t, topic)
	if code, _ := alice.Pub(t, topic, 1, textMsg("g1", "hello all")); code != 0 {
		t.Fatalf("group publish: %#x", code)
	}
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if len(carol.Received(topic)) != 1 || len(bob.Received(topic)) != 1 {
			return fmt.Errorf("carol %d, bob %d", len(carol.Received(topic)), len(bob.Received(topic)))
		}
		return nil
	})
	// Presence published by n1 (alice's node) is retained on every node:
	// bob, on n3, gets alice's retained status when he subscribes there.
	if r := bob.Sub(t, "presence/alice"); r[0] > 2 {
		t.Fatalf("bob may not watch alice: %#x", r[0])
	}
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		for _, m := range bob.Received("presence/alice") {
			var p struct{ Status string }
			// alice sends no heartbeats, so by now she may be inactive or
			// offline; what matters is that n1's retained status is on n3.
			if jsonUnmarshal(m.Payload, &p) == nil && m.Retain && p.Status != "" {
				return nil
			}
		}
		return errors.New("no retained status for alice on n3")
	})
	// n3 leaves: its routes go from every node's table.
	if st := api(t, n3, aliceTok, "POST", "/cluster/leave", nil, nil); st != 200 {
		t.Fatalf("n3 leave: %d", st)
	}
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		for _, n := range nodes[:2] {
			for _, node := range n.Broker.RouteTable().Nodes() {
				if node == "n3" {
					return fmt.Errorf("%s still routes to n3", n.Config.NodeID)
				}
			}
		}
		return nil
	})
}

// The catch-up reads (sync, conversations, a conversation's newest page)
// come after a read barrier: on a follower they hold what the cluster
// committed, and a node cut off from its leader answers 503 rather than
// a page that may lack messages acknowledged elsewhere (a client retries;
// their live deliveries may have gone out before it subscribed).
func TestCatchUpReadsWaitForTheCluster(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	aliceTok, bobTok := n1.NewUser(t, "alice"), n1.NewUser(t, "bob")
	alice := mustConnectV5(t, n1.MQTTURL, "alice", "laptop", aliceTok)
	if code, _ := alice.Pub(t, "user/bob/newMessage", 1, textMsg("s1", "synced")); code != 0 {
		t.Fatalf("publish: %#x", code)
	}
	var page struct{ Messages []envelope }
	for _, n := range nodes {
		if st := api(t, n, bobTok, "GET", "/chat/sync", nil, &page); st != 200 || len(page.Messages) != 1 || page.Messages[0].Body != "synced" {
			t.Fatalf("sync on %s: %d %+v", n.Config.NodeID, st, page.Messages)
		}
	}
	var convs struct {
		Conversations []struct{ Peer string }
	}
	if st := api(t, n2, bobTok, "GET", "/chat/conversations", nil, &convs); st != 200 || len(convs.Conversations) != 1 || convs.Conversations[0].Peer != "alice" {
		t.Fatalf("conversations on n2: %d %+v", st, convs)
	}
	_ = alice.Disconnect(&paho.Disconnect{})
	for _, n := range []*nodetest.Node{n1, n2} {
		if err := n.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	for _, path := range []string{"/chat/sync", "/chat/conversations", "/chat/history?with=alice"} {
		if st := api(t, n3, bobTok, "GET", path, nil, nil); st != http.StatusServiceUnavailable {
			t.Fatalf("%s on a node without a quorum: %d, want 503", path, st)
		}
	}
	// An older page holds nothing new: it is served.
	if st := api(t, n3, bobTok, "GET", "/chat/history?with=alice&before="+page.Messages[0].ID, nil, nil); st != 200 {
		t.Fatalf("an older history page on a node without a quorum: %d", st)
	}
	// A presence this node would refuse may have been allowed through
	// another node a moment ago (a contact made): it cannot tell.
	if st := api(t, n3, bobTok, "GET", "/presence/carol", nil, nil); st != http.StatusServiceUnavailable {
		t.Fatalf("a presence refused on a node without a quorum: %d, want 503", st)
	}
}
