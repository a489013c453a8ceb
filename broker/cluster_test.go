package broker

import (
	"bytes"
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"github.com/edgechat/edgechat/cluster"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgechat/edgechat/broker/routes"
	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/peerrpc"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/internal/wire"
)

// --- a fake cluster: RPCs between in-process brokers, gob round trip ---

type fabric struct {
	mu       sync.Mutex
	handlers map[string]peerrpc.Methods // node + "/" + service → handler
	members  []cluster.Member
	down     map[string]bool // unreachable nodes
	lose     map[string]int  // node → replies to lose (the call runs, the caller gets an error)
	changed  chan struct{}   // closed at the next change of members
}

func newFabric(names ...string) *fabric {
	f := &fabric{handlers: map[string]peerrpc.Methods{}, down: map[string]bool{}, lose: map[string]int{}}
	for _, n := range names {
		f.members = append(f.members, cluster.Member{Name: n, Addr: n})
	}
	return f
}

func (f *fabric) setDown(node string, down bool) {
	f.mu.Lock()
	f.down[node] = down
	f.mu.Unlock()
}

func (f *fabric) loseReplies(node string, n int) {
	f.mu.Lock()
	f.lose[node] = n
	f.mu.Unlock()
}

func (f *fabric) removeMember(node string) {
	f.mu.Lock()
	f.members = slices.DeleteFunc(f.members, func(m cluster.Member) bool { return m.Name == node })
	if f.changed != nil {
		close(f.changed)
		f.changed = nil
	}
	f.mu.Unlock()
}

type fabricNode struct {
	f    *fabric
	name string
}

var _ Cluster = (*fabricNode)(nil)

func (n *fabricNode) Self() string { return n.name }

func (n *fabricNode) Members() []cluster.Member {
	n.f.mu.Lock()
	defer n.f.mu.Unlock()
	return slices.Clone(n.f.members)
}

func (n *fabricNode) MembersChanged() <-chan struct{} {
	n.f.mu.Lock()
	defer n.f.mu.Unlock()
	if n.f.changed == nil {
		n.f.changed = make(chan struct{})
	}
	return n.f.changed
}

func (n *fabricNode) RegisterRPC(name string, h peerrpc.Methods) error {
	n.f.mu.Lock()
	defer n.f.mu.Unlock()
	n.f.handlers[n.name+"/"+name] = h
	return nil
}

var errUnreachable = fmt.Errorf("fabric: unreachable: %w", wire.ErrUnavailable)

func (n *fabricNode) Call(ctx context.Context, addr, method string, req, resp any) error {
	svc, m, _ := strings.Cut(method, ".")
	n.f.mu.Lock()
	h := n.f.handlers[addr+"/"+svc]
	down := n.f.down[addr] || n.f.down[n.name]
	lose := n.f.lose[addr] > 0
	if lose && !down {
		n.f.lose[addr]--
	}
	n.f.mu.Unlock()
	if down || h == nil {
		return errUnreachable
	}
	if h[m] == nil {
		return peerrpc.ServerError("no method " + method)
	}
	// Through gob, as on the wire: what does not encode fails here.
	run, err := h[m](func(in any) error { return gobCopy(req, in) })
	if err != nil {
		return err
	}
	out, err := run()
	if err != nil {
		return peerrpc.ServerError(err.Error())
	}
	if lose {
		return errUnreachable
	}
	return gobCopy(out, resp)
}

func gobCopy(from, to any) error {
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(from); err != nil {
		return err
	}
	return gob.NewDecoder(&buf).Decode(to)
}

// --- three brokers on one replicated log ---

type clusterEnv struct {
	fab   *fabric
	log   *fsmtest.Harness
	nodes map[string]*testEnv
	tabs  map[string]*routes.Table
	// proposers, set by pre, replace the shared log as a node's Proposer.
	proposers map[string]Proposer
	// chats, set by pre, replace a node's own fakeChat.
	chats map[string]ChatStore
	// config, set by pre, changes every node's Config.
	config func(*Config)
}

