package presence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/edgechat/edgechat/cluster"
	"github.com/edgechat/edgechat/internal/peerrpc"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
)

// fakeNet is a cluster of presence services in one process: calls go
// straight to the named node's methods; every node's retained presence
// is one shared store, as the broker copies it to every node.
type fakeNet struct {
	mu       sync.Mutex
	members  []cluster.Member
	changed  chan struct{}
	methods  map[string]peerrpc.Methods
	retained map[string][]byte
	pubs     []string        // "uid:status", every node's, in order
	down     map[string]bool // members reported down (cluster.Member.Down)
	cut      map[string]bool // nodes no call reaches or leaves
}

func newFakeNet(names ...string) *fakeNet {
	n := &fakeNet{changed: make(chan struct{}), methods: map[string]peerrpc.Methods{}, retained: map[string][]byte{}}
	for _, name := range names {
		n.members = append(n.members, cluster.Member{Name: name, Addr: name})
	}
	return n
}

func (n *fakeNet) setMembers(names ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.members = nil
	for _, name := range names {
		n.members = append(n.members, cluster.Member{Name: name, Addr: name})
	}
	close(n.changed)
	n.changed = make(chan struct{})
}

func (n *fakeNet) published() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.pubs)
}

func (n *fakeNet) Retained(topic string) ([]byte, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	p, ok := n.retained[topic]
	return p, ok
}

func (n *fakeNet) EachRetained(fn func(topic string, payload []byte)) {
	n.mu.Lock()
	m := make(map[string][]byte, len(n.retained))
	for k, v := range n.retained {
		m[k] = v
	}
	n.mu.Unlock()
	for k, v := range m {
		fn(k, v)
	}
}

func (n *fakeNet) Publish(o wire.Outbound) error {
	var p wire.Presence
	if err := json.Unmarshal(o.Payload, &p); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.retained[o.Topic] = o.Payload
	n.pubs = append(n.pubs, o.Topic[len("presence/"):]+":"+p.Status)
	return nil
}

// node is the Cluster of one member of n.
type fakeNode struct {
	n    *fakeNet
	self string
}

func (c fakeNode) Self() string { return c.self }
func (c fakeNode) Members() []cluster.Member {
	c.n.mu.Lock()
	defer c.n.mu.Unlock()
	ms := slices.Clone(c.n.members)
	for i := range ms {
		ms[i].Down = c.n.down[ms[i].Name]
	}
	return ms
}
func (c fakeNode) MembersChanged() <-chan struct{} {
	c.n.mu.Lock()
	defer c.n.mu.Unlock()
	return c.n.changed
}
func (c fakeNode) RegisterRPC(name string, m peerrpc.Methods) error {
	c.n.mu.Lock()
	defer c.n.mu.Unlock()
	c.n.methods[c.self] = m
	return nil
}
func (c fakeNode) Call(ctx context.Context, addr, method string, req, resp any) error {
	c.n.mu.Lock()
	ms := c.n.methods[addr]
	cut := c.n.cut[c.self] || c.n.cut[addr]
	c.n.mu.Unlock()
	if cut {
		return errors.New("cut off")
	}
	h := ms[method[len(RPCService)+1:]]
	if h == nil {
		return errors.New("no such node or method")
	}
	in, err := json.Marshal(req)
	if err != nil {
		return err
	}
	run, err := h(func(v any) error { return json.Unmarshal(in, v) })
	if err != nil {
		return err
	}
	out, err := run()
	if err != nil {
		return err
	}
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, resp)
}

// startFakeCluster starts the presence services of n1, n2 and n3 on one
// fake network and clock.
func startFakeCluster(t *testing.T) (*fakeNet, testClock, map[string]*Service) {
	t.Helper()
	net := newFakeNet("n1", "n2", "n3")
	clk := newTestClock()
	svc := map[string]*Service{}
	for _, name := range []string{"n1", "n2", "n3"} {
		s, err := New(Config{Interval: interval, Grace: grace}, Deps{
			Publisher: net, Logger: testutil.QuietLogger(), Clock: clk,
			Cluster: fakeNode{net, name}, Retained: net,
		})
		if err != nil {
			t.Fatal(err)
		}
		svc[name] = s
		t.Cleanup(func() { s.cl.queues.Close(); s.cl.queues.Wait() })
	}
	return net, clk, svc
}

