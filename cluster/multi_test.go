package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
)

func fsmFor(t testing.TB) *fsm.FSM {
	t.Helper()
	db := openDB(t, t.TempDir())
	t.Cleanup(func() { _ = db.Close() })
	return fsm.New(db, testLogger(t))
}

// Multi-node tests: real nodes on 127.0.0.1 port 0 in one process, each
// with its own data dir and Badger.

// multiTimeouts are shorter than production's but leave room for -race
// on two cores that CI shares among all packages: with 200/200/100 ms a
// leader starved for a tenth of a second lost its lease (and a follower
// gave up on a leader after 2×(200+200) ms, leaderWait) in the middle of
// tests that assume one leader, which failed for a reason they do not
// test (three in one loaded run of the package; stop 38's CI).
func multiTimeouts(c *Config) {
	c.HeartbeatTimeout = time.Second
	c.ElectionTimeout = time.Second
	c.LeaderLeaseTimeout = 500 * time.Millisecond
}

// member is a test node that can be stopped and restarted on its data dir
// and address.
type member struct {
	*testNode
	name string
	dir  string
	addr string
}

func startMember(t testing.TB, name string, tweak func(*Config)) *member {
	t.Helper()
	m := &member{name: name, dir: t.TempDir()}
	m.start(t, "127.0.0.1:0", tweak)
	return m
}

func (m *member) start(t testing.TB, bind string, tweak func(*Config)) {
	t.Helper()
	m.testNode = startNode(t, nodeOpts{dataDir: m.dir, tweak: func(c *Config) {
		c.NodeName = m.name
		c.BindAddr = bind
		multiTimeouts(c)
		if tweak != nil {
			tweak(c)
		}
	}})
	m.addr = m.Addr()
}

// restart starts a stopped member again on its data dir and address.
func (m *member) restart(t testing.TB) {
	t.Helper()
	m.start(t, m.addr, nil)
}

// restartJoining restarts a stopped member with a Join list.
func (m *member) restartJoining(t testing.TB, join ...string) {
	t.Helper()
	m.start(t, m.addr, func(c *Config) { c.Join = join })
}

// startCluster starts n nodes named n1..nN that form one cluster with
// BootstrapExpect=n (n2.. are given n1's address; n1 learns theirs from
// their calls) and waits until every node sees a leader and n voters.
func startCluster(t testing.TB, n int) []*member {
	t.Helper()
	return startClusterWith(t, n, nil)
}

// startClusterWith is startCluster with a config tweak for every node.
func startClusterWith(t testing.TB, n int, tweak func(*Config)) []*member {
	t.Helper()
	ms := make([]*member, n)
	for i := range n {
		var join []string
		if i > 0 {
			join = []string{ms[0].addr}
		}
		ms[i] = startMember(t, fmt.Sprintf("n%d", i+1), func(c *Config) {
			c.BootstrapExpect = n
			c.Join = join
			if tweak != nil {
				tweak(c)
			}
		})
	}
	waitVoters(t, ms, n)
	// A joiner lifts its vote guard with a read round of its own, in the
	// background: wait for it, so that tests counting read rounds count
	// only theirs.
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		for _, m := range ms {
			if m.votes.guarded() {
				return fmt.Errorf("%s still has its vote guard", m.name)
			}
		}
		return nil
	})
	return ms
}

// waitVoters waits until every running member knows the same leader and
// a configuration of want voters, and has caught up with the leader.
func waitVoters(t testing.TB, ms []*member, want int) *member {
	t.Helper()
	var leader *member
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		leader = nil
		var leaderID string
		for _, m := range running(ms) {
			s := m.Stats()
			if s.LeaderID == "" {
				return fmt.Errorf("%s has no leader", m.name)
			}
			if leaderID != "" && s.LeaderID != leaderID {
				return fmt.Errorf("leaders disagree: %s vs %s", leaderID, s.LeaderID)
			}
			leaderID = s.LeaderID
			voters := 0
			for _, mb := range s.Members {
				if mb.Suffrage == "Voter" {
					voters++
				}
			}
			if voters != want {
				return fmt.Errorf("%s sees %d voters, want %d: %+v", m.name, voters, want, s.Members)
			}
			if m.name == s.LeaderID {
				leader = m
			}
		}
		if leader == nil {
			return fmt.Errorf("leader %s is not a running member", leaderID)
		}
		return nil
	})
	for _, m := range running(ms) {
		waitReady(t, m.Raft)
	}
	return leader
}