// startClusterOf starts brokers n1..nN, each with its own FSM fed by one
// shared log (n1's is the harness's own), with the fake cluster between
// them. pre runs after the route tables exist and before the brokers
// start.
func startClusterOf(t *testing.T, n int, pre func(c *clusterEnv)) *clusterEnv {
	t.Helper()
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("n%d", i+1)
	}
	c := &clusterEnv{fab: newFabric(names...), log: fsmtest.New(t), nodes: map[string]*testEnv{}, tabs: map[string]*routes.Table{}}
	for i, name := range names {
		f := c.log.FSM
		if i > 0 {
			f = c.log.NewFollower(t)
		}
		tab, err := routes.New(f.DB(), f)
		if err != nil {
			t.Fatal(err)
		}
		c.tabs[name] = tab
	}
	if pre != nil {
		pre(c)
	}
	for _, name := range names {
		c.nodes[name] = startBrokerWith(t, func(cfg *Config) {
			cfg.ForwardRetryMax = 20 * time.Millisecond
			cfg.ForwardTimeout = time.Second
			if c.config != nil {
				c.config(cfg)
			}
		}, func(d *Deps) {
			d.Cluster = &fabricNode{f: c.fab, name: name}
			d.Proposer = c.log
			if p := c.proposers[name]; p != nil {
				d.Proposer = p
			}
			if ch := c.chats[name]; ch != nil {
				d.Chat = ch
			}
			d.Routes = c.tabs[name]
		})
	}
	return c
}

func (c *clusterEnv) setMember(gid string, uids ...string) {
	for _, e := range c.nodes {
		for _, u := range uids {
			e.mem.set(gid, u, true)
		}
	}
}

// waitRoute waits until every node's table says whether node has a route
// for filter.
func (c *clusterEnv) waitRoute(t *testing.T, node, filter string, want bool) {
	t.Helper()
	testutil.CheckFor(t, waitFor, time.Millisecond, func() error {
		for name, tab := range c.tabs {
			if tab.Has(node, filter) != want {
				return fmt.Errorf("%s: route %s %s present=%v", name, node, filter, !want)
			}
		}
		return nil
	})
}

func metric(t *testing.T, e *testEnv, name string, labels map[string]string) float64 {
	t.Helper()
	v, _ := testutil.MetricValue(t, e.reg, name, labels)
	return v
}

func prop(p *paho.Publish, key string) string {
	if p.Properties == nil {
		return ""
	}
	return p.Properties.User.Get(key)
}

func envelope(cid, body string) string {
	return fmt.Sprintf(`{"cid":%q,"type":"text","body":%q}`, cid, body)
}

func mustBody(t *testing.T, p *paho.Publish, topic, body string) wire.Envelope {
	t.Helper()
	if p.Topic != topic {
		t.Fatalf("got topic %s, want %s (payload %s)", p.Topic, topic, p.Payload)
	}
	env, err := wire.ParseEnvelope(p.Payload)
	if err != nil {
		// Delivered envelopes carry server fields that ParseEnvelope
		// refuses from clients; compare the body textually.
		if !strings.Contains(string(p.Payload), fmt.Sprintf("%q", body)) {
			t.Fatalf("payload %s lacks body %q", p.Payload, body)
		}
		return wire.Envelope{}
	}
	if env.Body != body {
		t.Fatalf("body %q, want %q", env.Body, body)
	}
	return env
}

func TestClusterDirectMessageCrossesNodesOnce(t *testing.T) {
	c := startClusterOf(t, 3, nil)
	a, b, cc := c.nodes["n1"], c.nodes["n2"], c.nodes["n3"]
	bob := mustV5(t, cc.addr, "bob", "phone")
	bob.MustSub(t, "user/bob/newMessage")
	aliceTab := mustV5(t, b.addr, "alice", "tablet") // the sender's other device, on another node
	aliceTab.MustSub(t, "user/alice/newMessage")
	c.waitRoute(t, "n3", "user/bob/newMessage", true)
	c.waitRoute(t, "n2", "user/alice/newMessage", true)

	alice := mustV5(t, a.addr, "alice", "phone")
	for i, body := range []string{"hello", "again"} {
		if code, _ := alice.Pub(t, "user/bob/newMessage", 1, envelope(fmt.Sprint("c", i), body)); code != 0 {
			t.Fatalf("publish: reason 0x%02x", code)
		}
	}
	// Exactly once each, in order: the second arrives right after the first.
	for _, body := range []string{"hello", "again"} {
		m := bob.Next(t)
		mustBody(t, m, "user/bob/newMessage", body)
		if prop(m, "from") != "alice" || prop(m, "id") == "" {
			t.Fatalf("user properties %+v", m.Properties)
		}
		cp := aliceTab.Next(t)
		mustBody(t, cp, "user/alice/newMessage", body)
		if prop(cp, "id") != prop(m, "id") {
			t.Fatalf("sender's copy id %s, recipient's %s", prop(cp, "id"), prop(m, "id"))
		}
	}
	// The receiving node counts a forward after it has delivered it, so
	// the counter may trail the delivery by a moment.
	testutil.CheckFor(t, waitFor, time.Millisecond, func() error {
		if got := metric(t, cc, "edgechat_forward_received_total", nil); got != 2 {
			return fmt.Errorf("n3 received %v forwards, want 2", got)
		}
		// n2 has no route for bob: nothing of bob's went there.
		if got := metric(t, b, "edgechat_forward_received_total", nil); got != 2 {
			return fmt.Errorf("n2 received %v forwards, want 2 (the sender's copies)", got)
		}
		return nil
	})
}

