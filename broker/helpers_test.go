package broker

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/internal/ratelimit"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/internal/wire"
)

// waitFor bounds every wait in these tests; generous, because CI runs all
// packages with -race on two cores at once.
const waitFor = mqtttest.DefaultTimeout

// --- fakes of the dependencies ---

// fakeVerifier accepts "tok:{uid}" and "tok:{uid}:admin"; "unavailable"
// cannot be checked now (a provider's keys that cannot be fetched).
type fakeVerifier struct{}

func (fakeVerifier) VerifyAccessToken(tok string) (wire.Principal, error) {
	if tok == "unavailable" {
		return wire.Principal{}, fmt.Errorf("fake: fetching the provider's keys: %w", wire.ErrUnavailable)
	}
	parts := strings.Split(tok, ":")
	if len(parts) < 2 || parts[0] != "tok" || wire.ValidUserID(parts[1]) != nil {
		return wire.Principal{}, fmt.Errorf("fake: %w", wire.ErrBadToken)
	}
	return wire.Principal{UserID: parts[1], Admin: len(parts) == 3 && parts[2] == "admin"}, nil
}

// countingVerifier is fakeVerifier counting its calls.
type countingVerifier struct {
	fakeVerifier
	n atomic.Int64
}

func (v *countingVerifier) VerifyAccessToken(tok string) (wire.Principal, error) {
	v.n.Add(1)
	return v.fakeVerifier.VerifyAccessToken(tok)
}

type chatCall struct {
	from, to string // to is "group:{gid}" for a group message
	env      wire.Envelope
}

// fakeChat stamps ids and dedupes by (from, cid) like the archive, and
// refuses a group message of a non-member of members (when set) unless
// it is a retry of a stored one, as the archive does.
type fakeChat struct {
	mu      sync.Mutex
	calls   []chatCall
	seen    map[string]wire.Envelope
	next    uint16
	err     error
	members Membership
}

func (f *fakeChat) SendDirect(ctx context.Context, from, to string, env wire.Envelope) (wire.Envelope, []byte, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, chatCall{from, to, env})
	if f.err != nil {
		return wire.Envelope{}, nil, false, f.err
	}
	if f.seen == nil {
		f.seen = map[string]wire.Envelope{}
	}
	key := from + "\x00" + env.CID
	if e, ok := f.seen[key]; ok {
		return e, e.Marshal(), true, nil
	}
	f.next++
	env.ID = snowflake.Make(1000, 1, f.next)
	env.From, env.To = from, to
	f.seen[key] = env
	return env, env.Marshal(), false, nil
}

func (f *fakeChat) SendGroup(ctx context.Context, from, gid string, env wire.Envelope) (wire.Envelope, []byte, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, chatCall{from, "group:" + gid, env})
	if f.err != nil {
		return wire.Envelope{}, nil, false, f.err
	}
	if f.seen == nil {
		f.seen = map[string]wire.Envelope{}
	}
	key := from + "\x00" + env.CID
	if e, ok := f.seen[key]; ok {
		return e, e.Marshal(), true, nil
	}
	if f.members != nil && !f.members.IsMember(gid, from) {
		return wire.Envelope{}, nil, false, fmt.Errorf("fake archive: %q is not a member of %q: %w", from, gid, wire.ErrForbidden)
	}
	f.next++
	env.ID = snowflake.Make(1000, 1, f.next)
	env.From, env.Group = from, gid
	f.seen[key] = env
	return env, env.Marshal(), false, nil
}

// StartDirect makes fakeChat a PipelinedChatStore, as the archive is:
// it stamps (and dedupes) at once, in call order; the wait answers.
func (f *fakeChat) StartDirect(ctx context.Context, from, to string, env wire.Envelope) (func(context.Context) (wire.Envelope, []byte, bool, error), error) {
	return started(f.SendDirect(ctx, from, to, env))
}

// StartGroup: see StartDirect.
func (f *fakeChat) StartGroup(ctx context.Context, from, gid string, env wire.Envelope) (func(context.Context) (wire.Envelope, []byte, bool, error), error) {
	return started(f.SendGroup(ctx, from, gid, env))
}