func running(ms []*member) []*member {
	var out []*member
	for _, m := range ms {
		if m.cancel != nil {
			out = append(out, m)
		}
	}
	return out
}

// followerOf is the first running member that is not leader.
func followerOf(ms []*member, leader *member) *member {
	for _, m := range running(ms) {
		if m != leader {
			return m
		}
	}
	return nil
}

func leaderOf(t testing.TB, ms []*member) *member {
	t.Helper()
	var leader *member
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		for _, m := range running(ms) {
			if m.IsLeader() {
				leader = m
				return nil
			}
		}
		return errors.New("no leader among running members")
	})
	return leader
}

// proposeKeys proposes key=value for each key on node m, concurrently,
// and checks each result.
func proposeKeys(t testing.TB, m *member, keys ...string) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(keys))
	for _, k := range keys {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			v, err := m.Propose(ctx, cmdPut, []byte(k+"=v"+k))
			// A leader change on a starved test machine (CI under -race)
			// refuses a proposal or leaves it unknown: a put is
			// idempotent, so it is proposed again, as a client would.
			for err != nil && errors.Is(err, wire.ErrUnavailable) && ctx.Err() == nil {
				time.Sleep(50 * time.Millisecond)
				v, err = m.Propose(ctx, cmdPut, []byte(k+"=v"+k))
			}
			if err != nil {
				errs <- fmt.Errorf("propose %s on %s: %w", k, m.name, err)
				return
			}
			if v != "ok:"+k {
				errs <- fmt.Errorf("propose %s on %s: value %v", k, m.name, v)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// waitKeys waits until every running member's FSM has every key.
func waitKeys(t testing.TB, ms []*member, keys ...string) {
	t.Helper()
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		for _, m := range running(ms) {
			for _, k := range keys {
				if v, err := getKey(m.db, "r/test/"+k); err != nil || v != "v"+k {
					return fmt.Errorf("%s: %s = %q, %v", m.name, k, v, err)
				}
			}
		}
		return nil
	})
}

func keyList(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return out
}