func TestClusterGroupMessageReachesMembersOnEveryNode(t *testing.T) {
	c := startClusterOf(t, 3, nil)
	c.setMember("g1", "alice", "bob", "carol", "dave")
	subs := map[string]*mqtttest.Client{}
	for uid, node := range map[string]string{"bob": "n1", "carol": "n2", "dave": "n3"} {
		cl := mustV5(t, c.nodes[node].addr, uid, "d")
		cl.MustSub(t, "group/g1/newMessage")
		subs[uid] = cl
		c.waitRoute(t, node, "group/g1/newMessage", true)
	}
	alice := mustV5(t, c.nodes["n1"].addr, "alice", "d")
	for i, body := range []string{"hi all", "second"} {
		if code, _ := alice.Pub(t, "group/g1/newMessage", 1, envelope(fmt.Sprint("g", i), body)); code != 0 {
			t.Fatalf("publish: reason 0x%02x", code)
		}
	}
	for uid, cl := range subs {
		for _, body := range []string{"hi all", "second"} {
			m := cl.Next(t)
			mustBody(t, m, "group/g1/newMessage", body)
			if prop(m, "from") != "alice" {
				t.Fatalf("%s: from %q", uid, prop(m, "from"))
			}
		}
	}
	// n2 and n3 got one forward per message, and forwarded nothing back.
	for _, n := range []string{"n2", "n3"} {
		if got := metric(t, c.nodes[n], "edgechat_forward_received_total", nil); got != 2 {
			t.Errorf("%s received %v, want 2", n, got)
		}
		if got := metric(t, c.nodes[n], "edgechat_forward_queued_total", nil); got != 0 {
			t.Errorf("%s re-forwarded %v packets", n, got)
		}
	}
}

func TestClusterTypingAndReceiptsCrossNodes(t *testing.T) {
	c := startClusterOf(t, 2, nil)
	alice := mustV5(t, c.nodes["n1"].addr, "alice", "d")
	alice.MustSub(t, "user/alice/receipts")
	bob := mustV5(t, c.nodes["n2"].addr, "bob", "d")
	bob.MustSub(t, "user/bob/typing")
	c.waitRoute(t, "n1", "user/alice/receipts", true)
	c.waitRoute(t, "n2", "user/bob/typing", true)

	alice.Pub(t, "user/bob/typing", 0, `{"state":"typing"}`)
	m := bob.Next(t)
	if m.Topic != "user/bob/typing" || !strings.Contains(string(m.Payload), `"from":"alice"`) || prop(m, "from") != "alice" {
		t.Fatalf("typing: %s %s %+v", m.Topic, m.Payload, m.Properties)
	}
	bob.Pub(t, "user/alice/receipts", 1, `{"type":"delivered","upTo":"7211938138472448001"}`)
	r := alice.Next(t)
	if r.Topic != "user/alice/receipts" || !strings.Contains(string(r.Payload), `"peer":"bob"`) || prop(r, "from") != "bob" {
		t.Fatalf("receipt: %s %s", r.Topic, r.Payload)
	}
}