// started is a Start answer from a Send answer: refusals come from the
// first step, like the archive's checks.
func started(stored wire.Envelope, payload []byte, dup bool, err error) (func(context.Context) (wire.Envelope, []byte, bool, error), error) {
	if err != nil {
		return nil, err
	}
	return func(context.Context) (wire.Envelope, []byte, bool, error) { return stored, payload, dup, nil }, nil
}

// syncChat hides a ChatStore's Start methods: every publish takes the
// synchronous path (commit before mochi answers).
type syncChat struct{ ChatStore }

func (f *fakeChat) setErr(err error) {
	f.mu.Lock()
	f.err = err
	f.mu.Unlock()
}

func (f *fakeChat) getCalls() []chatCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]chatCall(nil), f.calls...)
}

func (f *fakeChat) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

// storedCount is how many messages were stored (retries and refusals
// store nothing).
func (f *fakeChat) storedCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.seen)
}

type readCall struct {
	reader, peer string
	upTo         snowflake.ID
}

type fakeReceipts struct {
	mu    sync.Mutex
	calls []readCall
}

func (f *fakeReceipts) MarkRead(ctx context.Context, reader, peer string, upTo snowflake.ID) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, readCall{reader, peer, upTo})
	return nil
}

func (f *fakeReceipts) get() []readCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]readCall(nil), f.calls...)
}

// fakePresence records "connected uid connID", "disconnected uid connID"
// and "heartbeat uid".
type fakePresence struct {
	mu     sync.Mutex
	events []string
}

func (f *fakePresence) add(s string) {
	f.mu.Lock()
	f.events = append(f.events, s)
	f.mu.Unlock()
}
func (f *fakePresence) Connected(uid, connID string)    { f.add("connected " + uid + " " + connID) }
func (f *fakePresence) Disconnected(uid, connID string) { f.add("disconnected " + uid + " " + connID) }
func (f *fakePresence) Heartbeat(uid string)            { f.add("heartbeat " + uid) }
func (f *fakePresence) get() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.events...)
}

// fakeVisibility: viewer sees subject when the pair is set.
type fakeVisibility struct{ m sync.Map }

func (v *fakeVisibility) set(viewer, subject string, ok bool) {
	v.m.Store([2]string{viewer, subject}, ok)
}
func (v *fakeVisibility) CanSeePresence(viewer, subject string) bool {
	ok, _ := v.m.Load([2]string{viewer, subject})
	return ok == true
}

// fakeMembership: uid is a member of gid when the pair is set. A pair
// set with removeAfterCheck answers yes once, then is removed: a removal
// that commits just after an ACL check.
type fakeMembership struct{ m, once sync.Map }

func (f *fakeMembership) set(gid, uid string, ok bool) { f.m.Store([2]string{gid, uid}, ok) }
func (f *fakeMembership) removeAfterCheck(gid, uid string) {
	f.once.Store([2]string{gid, uid}, true)
}
func (f *fakeMembership) IsMember(gid, uid string) bool {
	if _, ok := f.once.LoadAndDelete([2]string{gid, uid}); ok {
		f.set(gid, uid, false)
		return true
	}
	ok, _ := f.m.Load([2]string{gid, uid})
	return ok == true
}

// fakeBlocks: blocker has blocked blocked when the pair is set.
type fakeBlocks struct{ m sync.Map }

func (f *fakeBlocks) set(blocker, blocked string, ok bool) {
	f.m.Store([2]string{blocker, blocked}, ok)
}
func (f *fakeBlocks) IsBlocked(blocker, blocked string) bool {
	ok, _ := f.m.Load([2]string{blocker, blocked})
	return ok == true
}

// --- a running broker ---

type testEnv struct {
	b     *Broker
	chat  *fakeChat
	rec   *fakeReceipts
	pres  *fakePresence
	vis   *fakeVisibility
	mem   *fakeMembership
	blk   *fakeBlocks
	ver   *countingVerifier
	clock *testutil.FakeClock // the rate limiters' clock; it moves only when told
	reg   *prometheus.Registry
	addr  string
	cfg   Config
	close func()
}