func TestClusterFormsAndProposesOnEveryNode(t *testing.T) {
	ms := startCluster(t, 3)
	leader := leaderOf(t, ms)
	var all []string
	for _, m := range ms {
		keys := keyList(m.name+"-", 50)
		proposeKeys(t, m, keys...)
		all = append(all, keys...)
	}
	waitKeys(t, ms, all...)

	// Handler errors come back on a follower from its own apply.
	for _, m := range ms {
		if m == leader {
			continue
		}
		if _, err := m.Propose(context.Background(), cmdReject, []byte("x")); !errors.Is(err, errRejected) {
			t.Errorf("reject on follower %s: %v", m.name, err)
		}
		// And through ProposeAsync, forwarded to the leader.
		if v, err := m.ProposeAsync(context.Background(), cmdPut, []byte("async-"+m.name+"=v"))(context.Background()); err != nil || v != "ok:async-"+m.name {
			t.Errorf("async put on follower %s: %v, %v", m.name, v, err)
		}
		// Bad input is refused on the follower before it leaves the node.
		if _, err := m.Propose(context.Background(), cmdPut, make([]byte, MaxCommandSize+1)); !errors.Is(err, ErrTooLarge) {
			t.Errorf("oversized on follower: %v", err)
		}
	}
	// Machine numbers are assigned through the log, one per node, from
	// followers too.
	nums := map[uint16]string{}
	for _, m := range ms {
		num, err := m.MachineNumber(context.Background())
		if err != nil {
			t.Fatalf("MachineNumber on %s: %v", m.name, err)
		}
		if other, dup := nums[num]; dup {
			t.Fatalf("%s and %s share machine number %d", m.name, other, num)
		}
		nums[num] = m.name
	}
	// The leader knows its followers' lag (whichever leads now: a starved
	// CI machine may have moved leadership meanwhile); every node knows
	// the members.
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		var now *member
		for _, m := range ms {
			if m.IsLeader() {
				now = m
			}
		}
		if now == nil {
			return fmt.Errorf("no leader")
		}
		s := now.Stats()
		for _, mb := range s.Members {
			if mb.Lag < 0 {
				return fmt.Errorf("lag of %s unknown: %+v", mb.Name, s.Members)
			}
		}
		return nil
	})
	for _, m := range ms {
		s := m.Stats()
		names := []string{}
		for _, mb := range s.Members {
			names = append(names, mb.Name)
			if mb.Leader != (mb.Name == leader.name) {
				t.Errorf("%s: leader flag of %s = %v", m.name, mb.Name, mb.Leader)
			}
			if mb.Name == m.name && mb.Addr != m.addr {
				t.Errorf("%s: own address %s, want %s", m.name, mb.Addr, m.addr)
			}
		}
		if !slices.Equal(names, []string{"n1", "n2", "n3"}) {
			t.Errorf("%s: members %v", m.name, names)
		}
	}
}

func TestClusterGrowsThroughAFollower(t *testing.T) {
	ms := startCluster(t, 3)
	leader := leaderOf(t, ms)
	follower := followerOf(ms, leader)
	proposeKeys(t, leader, keyList("before-", 20)...)
	for _, name := range []string{"n4", "n5"} {
		m := startMember(t, name, func(c *Config) { c.Join = []string{follower.addr} })
		ms = append(ms, m)
		waitVoters(t, ms, len(ms))
	}
	proposeKeys(t, ms[4], keyList("n5-", 20)...)
	proposeKeys(t, ms[3], keyList("n4-", 20)...)
	waitKeys(t, ms, append(append(keyList("before-", 20), keyList("n5-", 20)...), keyList("n4-", 20)...)...)

	// Joining again is a no-op; a name clash on an address is refused.
	// (Asked again while the answer is "not the leader": a starved CI
	// machine may be electing one, and a joining node asks again too.)
	join := func(args *JoinArgs, want string) {
		t.Helper()
		checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
			var r ChangeReply
			err := follower.Call(context.Background(), follower.addr, "Cluster.Join", args, &r)
			if err != nil || r.Code != want {
				return fmt.Errorf("join %+v: %v %+v, want code %q", args, err, r, want)
			}
			return nil
		})
	}
	join(&JoinArgs{Name: "n4", Addr: ms[3].addr}, "")
	join(&JoinArgs{Name: "imposter", Addr: ms[3].addr}, codeInvalid)
	join(&JoinArgs{Name: "", Addr: "x"}, codeInvalid)
	waitVoters(t, ms, 5)
}

func TestLeaderFailoverAndCatchUp(t *testing.T) {
	ms := startCluster(t, 3)
	old := leaderOf(t, ms)
	proposeKeys(t, old, keyList("a-", 20)...)
	old.stop(t)

	survivors := running(ms)
	start := time.Now()
	leader := leaderOf(t, ms)
	t.Logf("new leader %s after %v", leader.name, time.Since(start))
	// Both survivors can propose (the follower forwards to the new leader).
	for _, m := range survivors {
		proposeKeys(t, m, keyList("b-"+m.name+"-", 20)...)
	}

	// The old leader comes back on its data dir and catches up.
	old.restart(t)
	want := keyList("a-", 20)
	for _, m := range survivors {
		want = append(want, keyList("b-"+m.name+"-", 20)...)
	}
	waitKeys(t, ms, want...)
	proposeKeys(t, old, "c-after-restart")
	waitKeys(t, ms, "c-after-restart")
}