func TestClusterLastUnsubscribeWithdrawsRoute(t *testing.T) {
	c := startClusterOf(t, 2, nil)
	b := c.nodes["n2"]
	phone := mustV5(t, b.addr, "bob", "phone")
	phone.MustSub(t, "user/bob/newMessage")
	laptop := mustV5(t, b.addr, "bob", "laptop")
	laptop.MustSub(t, "user/bob/#")
	laptop.MustSub(t, "user/bob/newMessage")
	c.waitRoute(t, "n2", "user/bob/newMessage", true)
	c.waitRoute(t, "n2", "user/bob/#", true)

	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if _, err := phone.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{"user/bob/newMessage"}}); err != nil {
		t.Fatal(err)
	}
	waitLocalSubscribers(t, b, "user/bob/newMessage", 1)
	// The laptop still holds both filters: the routes stay. Its clean
	// disconnect releases them.
	if !c.tabs["n1"].Has("n2", "user/bob/newMessage") {
		t.Fatal("route withdrawn while a subscriber is left")
	}
	_ = laptop.Disconnect(&paho.Disconnect{})
	c.waitRoute(t, "n2", "user/bob/newMessage", false)
	c.waitRoute(t, "n2", "user/bob/#", false)

	a := c.nodes["n1"]
	alice := mustV5(t, a.addr, "alice", "d")
	if code, _ := alice.Pub(t, "user/bob/newMessage", 1, envelope("x1", "nobody there")); code != 0 {
		t.Fatalf("publish: 0x%02x", code)
	}
	// A publish that takes the synchronous path waits for the pipeline
	// (drain), deliveries included: once it is answered, the message's
	// delivery and forwarding are done, and nothing was queued.
	if code, _ := alice.Pub(t, "user/bob/typing", 1, `{}`); code != 0 {
		t.Fatalf("typing publish: 0x%02x", code)
	}
	if got := metric(t, a, "edgechat_forward_queued_total", nil); got != 0 {
		t.Errorf("queued %v forwards to a node without a route", got)
	}
	// n1 applied the second withdrawal (its route is gone) a moment
	// before n2's proposal returned and counted it.
	testutil.CheckFor(t, waitFor, 5*time.Millisecond, func() error {
		if got := metric(t, b, "edgechat_route_proposals_total", map[string]string{"op": "del", "result": "ok"}); got != 2 {
			return fmt.Errorf("n2 proposed %v withdrawals, want 2", got)
		}
		return nil
	})
}

// routeRefuser fails route additions (as a node that cannot reach a
// leader does) while refuse is negative, or the next refuse of them, and
// proposes everything else.
type routeRefuser struct {
	Proposer
	refuse *atomic.Int64
}

func (r routeRefuser) Propose(ctx context.Context, t byte, payload []byte) (any, error) {
	if t == wire.CmdRouteAdd && (r.refuse.Load() < 0 || r.refuse.Add(-1) >= 0) {
		return nil, fmt.Errorf("%w: no leader", wire.ErrUnavailable)
	}
	return r.Proposer.Propose(ctx, t, payload)
}

// A route that fails to commit a few times, as during an election, is
// tried again within the budget: the client is subscribed, not turned
// away.
func TestClusterRouteRetriedDuringAnElection(t *testing.T) {
	var refuse atomic.Int64
	refuse.Store(3)
	c := startClusterOf(t, 2, func(c *clusterEnv) {
		c.proposers = map[string]Proposer{"n2": routeRefuser{Proposer: c.log, refuse: &refuse}}
	})
	b := c.nodes["n2"]
	bob := mustV5(t, b.addr, "bob", "phone")
	bob.MustSub(t, "user/bob/#")
	if !c.tabs["n1"].Has("n2", "user/bob/#") {
		t.Fatal("SUBACK before the route reached the other node's table")
	}
	// (The keeper's own reconcile may have taken one of the refusals.)
	if got := metric(t, b, "edgechat_route_proposals_total", map[string]string{"op": "add", "result": "error"}); got < 3 {
		t.Errorf("failed route proposals = %v, want at least 3", got)
	}
	if _, ok := bob.ServerDisconnect(); ok {
		t.Fatal("subscriber disconnected although the route committed")
	}
}

// A subscriber to its chat topics is told nothing is wrong only once its
// node's route is committed: without the route, the messages committed
// elsewhere after the client's catch-up sync would reach no one. A node
// that cannot commit it disconnects the client (0x89) instead of
// answering the SUBACK; once it can, the client's next try is subscribed
// and reached from the other node.
func TestClusterSubscriberDisconnectedWhenItsRouteCannotCommit(t *testing.T) {
	var refuse atomic.Int64
	refuse.Store(-1)
	c := startClusterOf(t, 2, func(c *clusterEnv) {
		c.proposers = map[string]Proposer{"n2": routeRefuser{Proposer: c.log, refuse: &refuse}}
	})
	b := c.nodes["n2"]
	bob := mustV5(t, b.addr, "bob", "phone")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	subacked := make(chan []byte, 1)
	go func() {
		if sa, err := bob.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "user/bob/#", QoS: 1}}}); err == nil {
			subacked <- sa.Reasons
		}
	}()
	testutil.CheckFor(t, waitFor, time.Millisecond, func() error {
		if code, ok := bob.ServerDisconnect(); !ok || code != packets.ErrServerBusy.Code {
			return fmt.Errorf("server DISCONNECT %#x sent=%v, want 0x89", code, ok)
		}
		return nil
	})
	if got := metric(t, b, "edgechat_mqtt_refused_total", map[string]string{"reason": "route"}); got != 1 {
		t.Errorf("refused{route} = %v, want 1", got)
	}
	select {
	case r := <-subacked:
		t.Fatalf("SUBACK %v without a route", r)
	default:
	}

	refuse.Store(0)
	bob = mustV5(t, b.addr, "bob", "phone")
	bob.MustSub(t, "user/bob/#")
	c.reachedFromN1(t, bob, "SUBACK before the route reached the other node's table", "r1")
}