// userHomedOn is a user whose home among n1, n2 and n3 is home.
func userHomedOn(home string) string {
	for i := 0; ; i++ {
		if u := fmt.Sprintf("user%d", i); HomeAmong([]string{"n1", "n2", "n3"}, u) == home {
			return u
		}
	}
}

// A connection its node announces again to the user's new home (after
// a membership change) is not a new connection: it does not make a
// user who went inactive (connected, no heartbeats) online. Before,
// every such user flipped inactive → online → inactive at every
// membership change that moved their home (and every restart of it).
func TestReannouncedConnectionDoesNotMakeAnInactiveUserOnline(t *testing.T) {
	net, clk, svc := startFakeCluster(t)
	// A user homed on n3 (of n1, n2, n3), connected to n1.
	uid := userHomedOn("n3")
	svc["n1"].Connected(uid, "phone")
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		if n := connsOf(svc["n3"], uid); n != 1 {
			return fmt.Errorf("the home counts %d connections", n)
		}
		return nil
	})
	// No heartbeat for 3 intervals: inactive.
	for range 3 * interval / svc["n3"].period {
		clk.Advance(svc["n3"].period)
		svc["n3"].tick()
	}
	if got, want := fmt.Sprint(net.published()), fmt.Sprintf("[%s:online %s:inactive]", uid, uid); got != want {
		t.Fatalf("published %s, want %s", got, want)
	}
	// n3 leaves: the user's new home adopts them; n1 announces the
	// connection to it again.
	net.setMembers("n1", "n2")
	newHome := HomeAmong([]string{"n1", "n2"}, uid)
	svc[newHome].cl.refreshMembers()
	for _, name := range []string{"n1", "n2"} {
		svc[name].cl.refreshMembers()
	}
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		if n := connsOf(svc[newHome], uid); n != 1 {
			return fmt.Errorf("the new home %s counts %d connections", newHome, n)
		}
		return nil
	})
	if got, want := fmt.Sprint(net.published()), fmt.Sprintf("[%s:online %s:inactive]", uid, uid); got != want {
		t.Fatalf("after the home moved: published %s, want %s (still inactive)", got, want)
	}
	if p := svc[newHome].Status(uid); p.Status != wire.StatusInactive {
		t.Fatalf("the new home says %+v, want inactive", p)
	}
}

// The same when the user's home restarts: the node of the user's
// connection announces it again to the new run of the home, whose
// broker has lost its retained copies (it takes them back from the
// hello's answer, which may come after the announcements). Before, the
// restarted home knew nothing of the user and made them online.
func TestReannouncedConnectionToARestartedHomeKeepsTheUserInactive(t *testing.T) {
	net := newFakeNet("n1", "n2", "n3")
	clk := newTestClock()
	start := func(name string, retained RetainedStore) *Service {
		s, err := New(Config{Interval: interval, Grace: grace}, Deps{
			Publisher: net, Logger: testutil.QuietLogger(), Clock: clk,
			Cluster: fakeNode{net, name}, Retained: retained,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.cl.queues.Close(); s.cl.queues.Wait() })
		return s
	}
	n1, _, n3 := start("n1", net), start("n2", net), start("n3", net)
	uid := userHomedOn("n3")
	n1.Connected(uid, "phone")
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		if n := connsOf(n3, uid); n != 1 {
			return fmt.Errorf("the home counts %d connections", n)
		}
		return nil
	})
	for range 3 * interval / n3.period {
		clk.Advance(n3.period)
		n3.tick()
	}
	want := fmt.Sprintf("[%s:online %s:inactive]", uid, uid)
	if got := fmt.Sprint(net.published()); got != want {
		t.Fatalf("published %s, want %s", got, want)
	}
	// n3 restarts: a new run that retains nothing yet. n1 answers its
	// hello (announcing the connection again); the answer's copies are
	// not adopted yet.
	again := start("n3", retainedMap{})
	var reply HelloReply
	if err := (&presenceRPC{n1}).Hello(&HelloArgs{From: "n3", Inc: again.cl.inc}, &reply); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		if n := connsOf(again, uid); n != 1 {
			return fmt.Errorf("the restarted home counts %d connections", n)
		}
		return nil
	})
	if got := fmt.Sprint(net.published()); got != want {
		t.Fatalf("after the home restarted: published %s, want %s (still inactive)", got, want)
	}
	if p := again.Status(uid); p.Status != wire.StatusInactive {
		t.Fatalf("the restarted home says %+v, want inactive", p)
	}
}
