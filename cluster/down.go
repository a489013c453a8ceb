package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/wire"
)

// Members that are down.
//
// A member that crashed or is cut off stays in the Raft configuration
// until an operator removes it. Raft fails over without it in about a
// second, but what is placed on members by hashing (the presence home of
// a user) would stay on it. So every member carries a Down flag that
// every node reads alike, from the replicated state:
//
//   - The leader probes every other member (Cluster.Info, which every
//     version serves) every probeEvery. One that has not answered for
//     DownAfter is marked down (wire.CmdNodeDown, r/sys/down/{name});
//     once it has answered without a failure for upAfter (hysteresis: a
//     flapping link does not move homes back and forth at every probe)
//     the mark is cleared. A new leader starts counting from its
//     election (so the leader that died is marked down by the next one,
//     DownAfter after it took over); marks of nodes that are no longer
//     members are cleared.
//   - A node that has not heard from a leader for DownAfter (it is cut
//     off, or it has just started and not caught up yet) reports itself
//     down in its own view when the other voters up are a quorum: it
//     cannot learn the mark the others commit about it, and must stop
//     acting as if it were up (a presence home) as they stop counting on
//     it. When they are not a quorum nobody can commit a mark, and it
//     stays up in its own view (a survivor keeps what it homes).
//   - Its clients are another matter (CutOff): the marks it applied are
//     as old as the last entry it got, and a member they name down may
//     have come back since and formed a quorum with the others without
//     it. So a node that has not heard from a leader for DownAfter
//     counts itself cut off, and sends its clients to another node,
//     whenever the other voters could be a quorum without it, whatever
//     its marks say (a survivor that saw the others marked down one
//     after the other cannot tell that it is one, and commits nothing).
//
// A node of an earlier version skips CmdNodeDown (unknown types are
// skipped) and computes over all members, as before: its view differs
// from the others' only while a member is down.

// DefaultDownAfter is Config.DownAfter's default (at least four Raft
// heartbeat timeouts, so that an election never counts as an outage).
const DefaultDownAfter = 3 * time.Second

const downKeyPrefix = "r/sys/down/"

func downKey(name string) []byte { return []byte(downKeyPrefix + name) }

// downCmd is the payload of wire.CmdNodeDown: 1 (down) or 0 (up again),
// then the node name.
func downCmd(name string, down bool) []byte {
	b := []byte{0}
	if down {
		b[0] = 1
	}
	return append(b, name...)
}

// nodeDownResult tells the node's watchers once the mark is visible.
type nodeDownResult struct{ notify func() }

func (r nodeDownResult) AfterCommit() { r.notify() }

// applyNodeDown is the FSM handler of wire.CmdNodeDown.
func (n *Raft) applyNodeDown(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	if len(payload) < 2 || payload[0] > 1 || len(payload)-1 > maxNodeName {
		return nil, fmt.Errorf("%w: malformed node-down command", wire.ErrInvalid)
	}
	key := downKey(string(payload[1:]))
	var err error
	if payload[0] == 1 {
		err = tx.Set(key, nil)
	} else {
		err = tx.Delete(key)
	}
	if err != nil {
		return nil, err
	}
	return nodeDownResult{notify: n.memberWatch.notify}, nil
}

// MarkedDown reports whether member name is marked down in this node's
// replicated state (it has not answered the leader for DownAfter): it
// gets nothing committed, so none of its clients does. One read.
func (n *Raft) MarkedDown(name string) bool {
	found := false
	err := n.fsm.DB().View(func(tx *badger.Txn) error {
		_, err := tx.Get(downKey(name))
		found = err == nil
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		return err
	})
	if err != nil && !errors.Is(err, badger.ErrDBClosed) {
		n.log.Warn("cluster: cannot read a member's down mark", "member", name, "err", err)
	}
	return found
}

// downMarks are the members marked down in this node's replicated state.
func (n *Raft) downMarks() map[string]bool {
	marks := map[string]bool{}
	err := n.fsm.DB().View(func(tx *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		opts.Prefix = []byte(downKeyPrefix)
		it := tx.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			marks[strings.TrimPrefix(string(it.Item().Key()), downKeyPrefix)] = true
		}
		return nil
	})
	if err != nil && !errors.Is(err, badger.ErrDBClosed) {
		n.log.Warn("cluster: cannot read the members marked down", "err", err)
	}
	return marks
}

// probeEvery is how often the leader probes the members, and each
// probe's timeout.
func (n *Raft) probeEvery() time.Duration {
	return min(max(n.cfg.DownAfter/4, 20*time.Millisecond), time.Second)
}

// upAfter is how long a member marked down must answer every probe
// before its mark is cleared.
func (n *Raft) upAfter() time.Duration { return n.cfg.DownAfter / 2 }