func TestPartitionedFollowerRefuses(t *testing.T) {
	ms := startCluster(t, 3)
	leader := leaderOf(t, ms)
	var lone *member
	for _, m := range ms {
		if m != leader && lone == nil {
			lone = m
			continue
		}
	}
	for _, m := range ms {
		if m != lone {
			m.stop(t)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := lone.Propose(ctx, cmdPut, []byte("lost=1"))
	if !errors.Is(err, wire.ErrUnavailable) {
		t.Fatalf("Propose without quorum: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Propose took %v, longer than its ctx", d)
	}
	if _, err := getKey(lone.db, "r/test/lost"); err == nil {
		t.Fatal("a refused proposal was applied")
	}
}

func TestLeaveAndRemove(t *testing.T) {
	ms := startCluster(t, 3)
	ms = append(ms, startMember(t, "n4", func(c *Config) { c.Join = []string{ms[0].addr} }))
	waitVoters(t, ms, 4)

	// The leader leaves gracefully: leadership moves first.
	old := leaderOf(t, ms)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := old.Leave(ctx); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	old.stop(t)
	waitVoters(t, ms, 3)
	// (Leave on the stopped node is not checked: it may have stopped before
	// applying its own removal, and then it cannot know it left.)

	// A follower dies; another follower removes it (sent to the leader).
	leader := leaderOf(t, ms)
	var dead, asker *member
	for _, m := range running(ms) {
		switch {
		case m == leader:
		case dead == nil:
			dead = m
		default:
			asker = m
		}
	}
	dead.stop(t)
	if err := asker.Remove(ctx, dead.name); err != nil {
		t.Fatalf("Remove %s: %v", dead.name, err)
	}
	waitVoters(t, ms, 2)
	if err := asker.Remove(ctx, "nobody"); !errors.Is(err, ErrUnknownNode) || !errors.Is(err, wire.ErrNotFound) {
		t.Fatalf("Remove of an unknown node: %v", err)
	}
	proposeKeys(t, asker, "after-remove")
	waitKeys(t, ms, "after-remove")

	// The node that left comes back when restarted with Join (its data
	// dir kept) and catches up.
	old.restartJoining(t, asker.addr)
	waitVoters(t, ms, 3)
	waitKeys(t, ms, "after-remove")
}

func TestSingleNodeGrowsToThree(t *testing.T) {
	n1 := startMember(t, "n1", func(c *Config) { c.Bootstrap = true })
	waitReady(t, n1.Raft)
	proposeKeys(t, n1, keyList("alone-", 30)...)
	if err := n1.Leave(context.Background()); !errors.Is(err, ErrLastVoter) {
		t.Fatalf("Leave of the only voter: %v", err)
	}
	ms := []*member{n1}
	for _, name := range []string{"n2", "n3"} {
		ms = append(ms, startMember(t, name, func(c *Config) { c.Join = []string{n1.addr} }))
		waitVoters(t, ms, len(ms))
	}
	waitKeys(t, ms, keyList("alone-", 30)...)
	// It is a real three-voter cluster now: it survives losing n1.
	n1.stop(t)
	leaderOf(t, ms)
	proposeKeys(t, ms[1], "without-n1")
	proposeKeys(t, ms[2], "without-n1-too")
	waitKeys(t, ms, "without-n1", "without-n1-too")
}

func TestBootstrapExpectJoinsAnExistingCluster(t *testing.T) {
	ms := startCluster(t, 3)
	proposeKeys(t, ms[1], "old")
	// A late founder: its peer is in a cluster already, so it joins
	// instead of bootstrapping a second one.
	late := startMember(t, "n4", func(c *Config) {
		c.BootstrapExpect = 3
		c.Join = []string{ms[2].addr}
	})
	ms = append(ms, late)
	waitVoters(t, ms, 4) // one leader and four voters seen by all: one cluster
	waitKeys(t, ms, "old")
	// Followers do not know the lag; they say so.
	for _, mb := range late.Stats().Members {
		if !late.IsLeader() && mb.Lag != -1 {
			t.Errorf("follower reports lag %d for %s", mb.Lag, mb.Name)
		}
	}
}

func TestConfigMembership(t *testing.T) {
	for name, tweak := range map[string]func(*Config){
		"negative expect": func(c *Config) { c.BootstrapExpect = -1 },
		"bad join":        func(c *Config) { c.Join = []string{"no-port"} },
	} {
		cfg := fastConfig(t, nodeOpts{dataDir: t.TempDir(), tweak: tweak})
		f := fsmFor(t)
		if n, err := New(cfg, f); err == nil {
			t.Errorf("%s: New succeeded: %s", name, n.Addr())
		}
	}
}

// The member list is announced on change: a follower that watches
// MembersChanged learns of a joining node without polling, and of a new
// leader.
func TestMembersChangedAnnouncesJoinsAndLeaders(t *testing.T) {
	ms := startCluster(t, 2)
	leader := leaderOf(t, ms)
	follower := followerOf(ms, leader)
	if n := len(follower.Members()); n != 2 {
		t.Fatalf("members before the join: %d", n)
	}
	// The follower may hear of its leader (an observation that fires
	// MembersChanged) a moment after the cluster formed: once that has
	// settled, nothing fires while nothing changes. A channel that keeps
	// firing fails this after 10 s.
	var changed <-chan struct{}
	checkFor(t, 10*time.Second, time.Millisecond, func() error {
		changed = follower.MembersChanged()
		select {
		case <-changed:
			return errors.New("MembersChanged fired with nothing changed")
		case <-time.After(200 * time.Millisecond):
			return nil
		}
	})
	ms = append(ms, startMember(t, "n3", func(c *Config) { c.Join = []string{follower.addr} }))
	select {
	case <-changed:
	case <-time.After(20 * time.Second):
		t.Fatal("MembersChanged did not fire when n3 joined")
	}
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := len(follower.Members()); n != 3 {
			return fmt.Errorf("follower sees %d members", n)
		}
		return nil
	})

	changed = follower.MembersChanged()
	leader.stop(t)
	select {
	case <-changed:
	case <-time.After(20 * time.Second):
		t.Fatal("MembersChanged did not fire when the leader went away")
	}
}