func startBroker(t testing.TB, mod func(*Config)) *testEnv {
	t.Helper()
	return startBrokerWith(t, mod, nil)
}

func startBrokerWith(t testing.TB, mod func(*Config), modDeps func(*Deps)) *testEnv {
	t.Helper()
	e := &testEnv{chat: &fakeChat{}, rec: &fakeReceipts{}, pres: &fakePresence{}, vis: &fakeVisibility{},
		mem: &fakeMembership{}, blk: &fakeBlocks{}, ver: &countingVerifier{}, clock: testutil.NewFakeClock(time.Unix(1_800_000_000, 0)),
		reg: prometheus.NewRegistry()}
	e.vis.set("alice", "bob", true)
	// Rate limits are off unless a test turns them on: the clock is frozen.
	cfg := Config{MQTTAddr: "127.0.0.1:0", Logger: testutil.QuietLogger(), Registerer: e.reg, CommitTimeout: 2 * time.Second,
		PublishRate: ratelimit.Unlimited, ConnectRate: ratelimit.Unlimited, SubscribeRate: ratelimit.Unlimited, Now: e.clock.Now}
	if mod != nil {
		mod(&cfg)
	}
	e.chat.members = e.mem
	deps := Deps{
		Verifier:   e.ver,
		Chat:       e.chat,
		Receipts:   e.rec,
		Presence:   e.pres,
		Visibility: e.vis,
		Membership: e.mem,
		Blocks:     e.blk,
	}
	if modDeps != nil {
		modDeps(&deps)
	}
	b, err := New(cfg, deps)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e.b, e.cfg, e.addr = b, cfg, b.MQTTAddr()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	testutil.CheckFor(t, waitFor, time.Millisecond, func() error {
		if !b.ws.serving() {
			return errors.New("broker not serving yet")
		}
		return nil
	})
	var once sync.Once
	e.close = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				buf := make([]byte, 1<<20)
				n := runtime.Stack(buf, true)
				t.Errorf("Run did not return after cancel:\n%s", buf[:n])
			}
		})
	}
	t.Cleanup(e.close)
	return e
}

// --- MQTT v5 client: mqtttest ---

// mustV5 connects a verified user with client ID {uid}/{device} (the
// fake verifier takes "tok:{uid}").
func mustV5(t testing.TB, addr, uid, device string) *mqtttest.Client {
	t.Helper()
	return mqtttest.MustDial(t, addr, mqtttest.Options{ClientID: uid + "/" + device, Username: uid, Password: "tok:" + uid})
}

// --- MQTT 3.1.1 client (paho.mqtt.golang) ---

// v3SubCode connects uid as a 3.1.1 client (device v3) and returns the
// SUBACK code of one subscription to filter.
func v3SubCode(t testing.TB, addr, uid, filter string) byte {
	t.Helper()
	v3, _, err := dialV3(t, addr, uid+"/v3", uid, "tok:"+uid)
	if err != nil {
		t.Fatal(err)
	}
	tok := v3.Subscribe(filter, 1, nil)
	tok.WaitTimeout(waitFor)
	return tok.(interface{ Result() map[string]byte }).Result()[filter]
}

func dialV3(t testing.TB, addr, clientID, user, pass string) (pahov3.Client, byte, error) {
	t.Helper()
	opts := pahov3.NewClientOptions().
		AddBroker("tcp://" + addr).
		SetClientID(clientID).
		SetUsername(user).
		SetPassword(pass).
		SetProtocolVersion(4).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetCleanSession(true).
		SetConnectTimeout(waitFor)
	c := pahov3.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(waitFor) {
		t.Fatalf("v3 connect timed out")
	}
	code := tok.(*pahov3.ConnectToken).ReturnCode()
	if tok.Error() == nil {
		t.Cleanup(func() { c.Disconnect(100) })
	}
	return c, code, tok.Error()
}

var errNoMsg = errors.New("no message")