// cutOff reports whether this node counts itself down: it is a member,
// not the leader, has not heard from a leader for DownAfter, and the
// voters other than itself not marked down are a quorum (they may have
// a leader that marked this node down; when they are not, nobody can
// commit a mark, and nothing moved: a lone survivor of a cluster that
// lost its quorum, or of two nodes, keeps its users). With no marks
// (nil) it is CutOff's state: the other voters could be a quorum.
func (n *Raft) cutOff(marks map[string]bool) bool {
	if n.cfg.DownAfter <= 0 || n.IsLeader() {
		return false
	}
	member, voters, othersUp := false, 0, 0
	for _, s := range n.configuration() {
		self := s.ID == raft.ServerID(n.cfg.NodeName)
		member = member || self
		if s.Suffrage != raft.Voter {
			continue
		}
		voters++
		if !self && !marks[string(s.ID)] {
			othersUp++
		}
	}
	if !member || othersUp < voters/2+1 {
		return false
	}
	// A leader that just stepped down heard from no leader while it
	// led: count from when it last led.
	last := n.raft.LastContact()
	if led := time.Unix(0, n.lastLed.Load()); led.After(last) {
		last = led
	}
	return time.Since(last) >= n.cfg.DownAfter
}

// probeState is the leader's record of one member's answers.
type probeState struct {
	lastOK  time.Time // last answer (the leader's election when none yet)
	okSince time.Time // first answer of the current run of answers; zero after a failure
}

// watchDown runs until ctx ends: as leader it probes the members and
// marks them down or up; on every node it announces a change of its own
// cut-off state (MembersChanged).
func (n *Raft) watchDown(ctx context.Context) {
	if n.cfg.DownAfter <= 0 {
		return
	}
	var self sync.WaitGroup
	defer self.Wait()
	self.Go(func() { n.watchSelfDown(ctx) }) // not held up by the probes' commits
	t := time.NewTicker(n.probeEvery())
	defer t.Stop()
	var probes map[string]*probeState // nil while not the leader
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !n.IsLeader() {
			probes = nil
			continue
		}
		if probes == nil {
			probes = map[string]*probeState{}
		}
		n.probeMembers(ctx, probes)
	}
}

// CutOff reports whether this node counts itself cut off from its
// cluster, as last announced (a change is announced on MembersChanged):
// it is a member, not the leader, has not heard from a leader for
// DownAfter, and the voters other than itself are a quorum, whatever
// members its marks say are down (see the top of this file): a quorum
// may commit without it, so what it has reaches its clients no more.
// It implies nothing of the view Members gives (cutOff with the marks).
func (n *Raft) CutOff() bool { return n.cutAway.Load() }

// CutOffNow is CutOff unless a leader was heard from (or this node led)
// within DownAfter: what was announced lags a leader heard again by up
// to a probe interval, and a node counts itself cut off from its start
// (New: no leader heard yet) until its first tick after it finds one.
// It reads no state (no marks): cheap enough for every CONNECT.
func (n *Raft) CutOffNow() bool {
	if !n.cutAway.Load() || n.IsLeader() {
		return false
	}
	last := n.raft.LastContact()
	if led := time.Unix(0, n.lastLed.Load()); led.After(last) {
		last = led
	}
	return time.Since(last) >= n.cfg.DownAfter
}