// Followers hear of commits without CommitTimeout: with it set to an
// hour, a follower still applies what the leader committed, and a
// proposal made on a follower (which waits for its own FSM) returns.
// Only the leader's announcements (announce.go) can make that happen.
func TestCommitsAreAnnouncedToFollowers(t *testing.T) {
	ms := startClusterWith(t, 3, func(c *Config) { c.CommitTimeout = time.Hour })
	leader := leaderOf(t, ms)
	follower := followerOf(ms, leader)
	proposeKeys(t, leader, "on-leader")
	waitKeys(t, ms, "on-leader")
	proposeKeys(t, follower, "on-follower")
	waitKeys(t, ms, "on-follower")
	barriers, _ := testutil.MetricValue(t, leader.reg, "edgechat_raft_commit_announcements_total", nil)
	notices, _ := testutil.MetricValue(t, leader.reg, "edgechat_raft_commit_notices_total", map[string]string{"result": "taken"})
	if barriers+notices < 1 {
		t.Errorf("announcements on the leader: %v barriers, %v notices, want at least 1", barriers, notices)
	}
}

// A single node has no follower to tell of its commits: it appends no
// announcement barriers (each would cost a log fsync that the next
// proposal waits behind).
func TestSingleNodeAppendsNoAnnouncements(t *testing.T) {
	ms := startCluster(t, 1)
	for i := 0; i < 5; i++ {
		proposeKeys(t, ms[0], fmt.Sprintf("alone-%d", i))
	}
	waitKeys(t, ms, "alone-4")
	// As a forwarded proposal would ask (at once, no delay to wait out);
	// then wait until no announcer runs before reading the counter.
	ms[0].announceCommit(true)
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		ms[0].announcer.mu.Lock()
		defer ms[0].announcer.mu.Unlock()
		if ms[0].announcer.running {
			return errors.New("announcer still running")
		}
		return nil
	})
	if got, _ := testutil.MetricValue(t, ms[0].reg, "edgechat_raft_commit_announcements_total", nil); got != 0 {
		t.Errorf("announcements on a single node = %v, want 0", got)
	}
}