// reachedFromN1 checks that n1's table routes user/bob/# to n2 and that
// a message alice publishes on n1 reaches bob there.
func (c *clusterEnv) reachedFromN1(t *testing.T, bob *mqtttest.Client, noRoute, cid string) {
	t.Helper()
	if !c.tabs["n1"].Has("n2", "user/bob/#") {
		t.Fatal(noRoute)
	}
	alice := mustV5(t, c.nodes["n1"].addr, "alice", "d")
	if code, _ := alice.Pub(t, "user/bob/newMessage", 1, envelope(cid, "routed "+cid)); code != 0 {
		t.Fatalf("publish: 0x%02x", code)
	}
	mustBody(t, bob.Next(t), "user/bob/newMessage", "routed "+cid)
}

// waitLocalSubscribers waits until node e's route keeper counts want
// local subscribers of filter.
func waitLocalSubscribers(t *testing.T, e *testEnv, filter string, want int) {
	t.Helper()
	testutil.CheckFor(t, waitFor, time.Millisecond, func() error {
		e.b.rk.mu.Lock()
		n := len(e.b.rk.subs[filter])
		e.b.rk.mu.Unlock()
		if n != want {
			return fmt.Errorf("%d local subscribers of %s, want %d", n, filter, want)
		}
		return nil
	})
}

// lastSubscriberLeaves subscribes a device of bob to user/bob/# on node e
// and disconnects it, then waits until the route's withdrawal enters the
// test's proposer (it signals entered).
func lastSubscriberLeaves(t *testing.T, e *testEnv, entered <-chan struct{}) {
	t.Helper()
	old := mustV5(t, e.addr, "bob", "old")
	old.MustSub(t, "user/bob/#")
	_ = old.Disconnect(&paho.Disconnect{})
	select {
	case <-entered:
	case <-time.After(waitFor):
		t.Fatal("no withdrawal after the last subscriber left")
	}
}

// withdrawalGate holds route withdrawals until released and reports when
// each has entered and returned.
type withdrawalGate struct {
	Proposer
	entered, release, returned chan struct{}
}

func (g withdrawalGate) Propose(ctx context.Context, t byte, payload []byte) (any, error) {
	if t != wire.CmdRouteDel {
		return g.Proposer.Propose(ctx, t, payload)
	}
	g.entered <- struct{}{}
	<-g.release
	v, err := g.Proposer.Propose(ctx, t, payload)
	g.returned <- struct{}{}
	return v, err
}

// A device that subscribes while its node is withdrawing the route the
// previous subscriber left (a phone reconnecting to the same node) gets
// its SUBACK only after that withdrawal and a new route: answering at
// once, on the strength of a route about to go, left the device
// unreachable from other nodes until the keeper's next round.
func TestClusterSubscriberWaitsOutAWithdrawal(t *testing.T) {
	g := withdrawalGate{entered: make(chan struct{}, 1), release: make(chan struct{}), returned: make(chan struct{}, 1)}
	c := startClusterOf(t, 2, func(c *clusterEnv) {
		g.Proposer = c.log
		c.proposers = map[string]Proposer{"n2": g}
	})
	b := c.nodes["n2"]
	lastSubscriberLeaves(t, b, g.entered)
	subacked := make(chan struct{})
	laptop := mustV5(t, b.addr, "bob", "laptop")
	go func() {
		defer close(subacked)
		laptop.MustSub(t, "user/bob/#")
	}()
	waitLocalSubscribers(t, b, "user/bob/#", 1)
	close(g.release)
	<-g.returned
	<-subacked
	c.reachedFromN1(t, laptop, "SUBACK while the route was withdrawn", "w1")
}