// watchSelfDown keeps selfDown, the node's own cut-off state that
// Members reports, and cutAway (CutOff), and announces every change of
// either (MembersChanged).
// Members reports what was announced, never a state computed at the
// call: a reader that saw this node down (it read its members while
// the node started, or between a tick and the next) is told when that
// ends, whenever it ends.
func (n *Raft) watchSelfDown(ctx context.Context) {
	t := time.NewTicker(n.probeEvery())
	defer t.Stop()
	for {
		if n.IsLeader() {
			n.lastLed.Store(time.Now().UnixNano())
		}
		changed := false
		if c := n.cutOff(n.downMarks()); c != n.selfDown.Load() {
			n.selfDown.Store(c)
			if c {
				n.log.Warn("cluster: no word from a leader; this node counts itself down", "for", n.cfg.DownAfter)
			} else {
				n.log.Info("cluster: a leader is heard again; this node counts itself up")
			}
			changed = true
		}
		// Down (with the marks) implies cut off (without them).
		if c := n.cutOff(nil); c != n.cutAway.Load() {
			n.cutAway.Store(c)
			changed = true
		}
		if changed {
			n.memberWatch.notify()
		}
		if n.cutAway.Load() {
			n.confirmMemberEvery(ctx, confirmEvery)
		}
		if nm := n.NotAMember(); nm != n.notMember.Load() {
			n.notMember.Store(nm)
			n.memberWatch.notify()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// confirmEvery is how often a node cut off from its leader asks the
// members whether it still is one.
const confirmEvery = 10 * time.Second

// confirmMemberEvery asks the members, at most once every period and on a
// helper goroutine, whether this node is still one (confirmMember): a
// node removed while it was cut off (a partition; an operator removing a
// node taken for dead) is never sent the removal, and would otherwise
// wait for a leader for ever with its clients connected.
func (n *Raft) confirmMemberEvery(ctx context.Context, period time.Duration) {
	if n.removedAway.Load() || time.Since(time.Unix(0, n.askedAt.Load())) < period || !n.asking.CompareAndSwap(false, true) {
		return
	}
	n.askedAt.Store(time.Now().UnixNano())
	if !n.helpers.start(func() {
		defer n.asking.Store(false)
		n.confirmMember(ctx)
	}) {
		n.asking.Store(false)
	}
}

// confirmMember asks the members of this node's configuration, in turn,
// to confirm it (JoinArgs.Moved at its own address: a no-op for a
// member); one that answers that it is none marks it removed
// (removedAway, NotAMember) and announces it (MembersChanged).
func (n *Raft) confirmMember(ctx context.Context) {
	for _, addr := range n.peerAddrs() {
		cctx, cancel := context.WithTimeout(ctx, discoveryCallTimeout)
		var r ChangeReply
		err := n.Call(cctx, addr, clusterService+".Join", &JoinArgs{Name: n.cfg.NodeName, Addr: n.Addr(), Moved: true, FeatureLevel: n.cfg.FeatureLevel}, &r)
		cancel()
		if err != nil {
			continue // not reachable (yet): the next member, or the next period
		}
		switch err := codeErr(r.Code, r.Message); {
		case err == nil:
			return
		case errors.Is(err, ErrUnknownNode):
			n.removedAway.Store(true)
			n.log.Error("this node was removed from its cluster while it was cut off; start it with --join of a member to return",
				"node", n.cfg.NodeName, "err", err)
			n.memberWatch.notify()
			return
		}
	}
}

// probeMembers probes every other member once and commits the marks
// that change (see the top of this file).
func (n *Raft) probeMembers(ctx context.Context, probes map[string]*probeState) {
	servers := n.configuration()
	now := time.Now()
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	members := map[string]bool{}
	for _, s := range servers {
		name := string(s.ID)
		members[name] = true
		if name == n.cfg.NodeName {
			continue
		}
		p := probes[name]
		if p == nil {
			p = &probeState{lastOK: now}
			probes[name] = p
		}
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, n.probeEvery())
			defer cancel()
			var r InfoReply
			err := n.Call(cctx, string(s.Address), clusterService+".Info", &InfoArgs{}, &r)
			mu.Lock()
			defer mu.Unlock()
			if err != nil || r.Name != name {
				p.okSince = time.Time{}
				return
			}
			at := time.Now()
			p.lastOK = at
			if p.okSince.IsZero() {
				p.okSince = at
			}
		})
	}
	wg.Wait()
	for name := range probes {
		if !members[name] {
			delete(probes, name)
		}
	}
	marks := n.downMarks()
	now = time.Now()
	for name := range marks {
		p := probes[name]
		switch {
		case !members[name]:
			n.markDown(ctx, name, false, "no longer a member")
		case name == n.cfg.NodeName:
			n.markDown(ctx, name, false, "it leads") // a mark committed before it came back
		case p != nil && !p.okSince.IsZero() && now.Sub(p.okSince) >= n.upAfter():
			n.markDown(ctx, name, false, "it answers again")
		}
	}
	for name, p := range probes {
		if !marks[name] && now.Sub(p.lastOK) >= n.cfg.DownAfter {
			n.markDown(ctx, name, true, fmt.Sprintf("no answer for %v", now.Sub(p.lastOK).Round(time.Millisecond)))
		}
	}
}

// markDown commits a member's mark (down) or its clearing.
func (n *Raft) markDown(ctx context.Context, name string, down bool, why string) {
	cctx, cancel := context.WithTimeout(ctx, membershipTimeout)
	defer cancel()
	if _, err := n.Propose(cctx, wire.CmdNodeDown, downCmd(name, down)); err != nil {
		n.log.Warn("cluster: cannot commit a member's down mark", "member", name, "down", down, "err", err)
		return
	}
	if down {
		n.log.Warn("cluster: member marked down (still a member; what is placed on members moves to those that are up)", "member", name, "why", why)
	} else {
		n.log.Info("cluster: member no longer marked down", "member", name, "why", why)
	}
}

// downGauge counts the members down in this node's view.
func (n *Raft) downGauge() prometheus.GaugeFunc {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "edgechat_cluster_members_down",
		Help: "Members down in this node's view (still members; marked down by the leader after --node-down-after without an answer, or this node itself when it has not heard from a leader that long): the presence of the users they would home runs on the members that are up.",
	}, func() float64 {
		down := 0
		for _, m := range n.members() {
			if m.Down {
				down++
			}
		}
		return float64(down)
	})
}