// A follower that comes back under load is fed to the end of the log
// once the load stops. After its absence Raft retries it with a growing
// backoff, catches it up to the index the leader had when that retry
// began, then pipelines the rest only as new entries come; with
// CommitTimeout an hour, nothing but the leader's catch-up (catchup.go)
// sends it what was appended meanwhile. (The multi-process SIGKILL test
// in cmd/edgechat caught this: a restarted node stayed 1,000 entries
// behind.)
func TestLeaderFeedsAFollowerLeftBehindWhenLoadStops(t *testing.T) {
	ms := startClusterWith(t, 3, func(c *Config) { c.CommitTimeout = time.Hour })
	leader := leaderOf(t, ms)
	follower := followerOf(ms, leader)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		keys []string
		done = make(chan struct{})
	)
	for p := range 32 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				k := fmt.Sprintf("k-%d-%d", p, i)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := leader.Propose(ctx, cmdPut, []byte(k+"=v"+k))
				cancel()
				if errors.Is(err, wire.ErrUnavailable) {
					// Leadership lost mid-commit on a loaded machine: the
					// outcome is unknown, so the key is not expected.
					continue
				}
				if err != nil {
					t.Errorf("propose %s: %v", k, err)
					return
				}
				mu.Lock()
				keys = append(keys, k)
				mu.Unlock()
			}
		})
	}
	follower.stop(t)
	time.Sleep(3 * time.Second) // down under load: Raft's retry backoff grows
	follower.restart(t)
	time.Sleep(time.Second) // load while it catches up
	close(done)
	wg.Wait()
	waitKeys(t, ms, keys...)
}

// A member that comes back at another address (its data dir kept) with
// Join has its address updated; the refusal of a known name at a new
// address is only for a name whose member still answers at its own.
func TestAMemberThatMovedRejoinsAtItsNewAddress(t *testing.T) {
	ms := startCluster(t, 3)
	moved := ms[2]
	if moved == leaderOf(t, ms) {
		moved = ms[1]
	}
	oldAddr := moved.addr
	moved.stop(t)
	moved.start(t, "127.0.0.1:0", func(c *Config) { c.Join = []string{ms[0].addr} })
	if moved.addr == oldAddr {
		t.Fatalf("restarted at the same address %s", oldAddr)
	}
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		for _, mb := range ms[0].Stats().Members {
			if mb.Name == moved.name && mb.Addr != moved.addr {
				return fmt.Errorf("%s listed at %s, want its new address %s", mb.Name, mb.Addr, moved.addr)
			}
		}
		return nil
	})
	waitVoters(t, ms, 3)
}

