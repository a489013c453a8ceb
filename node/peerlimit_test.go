package node_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// With the local media store, a node that does not hold a media file
// fetches it from the node that does, over that node's HTTP API. The
// holder's gateway took those fetches for one client's requests: every
// user reading through the other node shared the per-IP bucket of that
// node's address there (50/s, burst 100), so a popular image in a group,
// read through another node by members well within their own limits,
// was refused 429 to many of them. The user is charged on the node they
// ask; a member's own request, from its address and naming it, is not
// limited again.
func TestMediaReadsThroughAnotherNodeAreNotThrottledAsOneClient(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3, nodetest.WithConfig(func(c *node.Config) {
		c.NoRateLimits = false                      // the production limits
		c.TrustedProxies = []string{"127.0.0.1/32"} // a load balancer on loopback: each reader its own address
	}))
	alice, id, holder, through := pictureOnOneNode(t, nodes)
	testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if !node.KnowsMemberAddr(holder.Node, "127.0.0.1", through.Config.NodeID) {
			return fmt.Errorf("%s does not know %s's address yet", holder.Config.NodeID, through.Config.NodeID)
		}
		return nil
	})
	const readers, reads = 8, 30 // each reader within its read burst (40) and its address's (100)
	members := make([]string, readers)
	toks := make([]string, readers)
	for i := range readers {
		members[i] = fmt.Sprintf("reader%d", i)
		toks[i] = nodes[0].NewUser(t, members[i])
	}
	var g struct {
		GroupID string `json:"groupId"`
	}
	if st := api(t, nodes[0], alice.token, "POST", "/user/groups", map[string]any{"name": "fans", "members": members}, &g); st != 201 {
		t.Fatalf("create group: %d", st)
	}
	if code, _ := alice.c.Pub(t, "group/"+g.GroupID+"/newMessage", 1, fmt.Sprintf(`{"cid":"p1","type":"media","media":{"id":%q}}`, id)); code != 0 {
		t.Fatalf("PUBACK %#x", code)
	}
	addr := func(i int) map[string]string {
		return map[string]string{"X-Forwarded-For": fmt.Sprintf("203.0.113.%d", i+1)}
	}
	testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if st, _, _ := get(t, through, toks[0], "/media/"+id+"/preview", addr(0)); st != 200 {
			return fmt.Errorf("%s answered %d", through.Config.NodeID, st) // the grant not applied there yet
		}
		return nil
	})
	counts := map[int]int{}
	for i, tok := range toks {
		for range reads {
			st, _, _ := get(t, through, tok, "/media/"+id+"/preview", addr(i))
			counts[st]++
		}
	}
	if counts[200] != readers*reads {
		t.Errorf("statuses of %d reads through %s (the file is on %s): %v, want all 200", readers*reads, through.Config.NodeID, holder.Config.NodeID, counts)
	}
}

// The header that marks a member's own request does not let a client
// past the limits: through a load balancer (X-Forwarded-For) it names a
// member in vain, even from the loopback address every test node has.
// (A client connecting from a member's own address, as every client of
// these tests does, is taken for that member: the rule is by address;
// services/gateway's tests show a client at another address limited.)
func TestForgedPeerHeaderDoesNotSkipRateLimits(t *testing.T) {
	loaded, err := node.LoadConfig([]string{"--http-rate", "read=0.001/3,all=0.001/5"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	n := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) {
		c.NoRateLimits = false
		c.HTTPRate = loaded.HTTPRate
		c.TrustedProxies = []string{"127.0.0.1/32"}
	}))
	testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if !node.KnowsMemberAddr(n.Node, "127.0.0.1", n.Config.NodeID) {
			return fmt.Errorf("%s does not know its own address yet", n.Config.NodeID)
		}
		return nil
	})
	tok := n.NewUser(t, "mallory")
	forged := func(ip string) map[string]string {
		return map[string]string{"X-Edgechat-Peer": n.Config.NodeID, "X-Forwarded-For": ip}
	}
	var got []int
	for range 4 { // the read class: 3, per user
		st, _, _ := get(t, n, tok, "/user/me", forged("203.0.113.1"))
		got = append(got, st)
	}
	for i := range 6 { // the per-IP bucket: 5, another user each time
		st, _, _ := get(t, n, n.NewUser(t, fmt.Sprintf("mallory%d", i)), "/user/me", forged("203.0.113.2"))
		got = append(got, st)
	}
	if want := []int{200, 200, 200, 429, 200, 200, 200, 200, 200, 429}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("statuses %v, want %v", got, want)
	}
}

// A download of a media another node holds, with as many header fields
// as a request may have (100), is served as it is on the holder. The node
// passes the client's request on with fields of its own (the request ID,
// the hop and peer marks), and the holder's gateway counted those against
// the client's limit: 431 headers_too_large for a request the node the
// client asked had accepted.
func TestProxiedMediaReadWithHundredHeaderFieldsIsServed(t *testing.T) {
	nodes := nodetest.StartCluster(t, 2)
	alice, id, holder, through := pictureOnOneNode(t, nodes)
	testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if !node.KnowsMemberAddr(holder.Node, "127.0.0.1", through.Config.NodeID) {
			return fmt.Errorf("%s does not know %s's address yet", holder.Config.NodeID, through.Config.NodeID)
		}
		if st, _, _ := get(t, through, alice.token, "/media/"+id+"/preview", nil); st != 200 {
			return fmt.Errorf("%s answered %d", through.Config.NodeID, st)
		}
		return nil
	})
	hdr := map[string]string{}
	for i := range 97 { // and Authorization, User-Agent, Accept-Encoding (net/http)
		hdr[fmt.Sprintf("X-F%d", i)] = "v"
	}
	for _, n := range []*nodetest.Node{holder, through} {
		if st, _, body := get(t, n, alice.token, "/media/"+id+"/preview", hdr); st != 200 {
			t.Errorf("100 header fields, through %s (the file is on %s): %d %s, want 200", n.Config.NodeID, holder.Config.NodeID, st, body)
		}
	}
}

// pictureOnOneNode: alice (signed in to nodes[0]) uploads a picture,
// processed and kept by one node (--media-store local), the holder;
// through is another node, which does not hold it.
func pictureOnOneNode(t *testing.T, nodes []*nodetest.Node) (alice *mediaUser, id string, holder, through *nodetest.Node) {
	t.Helper()
	alice = newMediaUser(t, nodes[0], "alice")
	id = upload(t, nodes[0], alice.token, "pic.png", "image/png", pngBytes(t, halves(50, 30)))
	if ev := alice.outcome(t, id); ev.Type != "mediaReady" {
		t.Fatalf("%+v", ev)
	}
	rec, err := nodes[0].Media.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if n.Config.NodeID == rec.Node {
			holder = n
		} else {
			through = n
		}
	}
	if holder == nil {
		t.Fatalf("no node is %s, which holds %s", rec.Node, id)
	}
	return alice, id, holder, through
}