// lateWithdrawal fails the first route withdrawal as a leader change
// does (its fate unknown) and keeps it, as the log does, to commit later:
// before the next route add (log order: an entry appended after it) or,
// when commitLate is called first, alone; then it holds every later add
// until the test ends, so that a route lost to it stays lost. Later
// withdrawals fail at once (no leader yet, never appended).
type lateWithdrawal struct {
	*fsmtest.Harness
	entered, release chan struct{}
	mu               sync.Mutex
	failed           bool
	held             []byte
	hold             chan struct{}
}

func (l *lateWithdrawal) Propose(ctx context.Context, t byte, payload []byte) (any, error) {
	l.mu.Lock()
	switch {
	case t == wire.CmdRouteDel && !l.failed:
		l.failed = true
		l.mu.Unlock()
		l.entered <- struct{}{}
		<-l.release
		l.mu.Lock()
		l.held = payload
		l.mu.Unlock()
		return nil, fmt.Errorf("%w: leadership lost (the command may still commit)", wire.ErrUnavailable)
	case t == wire.CmdRouteDel:
		l.mu.Unlock()
		return nil, fmt.Errorf("%w: no leader", wire.ErrUnavailable)
	case t == wire.CmdRouteAdd && l.held != nil:
		held := l.held
		l.held = nil
		l.mu.Unlock()
		if _, err := l.Harness.Propose(ctx, wire.CmdRouteDel, held); err != nil {
			return nil, err
		}
	case t == wire.CmdRouteAdd && l.hold != nil:
		hold := l.hold
		l.mu.Unlock()
		select {
		case <-hold:
		case <-ctx.Done():
		}
		return nil, fmt.Errorf("%w: held by the test", wire.ErrUnavailable)
	default:
		l.mu.Unlock()
	}
	return l.Harness.Propose(ctx, t, payload)
}

func (l *lateWithdrawal) holding() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held != nil
}

// commitLate commits the withdrawal if it is still held, and from then
// on holds route adds.
func (l *lateWithdrawal) commitLate(t *testing.T) {
	l.mu.Lock()
	held := l.held
	l.held = nil
	if held != nil {
		l.hold = make(chan struct{})
		t.Cleanup(func() { close(l.hold) })
	}
	l.mu.Unlock()
	if held == nil {
		return
	}
	if _, err := l.Harness.Propose(context.Background(), wire.CmdRouteDel, held); err != nil {
		t.Fatal(err)
	}
}

// A withdrawal whose proposal failed may still commit. A device that
// subscribes while it is proposed or after it failed must not take the
// route it sees for one that stays: its SUBACK waits for a route added
// after the withdrawal in the log, or the withdrawal's late commit
// leaves it unreachable.
func TestClusterSubscriberAfterAFailedWithdrawal(t *testing.T) {
	for _, during := range []bool{true, false} {
		t.Run(fmt.Sprintf("during=%v", during), func(t *testing.T) {
			var l *lateWithdrawal
			c := startClusterOf(t, 2, func(c *clusterEnv) {
				l = &lateWithdrawal{Harness: c.log, entered: make(chan struct{}, 1), release: make(chan struct{})}
				c.proposers = map[string]Proposer{"n2": l}
			})
			b := c.nodes["n2"]
			lastSubscriberLeaves(t, b, l.entered)
			if !during {
				close(l.release)
				testutil.CheckFor(t, waitFor, time.Millisecond, func() error {
					if !l.holding() {
						return errors.New("the withdrawal has not failed yet")
					}
					return nil
				})
			}
			subacked := make(chan struct{})
			laptop := mustV5(t, b.addr, "bob", "laptop")
			go func() {
				defer close(subacked)
				laptop.MustSub(t, "user/bob/#")
			}()
			if during {
				waitLocalSubscribers(t, b, "user/bob/#", 1)
				close(l.release)
			}
			<-subacked
			l.commitLate(t)
			c.reachedFromN1(t, laptop, "the failed withdrawal committed after the SUBACK and took the route", "w2")
		})
	}
}