// A member that leaves (or is removed) while another voter is down must
// not take the cluster's quorum with it: of three voters with one dead,
// the two left would be the leader and the dead one, and the removal
// itself could not commit (Raft counts the new configuration at once),
// nor anything after it, until the dead one came back. The change is
// refused, nothing is changed, and the cluster keeps committing.
func TestLeaveRefusedWhenTheRestWouldHaveNoLiveMajority(t *testing.T) {
	ms := startCluster(t, 3)
	leader := leaderOf(t, ms)
	var dead, leaving *member
	for _, m := range ms {
		switch {
		case m == leader:
		case dead == nil:
			dead = m
		default:
			leaving = m
		}
	}
	dead.stop(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := leaving.Leave(ctx)
	if !errors.Is(err, wire.ErrUnavailable) {
		t.Errorf("leave while the only other follower is down: %v, want ErrUnavailable", err)
	}
	if got := len(leader.Members()); got != 3 {
		t.Errorf("leader's configuration has %d members after the refused leave, want 3", got)
	}
	pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
	defer pcancel()
	if _, err := leader.Propose(pctx, cmdPut, []byte("after=vafter")); err != nil {
		t.Fatalf("the cluster cannot commit after the leave: %v", err)
	}
	// Removing the dead one is fine: the two left are both up.
	if err := leaving.Remove(ctx, dead.name); err != nil {
		t.Fatalf("remove the dead member: %v", err)
	}
	waitVoters(t, ms, 2)
	proposeKeys(t, leaving, "after-remove")
	waitKeys(t, ms, "after-remove")
}

// A node that joins is not counted for the quorum before it has caught
// up: growing a single node to two, the new node must first load the
// whole state (a snapshot, when the log was compacted), and as a voter
// meanwhile it would hold every commit of the cluster (two voters need
// both) for as long as that takes, or for good if it died doing it. It
// joins as a non-voter and is made a voter once its log has caught up.
func TestClusterCommitsWhileAJoinerCatchesUp(t *testing.T) {
	compact := func(c *Config) {
		c.TrailingLogs = 4
		c.SnapshotThreshold = 1 << 20
		c.LogSegmentSize = 2 << 10
	}
	n1 := startMember(t, "n1", func(c *Config) { c.Bootstrap = true; compact(c) })
	waitReady(t, n1.Raft)
	keys := keyList("early-", 100)
	for _, k := range keys {
		proposeKeys(t, n1, k)
	}
	if err := n1.Snapshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	if first, err := n1.wal.FirstIndex(); err != nil || first <= 1 {
		t.Fatalf("log not compacted: first index %d, %v", first, err)
	}

	// n2 gets the state as a snapshot, and its restore is held.
	gate := make(chan struct{})
	var release sync.Once
	n2 := &member{name: "n2", dir: t.TempDir()}
	n2.testNode = startNode(t, nodeOpts{dataDir: n2.dir,
		beforeNew: func(f *fsm.FSM) { f.OnRestore(func() { <-gate }) },
		tweak: func(c *Config) {
			c.NodeName, c.BindAddr, c.Join = "n2", "127.0.0.1:0", []string{n1.addr}
			multiTimeouts(c)
			compact(c)
		}})
	n2.addr = n2.Addr()
	t.Cleanup(func() { release.Do(func() { close(gate) }) }) // before n2 stops
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		for _, m := range n1.Members() {
			if m.Name == "n2" {
				return nil
			}
		}
		return errors.New("n2 not in n1's configuration yet")
	})

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := n1.Propose(ctx, cmdPut, []byte("during=vduring")); err != nil {
		t.Fatalf("n1 cannot commit while n2 loads the state: %v (members %+v)", err, n1.Members())
	}

	release.Do(func() { close(gate) })
	ms := []*member{n1, n2}
	waitVoters(t, ms, 2)
	waitKeys(t, ms, append(keys, "during")...)
}

// A non-voter that does not ask to join again (a node of an earlier
// version stops asking once it is in the configuration; one restarted
// without Join never asks) is still made a voter once it has caught up:
// the leader goes on waiting after the join call that timed out.
func TestLeaderPromotesANonvoterThatCaughtUpLater(t *testing.T) {
	compact := func(c *Config) {
		c.TrailingLogs = 4
		c.SnapshotThreshold = 1 << 20
		c.LogSegmentSize = 2 << 10
	}
	n1 := startMember(t, "n1", func(c *Config) { c.Bootstrap = true; compact(c) })
	waitReady(t, n1.Raft)
	for _, k := range keyList("early-", 100) {
		proposeKeys(t, n1, k)
	}
	if err := n1.Snapshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	if first, err := n1.wal.FirstIndex(); err != nil || first <= 1 {
		t.Fatalf("log not compacted: first index %d, %v", first, err)
	}
	gate := make(chan struct{})
	var release sync.Once
	n2 := &member{name: "n2", dir: t.TempDir()}
	n2.testNode = startNode(t, nodeOpts{dataDir: n2.dir, // no Join: it never asks
		beforeNew: func(f *fsm.FSM) { f.OnRestore(func() { <-gate }) },
		tweak: func(c *Config) {
			c.NodeName, c.BindAddr = "n2", "127.0.0.1:0"
			multiTimeouts(c)
			compact(c)
		}})
	n2.addr = n2.Addr()
	t.Cleanup(func() { release.Do(func() { close(gate) }) })

	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	code, msg := n1.join(ctx, &JoinArgs{Name: "n2", Addr: n2.addr})
	cancel()
	if code != codeUnavailable {
		t.Fatalf("join of a node still loading the state: %q %s, want %q", code, msg, codeUnavailable)
	}
	release.Do(func() { close(gate) })
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		for _, m := range n1.Members() {
			if m.Name == "n2" && m.Suffrage == "Voter" {
				return nil
			}
		}
		return fmt.Errorf("n2 not a voter: %+v", n1.Members())
	})
}

// A joiner still catching up when the leader that added it lost the
// leadership is made a voter by the next leader: it used to stay a
// non-voter for good (no node promoted it, and a node restarted without
// Join never asks again), so the cluster had one voter fewer than the
// operator added.
func TestNewLeaderPromotesANonvoterItInherited(t *testing.T) {
	compact := func(c *Config) {
		c.TrailingLogs = 4
		c.SnapshotThreshold = 1 << 20
		c.LogSegmentSize = 2 << 10
	}
	ms := startClusterWith(t, 3, compact)
	leader := waitVoters(t, ms, 3)
	for _, k := range keyList("early-", 100) {
		proposeKeys(t, leader, k)
	}
	// Every member compacts its log, so that whichever leads (leadership
	// may move on a loaded machine) can only send n4 the snapshot.
	for _, m := range ms {
		if err := m.Snapshot(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	gate := make(chan struct{})
	var release sync.Once
	n4 := &member{name: "n4", dir: t.TempDir()}
	n4.testNode = startNode(t, nodeOpts{dataDir: n4.dir, // no Join: it never asks
		beforeNew: func(f *fsm.FSM) { f.OnRestore(func() { <-gate }) },
		tweak: func(c *Config) {
			c.NodeName, c.BindAddr = "n4", "127.0.0.1:0"
			multiTimeouts(c)
			compact(c)
		}})
	n4.addr = n4.Addr()
	t.Cleanup(func() { release.Do(func() { close(gate) }) })

	// The join waits for n4 to catch up, which it cannot: unavailable.
	// A leader change in the middle (a loaded machine) fails it otherwise
	// ("maybe": it may have committed): ask again, as a joiner does.
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		code, msg := leaderOf(t, ms).join(ctx, &JoinArgs{Name: "n4", Addr: n4.addr})
		cancel()
		switch code {
		case codeUnavailable:
			return nil
		case codeMaybe, codeNotLeader:
			return fmt.Errorf("join: %q %s", code, msg)
		}
		t.Fatalf("join of a node still loading the state: %q %s, want %q", code, msg, codeUnavailable)
		return nil
	})
	// Leadership may also move on its own (a loaded machine): any leader
	// but the one that added n4 will do.
	adder := leaderOf(t, ms)
	var next *member
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		for _, m := range ms {
			if m != adder && m.IsLeader() {
				next = m
				return nil
			}
		}
		if adder.IsLeader() {
			if err := adder.raft.LeadershipTransfer().Error(); err != nil && !errors.Is(err, raft.ErrNotLeader) {
				return fmt.Errorf("leadership transfer: %w", err)
			}
		}
		return errors.New("no new leader yet")
	})
	release.Do(func() { close(gate) })
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		for _, m := range next.Members() {
			if m.Name == "n4" && m.Suffrage == "Voter" {
				return nil
			}
		}
		return fmt.Errorf("n4 not a voter: %+v", next.Members())
	})
}