func TestClusterPerSenderOrderAcrossNodes(t *testing.T) {
	c := startClusterOf(t, 2, nil)
	bob := mustV5(t, c.nodes["n2"].addr, "bob", "d")
	bob.MustSub(t, "user/bob/newMessage")
	c.waitRoute(t, "n2", "user/bob/newMessage", true)
	alice := mustV5(t, c.nodes["n1"].addr, "alice", "d")
	const n = 200
	errc := make(chan error, 1)
	go func() {
		for i := range n {
			pr, err := alice.Publish(context.Background(), &paho.Publish{Topic: "user/bob/newMessage", QoS: 1,
				Payload: []byte(envelope(fmt.Sprint("o", i), fmt.Sprintf("m%03d", i)))})
			if err != nil || pr.ReasonCode != 0 {
				errc <- fmt.Errorf("publish %d: %v %v", i, err, pr)
				return
			}
		}
		errc <- nil
	}()
	for i := range n {
		mustBody(t, bob.Next(t), "user/bob/newMessage", fmt.Sprintf("m%03d", i))
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if batches := metric(t, c.nodes["n1"], "edgechat_forward_batches_total", nil); batches > n {
		t.Errorf("%v batches for %d packets", batches, n)
	}
}

func TestClusterForwardRetriedUntilNodeIsBack(t *testing.T) {
	c := startClusterOf(t, 2, nil)
	a := c.nodes["n1"]
	bob := mustV5(t, c.nodes["n2"].addr, "bob", "d")
	bob.MustSub(t, "user/bob/typing")
	c.waitRoute(t, "n2", "user/bob/typing", true)

	c.fab.setDown("n2", true)
	alice := mustV5(t, a.addr, "alice", "d")
	alice.Pub(t, "user/bob/typing", 1, `{"state":"typing"}`)
	testutil.CheckFor(t, waitFor, time.Millisecond, func() error {
		if r := metric(t, a, "edgechat_forward_retries_total", nil); r < 2 {
			return fmt.Errorf("%v retries", r)
		}
		return nil
	})
	if m, ok := bob.TryNext(); ok {
		t.Fatalf("delivered while unreachable: %s", m.Payload)
	}
	// Back, but the first acknowledgement is lost: the resent batch must
	// not deliver twice.
	c.fab.loseReplies("n2", 1)
	c.fab.setDown("n2", false)
	m := bob.Next(t)
	if !strings.Contains(string(m.Payload), `"state":"typing"`) {
		t.Fatalf("got %s", m.Payload)
	}
	alice.Pub(t, "user/bob/typing", 1, `{"state":"stopped"}`)
	if m := bob.Next(t); !strings.Contains(string(m.Payload), `"state":"stopped"`) {
		t.Fatalf("after the retry got %s (a duplicate?)", m.Payload)
	}
	if d := metric(t, c.nodes["n2"], "edgechat_forward_duplicates_total", nil); d != 1 {
		t.Errorf("duplicates skipped: %v, want 1", d)
	}
}

func TestClusterQueueDroppedWhenNodeLeavesMembers(t *testing.T) {
	c := startClusterOf(t, 2, nil)
	a := c.nodes["n1"]
	bob := mustV5(t, c.nodes["n2"].addr, "bob", "d")
	bob.MustSub(t, "user/bob/typing")
	c.waitRoute(t, "n2", "user/bob/typing", true)

	c.fab.setDown("n2", true)
	alice := mustV5(t, a.addr, "alice", "d")
	for range 3 {
		alice.Pub(t, "user/bob/typing", 1, `{}`)
	}
	if n, ok := a.b.fwd.queued("n2"); !ok || n == 0 {
		t.Fatalf("queue for n2: %d %v", n, ok)
	}
	c.fab.removeMember("n2")
	testutil.CheckFor(t, waitFor, time.Millisecond, func() error {
		if _, ok := a.b.fwd.queued("n2"); ok {
			return errors.New("queue still there")
		}
		return nil
	})
	// The queue goes first and its packets are counted as it is dropped;
	// mochi forwards a QoS 1 publish after its PUBACK, so the last one may
	// still arrive then and be dropped at once: either way, three.
	testutil.CheckFor(t, waitFor, time.Millisecond, func() error {
		if d := metric(t, a, "edgechat_forward_dropped_total", map[string]string{"reason": "not_member"}); d != 3 {
			return fmt.Errorf("dropped %v, want 3", d)
		}
		return nil
	})
	// Later publishes to the gone node are dropped at once, not queued.
	alice.Pub(t, "user/bob/typing", 1, `{}`)
	if _, ok := a.b.fwd.queued("n2"); ok {
		t.Error("a queue was recreated for a non-member")
	}
}

func TestClusterRetainedPresenceSameOnEveryNode(t *testing.T) {
	c := startClusterOf(t, 3, nil)
	p := []byte(`{"status":"online","lastSeen":"2026-11-28T12:00:00Z"}`)
	if err := c.nodes["n1"].b.Publish(wire.Outbound{Topic: "presence/alice", Payload: p, Retain: true, QoS: 1}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"n2", "n3"} {
		e := c.nodes[name]
		testutil.CheckFor(t, waitFor, time.Millisecond, func() error {
			if msgs := e.b.srv.Topics.Messages("presence/alice"); len(msgs) != 1 || !bytes.Equal(msgs[0].Payload, p) {
				return fmt.Errorf("%s retains %d messages", name, len(msgs))
			}
			return nil
		})
	}
	// A later subscriber on another node gets it as a retained message.
	c.nodes["n3"].vis.set("bob", "alice", true)
	bob := mustV5(t, c.nodes["n3"].addr, "bob", "d")
	bob.MustSub(t, "presence/alice")
	m := bob.Next(t)
	if !m.Retain || !bytes.Equal(m.Payload, p) {
		t.Fatalf("retained presence: retain=%v %s", m.Retain, m.Payload)
	}
}

func TestClusterStaleRoutesWithdrawnAtStart(t *testing.T) {
	c := startClusterOf(t, 2, func(c *clusterEnv) {
		// Left in the table by n2 before a crash: no local subscriber now.
		payload, err := routes.EncodeRoute("n2", "user/zed/#")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.log.ProposeBatch(context.Background(), []fsm.Command{{Type: wire.CmdRouteAdd, Payload: payload}}); err != nil {
			t.Fatal(err)
		}
		if !c.tabs["n1"].Has("n2", "user/zed/#") {
			t.Fatal("setup: route not in the table")
		}
	})
	c.waitRoute(t, "n2", "user/zed/#", false)
}

func TestClusterDropNodeRoutes(t *testing.T) {
	c := startClusterOf(t, 3, nil)
	bob := mustV5(t, c.nodes["n3"].addr, "bob", "d")
	bob.MustSub(t, "user/bob/newMessage")
	bob.MustSub(t, "user/bob/typing")
	c.waitRoute(t, "n3", "user/bob/typing", true)
	c.waitRoute(t, "n3", "user/bob/newMessage", true)

	// Dropped by mistake while n3 still serves bob: n3 puts them back.
	if err := c.nodes["n1"].b.DropNodeRoutes(context.Background(), "n3"); err != nil {
		t.Fatal(err)
	}
	c.waitRoute(t, "n3", "user/bob/typing", true)
	c.waitRoute(t, "n3", "user/bob/newMessage", true)

	// n3 dies (its Run ends without withdrawing anything) and is removed:
	// another node drops its routes for good.
	c.nodes["n3"].close()
	if err := c.nodes["n1"].b.DropNodeRoutes(context.Background(), "n3"); err != nil {
		t.Fatal(err)
	}
	for name, tab := range c.tabs {
		if fs := tab.Filters("n3"); len(fs) != 0 {
			t.Errorf("%s still routes %v to n3", name, fs)
		}
	}
	if err := c.nodes["n1"].b.DropNodeRoutes(context.Background(), "a/b"); !errors.Is(err, wire.ErrInvalid) {
		t.Errorf("bad node name: %v", err)
	}
	// On a single node it is a no-op.
	single := startBroker(t, nil)
	if err := single.b.DropNodeRoutes(context.Background(), "n3"); err != nil {
		t.Errorf("single node: %v", err)
	}
}

// A node whose leave failed after it dropped its own routes (Raft
// refused or timed out) adds them again on CancelLeave and keeps adding
// routes for new subscribers: it is still a member and serves.
func TestClusterCancelLeaveRestoresTheNodesRoutes(t *testing.T) {
	c := startClusterOf(t, 3, nil)
	bob := mustV5(t, c.nodes["n3"].addr, "bob", "d")
	bob.MustSub(t, "user/bob/newMessage")
	c.waitRoute(t, "n3", "user/bob/newMessage", true)

	n3 := c.nodes["n3"].b
	if err := n3.DropNodeRoutes(context.Background(), "n3"); err != nil { // leaving
		t.Fatal(err)
	}
	c.waitRoute(t, "n3", "user/bob/newMessage", false)
	n3.CancelLeave() // the leave failed
	c.waitRoute(t, "n3", "user/bob/newMessage", true)
	bob.MustSub(t, "user/bob/typing")
	c.waitRoute(t, "n3", "user/bob/typing", true)
}

func TestClusterDepsValidated(t *testing.T) {
	_, err := New(Config{Dev: true}, Deps{Cluster: &fabricNode{f: newFabric("n1"), name: "n1"}})
	if !errors.Is(err, ErrBadConfig) {
		t.Errorf("Cluster without Proposer/Routes: %v", err)
	}
}
