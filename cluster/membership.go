package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/edgechat/edgechat/cluster/featurelevel"
	"github.com/edgechat/edgechat/internal/backoff"
	"github.com/edgechat/edgechat/internal/peerrpc"
	"github.com/edgechat/edgechat/internal/wire"
)

// Membership: forming a cluster (BootstrapExpect), joining one (Join),
// leaving and removing members, and the member list in Stats. Every
// change of the Raft configuration is made by the leader; a request that
// reaches a follower is forwarded to the leader once.

// Sentinel errors of membership changes.
var (
	// ErrUnknownNode means the named node is not in the configuration.
	ErrUnknownNode = fmt.Errorf("cluster: no such member: %w", wire.ErrNotFound)
	// ErrNameInUse means a join was refused: a live member has the
	// joiner's node name at another address.
	ErrNameInUse = fmt.Errorf("cluster: join refused: %w", wire.ErrInvalid)
	// ErrOlderVersion means a join was refused: the joiner supports a
	// lower feature level than the cluster's (cluster/featurelevel).
	ErrOlderVersion = fmt.Errorf("cluster: join refused: %w", wire.ErrInvalid)
	// ErrArchiveStore means a join was refused: the joiner keeps sealed
	// message segments in another store than the leader
	// (Config.ArchiveStore).
	ErrArchiveStore = fmt.Errorf("cluster: join refused: %w", wire.ErrInvalid)
	// ErrLastVoter means the only voter cannot leave its own cluster or
	// be removed from it.
	ErrLastVoter = fmt.Errorf("cluster: the last voter cannot leave or be removed: %w", wire.ErrInvalid)
)

const (
	// membershipTimeout bounds one configuration change on the leader.
	membershipTimeout = 10 * time.Second
	// discoveryCallTimeout bounds one Info or Join call while forming.
	discoveryCallTimeout = 2 * time.Second
	// statusInterval is how long the leader reuses followers' answers
	// about their indexes (Stats' per-member lag); statusStale is when an
	// answer is too old to show.
	statusInterval = time.Second
	statusStale    = 3 * statusInterval
)

// Failure codes carried in replies of the Cluster RPC service.
const (
	codeNotLeader   = "not_leader"    // nothing done; ask the leader
	codeNoLeader    = "no_leader"     // nothing done; no leader known
	codeUnavailable = "unavailable"   // nothing done
	codeMaybe       = "maybe"         // the change may still commit
	codeInvalid     = "invalid"       // bad request; nothing done
	codeNotFound    = "not_found"     // no such member; nothing done
	codeNameInUse   = "name_in_use"   // a live member has the joiner's name; nothing done
	codeLastVoter   = "last_voter"    // the only voter cannot be removed; nothing done
	codeOlder       = "older_version" // the joiner supports a lower feature level than the cluster's; nothing done
	codeArchive     = "archive_store" // the joiner keeps sealed segments in another store than the leader; nothing done
)

// The argument and reply types of the node's own "Cluster" RPC service.
// They are exported for gob.
type (
	ApplyArgs struct {
		Data    []byte // an fsm.EncodeBatch entry
		Timeout time.Duration
		// Merge: the caller reads Offset, so the leader may pack the
		// batch into an entry with other commands. An older follower
		// does not send it and gets an entry of its own; an older leader
		// ignores it and answers Offset 0, Merged false.
		Merge bool
		// From, Epoch and Seq number a follower's batches so that the
		// leader hands them to its batcher in order (forwardorder.go);
		// an older leader ignores them, an older follower sends none.
		From            string
		Epoch, Seq, Low uint64
	}
	ApplyReply struct {
		Index         uint64
		Code, Message string
		// Offset is the position of the batch's first command in the
		// entry at Index (Merged: the leader packed it with others).
		Offset int
		Merged bool
	}
	InfoArgs struct {
		Name, Addr string // the caller
		Expect     int    // the caller's BootstrapExpect, 0 when it is not forming a cluster
	}
	InfoReply struct {
		Name, Addr string
		HasState   bool // in a cluster already (non-empty configuration)
		Expect     int
		Known      []PeerInfo // servers this node has discovered while forming
		Term       uint64
		LastIndex  uint64
		Applied    uint64
		// LastLogTerm is the term of the entry at LastIndex (0 from a
		// version before the vote guard asked: voteguard.go).
		LastLogTerm uint64
	}
	PeerInfo struct{ Name, Addr string }
	JoinArgs struct {
		Name, Addr string
		Forwarded  bool // sent by a follower to the leader; not forwarded again
		// Moved: a member restarted at another address without Join asks
		// to have its address updated; it is never added (one removed
		// meanwhile stays out: not_found).
		Moved bool
		// FeatureLevel is the highest cluster feature level the joiner
		// supports (Config.FeatureLevel); 0 from a version without levels.
		FeatureLevel uint32
		// ArchiveStore is where the joiner keeps sealed message segments
		// (Config.ArchiveStore); "" from an earlier version: not checked.
		ArchiveStore string
	}
	RemoveArgs struct {
		Name      string
		Forwarded bool
	}
	ChangeReply struct{ Code, Message string }
)

// clusterRPC is the node's own RPC service.
type clusterRPC struct{ n *Raft }

func (s *clusterRPC) methods() peerrpc.Methods {
	return peerrpc.Methods{
		"Apply":  peerrpc.Method(s.Apply),
		"Info":   peerrpc.Method(s.Info),
		"Join":   peerrpc.Method(s.Join),
		"Remove": peerrpc.Method(s.Remove),
		readIndexMethod: peerrpc.Method(func(a *ReadIndexArgs, r *ReadIndexReply) error {
			ctx, cancel := context.WithTimeout(s.n.stopCtx, applyTimeout)
			defer cancel()
			s.n.leaderReadIndex(ctx, r)
			return nil
		}),
	}
}

func (s *clusterRPC) Apply(a *ApplyArgs, r *ApplyReply) error { s.n.applyForwarded(a, r); return nil }
func (s *clusterRPC) Info(a *InfoArgs, r *InfoReply) error    { s.n.info(a, r); return nil }

func (s *clusterRPC) Join(a *JoinArgs, r *ChangeReply) error {
	ctx, cancel := context.WithTimeout(s.n.stopCtx, membershipTimeout)
	defer cancel()
	r.Code, r.Message = s.n.join(ctx, a)
	return nil
}

func (s *clusterRPC) Remove(a *RemoveArgs, r *ChangeReply) error {
	ctx, cancel := context.WithTimeout(s.n.stopCtx, membershipTimeout)
	defer cancel()
	r.Code, r.Message = s.n.remove(ctx, a)
	return nil
}

// codeErr turns a reply code into the error callers test for.
func codeErr(code, msg string) error {
	switch code {
	case "":
		return nil
	case codeNotFound:
		return fmt.Errorf("%w: %s", ErrUnknownNode, msg)
	case codeInvalid:
		return fmt.Errorf("cluster: %s: %w", msg, wire.ErrInvalid)
	case codeNameInUse:
		return fmt.Errorf("%w: %s", ErrNameInUse, msg)
	case codeOlder:
		return fmt.Errorf("%w: %s", ErrOlderVersion, msg)
	case codeArchive:
		return fmt.Errorf("%w: %s", ErrArchiveStore, msg)
	case codeLastVoter:
		return fmt.Errorf("%w: %s", ErrLastVoter, msg)
	case codeNotLeader:
		return fmt.Errorf("%w: %s", ErrNotLeader, msg)
	case codeNoLeader:
		return fmt.Errorf("%w: %s", ErrNoLeader, msg)
	case codeMaybe:
		return fmt.Errorf("%w: %s (the change may still commit)", wire.ErrUnavailable, msg)
	default:
		return fmt.Errorf("%w: %s", wire.ErrUnavailable, msg)
	}
}

// configuration returns the latest Raft configuration (possibly not yet
// committed); empty when Raft is shut down.
func (n *Raft) configuration() []raft.Server {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	return f.Configuration().Servers
}

// isNonvoter reports whether this node is in the configuration, but not
// as a voter (a joiner catching up).
func (n *Raft) isNonvoter() bool {
	return slices.ContainsFunc(n.configuration(), func(s raft.Server) bool {
		return s.ID == raft.ServerID(n.cfg.NodeName) && s.Suffrage != raft.Voter
	})
}

// NotAMember reports whether this node knows a configuration it is not
// in, or was told by the leader that it is none (removed while it was
// away: rejoin): it left the cluster or was removed, so no
// leader will ever take it back unless it asks again (started with Join).
// A node without Raft state (forming or joining) is not reported.
func (n *Raft) NotAMember() bool {
	if n.removedAway.Load() {
		return true // the leader said so (rejoin)
	}
	servers := n.configuration()
	return len(servers) > 0 && !slices.ContainsFunc(servers, func(s raft.Server) bool {
		return s.ID == raft.ServerID(n.cfg.NodeName)
	})
}

// isVoter reports whether this node is a voter of the configuration.
func (n *Raft) isVoter() bool {
	return slices.ContainsFunc(n.configuration(), func(s raft.Server) bool {
		return s.ID == raft.ServerID(n.cfg.NodeName) && s.Suffrage == raft.Voter
	})
}

// info answers a peer forming a cluster (and the leader's status poll).
func (n *Raft) info(a *InfoArgs, r *InfoReply) {
	r.Name, r.Addr = n.cfg.NodeName, n.Addr()
	r.HasState = len(n.configuration()) > 0
	r.Expect = n.cfg.BootstrapExpect
	r.Term, r.LastIndex, r.Applied = n.raft.CurrentTerm(), n.raft.LastIndex(), n.raft.AppliedIndex()
	r.LastLogTerm, _ = strconv.ParseUint(n.raft.Stats()["last_log_term"], 10, 64)
	n.disc.mu.Lock()
	defer n.disc.mu.Unlock()
	if !n.disc.active {
		return
	}
	if a.Expect > 0 && validMember(a.Name, a.Addr) == nil {
		n.disc.learn(n, a.Name, a.Addr)
	}
	for name, addr := range n.disc.known {
		r.Known = append(r.Known, PeerInfo{Name: name, Addr: addr})
	}
}

func validMember(name, addr string) error {
	if name == "" || len(name) > maxNodeName {
		return fmt.Errorf("node name must be 1..%d bytes", maxNodeName)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || port == "" || port == "0" {
		return fmt.Errorf("bad node address %q", addr)
	}
	return nil
}

// HoldJoins keeps this node, as leader, from adding members until
// release is called (idempotent): the raise of the feature level holds
// it from asking the members which level they support until the level
// committed, so that no member it did not ask joins meanwhile.
func (n *Raft) HoldJoins() (release func()) {
	n.joinMu.Lock()
	var once sync.Once
	return func() { once.Do(n.joinMu.Unlock) }
}

// join adds a node as a voter (a new one as a non-voter first, until it
// has caught up); idempotent for a known node.
func (n *Raft) join(ctx context.Context, a *JoinArgs) (code, msg string) {
	if err := validMember(a.Name, a.Addr); err != nil {
		return codeInvalid, err.Error()
	}
	if n.raft.State() != raft.Leader {
		if a.Forwarded {
			return codeNotLeader, "not the leader"
		}
		fwd := *a
		fwd.Forwarded = true
		return n.callLeader(ctx, "Join", &fwd)
	}
	// A member removed while it was away learns it first, whatever its
	// version (confirmMember asks so while it is cut off).
	if a.Moved && !slices.ContainsFunc(n.configuration(), func(s raft.Server) bool { return s.ID == raft.ServerID(a.Name) }) {
		return codeNotFound, a.Name + " is not a member (removed while it was away)"
	}
	// A node of a version older than the cluster's feature level would
	// apply the log by rules the members left behind (a name with a
	// joiner it refuses), and its state would part from theirs. The
	// check and the addition hold off a raise of the level (HoldJoins),
	// after the entries committed before are applied (a new leader may
	// not have applied a raise yet).
	release := n.HoldJoins()
	defer release()
	if err := n.Barrier(ctx); err != nil {
		return codeUnavailable, err.Error()
	}
	if level := featurelevel.Of(n.fsm.DB()); a.FeatureLevel < level {
		return codeOlder, fmt.Sprintf("node %s supports cluster feature level %d, below the cluster's %d: it runs an older version; upgrade it",
			a.Name, a.FeatureLevel, level)
	}
	// A node whose sealed segments live elsewhere than the leader's would
	// read those the cluster seals from where they are not (or, leading,
	// seal where the others do not read).
	// (A leader whose own store is the odd one, the others agreeing with
	// the joiner, does not refuse it.)
	if a.ArchiveStore != "" && n.cfg.ArchiveStore != "" && a.ArchiveStore != n.cfg.ArchiveStore &&
		(n.cfg.ArchiveStoreOdd == nil || !n.cfg.ArchiveStoreOdd(ctx, a.Name, a.ArchiveStore)) {
		return codeArchive, fmt.Sprintf("node %s keeps sealed message segments in %s, the cluster (its leader %s) in %s: every node of a cluster must use the same --archive-store (and, with s3, --s3-archive-bucket); start %s with the cluster's",
			a.Name, a.ArchiveStore, n.cfg.NodeName, n.cfg.ArchiveStore, a.Name)
	}
	for _, s := range n.configuration() {
		switch {
		case s.ID == raft.ServerID(a.Name) && s.Address == raft.ServerAddress(a.Addr) && s.Suffrage == raft.Voter:
			return "", "" // already a member
		case s.ID != raft.ServerID(a.Name) && s.Address == raft.ServerAddress(a.Addr):
			return codeInvalid, fmt.Sprintf("address %s is used by member %s (remove it first)", a.Addr, s.ID)
		case s.ID == raft.ServerID(a.Name) && s.Address != raft.ServerAddress(a.Addr) &&
			n.otherAnswersAs(ctx, a.Name, string(s.Address), a.Addr):
			// A known name at a new address is a member that moved, unless
			// the member still answers at its address: then the joiner is
			// another node given the same name (a copied config, the default
			// --node-id), and AddVoter would cut the live member out.
			return codeNameInUse, fmt.Sprintf("node name %s is in use by a live member at %s; give the node at %s its own --node-id",
				a.Name, s.Address, a.Addr)
		}
	}
	// A node new to the configuration (or one whose earlier join was
	// cut short) is first a non-voter, and a voter only once its log has
	// caught up: Raft counts a voter for the quorum from the entry that
	// adds it, and a node that must first load the whole state (a
	// snapshot) would hold every commit meanwhile (growing one node to
	// two), or for good if it died doing it. A known voter that moved is
	// updated at once (AddVoter with a known ID updates its address).
	servers := n.configuration()
	i := slices.IndexFunc(servers, func(s raft.Server) bool { return s.ID == raft.ServerID(a.Name) })
	if i < 0 {
		f := n.raft.AddNonvoter(raft.ServerID(a.Name), raft.ServerAddress(a.Addr), 0, timeoutOf(ctx))
		if err := n.awaitFuture(ctx, f); err != nil {
			return changeErrCode(err), err.Error()
		}
		n.log.Info("added a non-voter; it becomes a voter once it has caught up", "node", a.Name, "addr", a.Addr, "index", f.Index())
	}
	release() // it is in the configuration: a raise of the level asks it
	if i < 0 || servers[i].Suffrage != raft.Voter {
		if err := n.awaitCaughtUp(ctx, a.Name, a.Addr); err != nil {
			// Nothing lost: the leader goes on waiting in the background
			// and promotes it then (a joiner that does not ask again: one
			// of an earlier version, or restarted without Join), and a
			// joiner that asks again waits here again.
			n.promoteLater(a.Name, a.Addr)
			return codeUnavailable, err.Error()
		}
	}
	f := n.raft.AddVoter(raft.ServerID(a.Name), raft.ServerAddress(a.Addr), 0, timeoutOf(ctx))
	if err := n.awaitFuture(ctx, f); err != nil {
		return changeErrCode(err), err.Error()
	}
	n.log.Info("added a voter", "node", a.Name, "addr", a.Addr, "index", f.Index())
	return "", ""
}

// promoteNonvoters makes every non-voter of the configuration a voter
// once it has caught up (promoteLater). Every non-voter is a joiner: the
// leader that added it may have lost the leadership before promoting it,
// and a joiner restarted without Join never asks again.
func (n *Raft) promoteNonvoters() {
	for _, s := range n.configuration() {
		if s.Suffrage != raft.Voter {
			n.promoteLater(string(s.ID), string(s.Address))
		}
	}
}

// promoteLater makes the non-voter name a voter once it has caught up,
// on a helper goroutine, unless one is already at it; it gives up when
// this node no longer leads, the node is no longer a non-voter, or the
// node stops.
func (n *Raft) promoteLater(name, addr string) {
	n.statMu.Lock()
	if n.promoting[name] {
		n.statMu.Unlock()
		return
	}
	if n.promoting == nil {
		n.promoting = make(map[string]bool)
	}
	n.promoting[name] = true
	n.statMu.Unlock()
	done := func() {
		n.statMu.Lock()
		delete(n.promoting, name)
		n.statMu.Unlock()
	}
	if !n.helpers.start(func() {
		defer done()
		for n.IsLeader() {
			servers := n.configuration()
			i := slices.IndexFunc(servers, func(s raft.Server) bool { return s.ID == raft.ServerID(name) })
			if i < 0 || servers[i].Suffrage == raft.Voter {
				return
			}
			ctx, cancel := context.WithTimeout(n.stopCtx, membershipTimeout)
			err := n.awaitCaughtUp(ctx, name, addr)
			if err == nil {
				err = n.awaitFuture(ctx, n.raft.AddVoter(raft.ServerID(name), raft.ServerAddress(addr), 0, membershipTimeout))
				if err == nil {
					n.log.Info("made a non-voter that caught up a voter", "node", name, "addr", addr)
				}
			}
			cancel()
			if n.stopCtx.Err() != nil {
				return
			}
		}
	}) {
		done()
	}
}

// catchUpPoll is how often the leader asks a joining non-voter how far
// its log is.
const catchUpPoll = 20 * time.Millisecond

// awaitCaughtUp waits until the node at addr answers, as name, that its
// log reaches the leader's last index as the wait began, or ctx ends.
func (n *Raft) awaitCaughtUp(ctx context.Context, name, addr string) error {
	target := n.raft.LastIndex()
	for {
		cctx, cancel := context.WithTimeout(ctx, statusInterval/2)
		var r InfoReply
		err := n.Call(cctx, addr, clusterService+".Info", &InfoArgs{}, &r)
		cancel()
		if err == nil && r.Name == name && r.LastIndex >= target {
			return nil
		}
		pause := catchUpPoll
		if err != nil {
			pause = statusInterval / 2 // down: ask less often
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("cluster: %s is still catching up (log at %d of %d): %w", name, r.LastIndex, target, ctx.Err())
		case <-n.stopping:
			t.Stop()
			return ErrStopped
		case <-t.C:
		}
	}
}

// otherAnswersAs tells whether the server at addr answers as node name
// and is not the joiner at joinAddr itself (one process reachable at
// both addresses); the leader itself included.
func (n *Raft) otherAnswersAs(ctx context.Context, name, addr, joinAddr string) bool {
	if name == n.cfg.NodeName {
		return joinAddr != n.Addr()
	}
	cctx, cancel := context.WithTimeout(ctx, discoveryCallTimeout)
	defer cancel()
	var r InfoReply
	if err := n.Call(cctx, addr, clusterService+".Info", &InfoArgs{}, &r); err != nil {
		return false
	}
	return r.Name == name && r.Addr != joinAddr
}

// remove takes a node out of the configuration.
func (n *Raft) remove(ctx context.Context, a *RemoveArgs) (code, msg string) {
	if a.Name == "" || len(a.Name) > maxNodeName {
		return codeInvalid, "bad node name"
	}
	if n.raft.State() != raft.Leader {
		if a.Forwarded {
			return codeNotLeader, "not the leader"
		}
		fwd := *a
		fwd.Forwarded = true
		return n.callLeader(ctx, "Remove", &fwd)
	}
	servers := n.configuration()
	i := slices.IndexFunc(servers, func(s raft.Server) bool { return s.ID == raft.ServerID(a.Name) })
	if i < 0 {
		return codeNotFound, a.Name
	}
	if servers[i].Suffrage == raft.Voter && voters(servers) <= 1 {
		// Raft refuses the empty configuration with an error that reads
		// as "may still commit"; this can never succeed.
		return codeLastVoter, a.Name
	}
	if servers[i].Suffrage == raft.Voter {
		// Raft commits with the new configuration as soon as it is
		// appended, the removal itself included: if fewer than a
		// majority of the voters left answer, neither the removal nor
		// anything after it can commit until they are back (three
		// voters, one down, and a live one leaves).
		if live, left := n.liveVotersWithout(ctx, servers, a.Name); live <= left/2 {
			return codeUnavailable, fmt.Sprintf("removing %s would leave %d voters of which only %d answer, "+
				"fewer than a majority: the cluster could commit nothing; bring the others back or remove the dead ones first",
				a.Name, left, live)
		}
	}
	f := n.raft.RemoveServer(raft.ServerID(a.Name), 0, timeoutOf(ctx))
	if err := n.awaitFuture(ctx, f); err != nil {
		return changeErrCode(err), err.Error()
	}
	n.log.Info("removed a member", "node", a.Name, "index", f.Index())
	return "", ""
}

// liveVotersWithout counts the voters of servers other than name (left)
// and those of them that answer now (live): this node, and the others
// that answer an Info call within discoveryCallTimeout as themselves.
func (n *Raft) liveVotersWithout(ctx context.Context, servers []raft.Server, name string) (live, left int) {
	self := raft.ServerID(n.cfg.NodeName)
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for _, s := range servers {
		if s.Suffrage != raft.Voter || s.ID == raft.ServerID(name) {
			continue
		}
		left++
		if s.ID == self {
			mu.Lock()
			live++
			mu.Unlock()
			continue
		}
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, discoveryCallTimeout)
			defer cancel()
			var r InfoReply
			if err := n.Call(cctx, string(s.Address), clusterService+".Info", &InfoArgs{}, &r); err != nil || r.Name != string(s.ID) {
				return
			}
			mu.Lock()
			live++
			mu.Unlock()
		})
	}
	wg.Wait()
	return live, left
}

// callLeader forwards a Join or Remove to the leader.
func (n *Raft) callLeader(ctx context.Context, method string, args any) (code, msg string) {
	addr, err := n.waitLeader(ctx, "")
	if err != nil {
		return codeNoLeader, err.Error()
	}
	var reply ChangeReply
	if err := n.Call(ctx, addr, clusterService+"."+method, args, &reply); err != nil {
		if errors.Is(err, errNotSent) {
			return codeUnavailable, err.Error()
		}
		return codeMaybe, err.Error()
	}
	return reply.Code, reply.Message
}

func changeErrCode(err error) string {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return codeNotLeader
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return codeUnavailable
	default:
		return codeMaybe
	}
}

func timeoutOf(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		return max(time.Until(d), time.Millisecond)
	}
	return membershipTimeout
}

// Remove takes a node (typically a dead one) out of the cluster's
// configuration. It is sent to the leader; errors: ErrUnknownNode
// (wire.ErrNotFound) when no member has that name, ErrLastVoter
// (wire.ErrInvalid) for the only voter, wire.ErrUnavailable
// when there is no leader, the change did not commit in time, or fewer
// than a majority of the voters left answer (nothing is changed).
func (n *Raft) Remove(ctx context.Context, nodeName string) error {
	code, msg := n.remove(ctx, &RemoveArgs{Name: nodeName})
	if err := codeErr(code, msg); err != nil {
		return fmt.Errorf("cluster: remove %s: %w", nodeName, err)
	}
	return nil
}

// HandOver hands the leadership to another voter when this node leads
// and has one (a graceful stop: the others then need no election timeout
// to go on committing). It returns when the transfer is done, failed, or
// ctx ended; the node stays a member either way.
func (n *Raft) HandOver(ctx context.Context) (handed bool, err error) {
	if !n.IsLeader() || voters(n.configuration()) <= 1 {
		return false, nil
	}
	if err := n.awaitFuture(ctx, n.raft.LeadershipTransfer()); err != nil {
		return false, fmt.Errorf("cluster: hand the leadership over: %w", err)
	}
	return true, nil
}

// Leave removes this node from the cluster gracefully: a leader first
// hands leadership to another voter, then the node asks the leader to
// remove it. Stop Run afterwards; the node no longer takes part in
// elections. Leaving a cluster it is not in is a no-op; the only voter
// cannot leave (ErrLastVoter).
func (n *Raft) Leave(ctx context.Context) error {
	member, err := n.CanLeave()
	if err != nil || !member {
		return err
	}
	if n.IsLeader() {
		if err := n.awaitFuture(ctx, n.raft.LeadershipTransfer()); err != nil {
			return fmt.Errorf("cluster: leave: transfer leadership: %w: %w", wire.ErrUnavailable, err)
		}
		n.log.Info("handed leadership over before leaving")
	}
	// Wait until another node is known as leader, so that the removal is
	// not sent to ourselves.
	if _, err := n.waitLeader(ctx, n.Addr()); err != nil {
		return fmt.Errorf("cluster: leave: %w", err)
	}
	if err := n.Remove(ctx, n.cfg.NodeName); err != nil {
		return fmt.Errorf("cluster: leave: %w", err)
	}
	n.log.Info("left the cluster")
	return nil
}

// CanLeave tells whether this node is in the configuration and, if it
// is, refuses (ErrLastVoter) when it is the only voter: what Leave
// checks first, for callers that must undo their own steps otherwise.
func (n *Raft) CanLeave() (member bool, err error) {
	self := raft.ServerID(n.cfg.NodeName)
	servers := n.configuration()
	i := slices.IndexFunc(servers, func(s raft.Server) bool { return s.ID == self })
	if i < 0 {
		return false, nil
	}
	if servers[i].Suffrage == raft.Voter && voters(servers) <= 1 {
		return true, ErrLastVoter
	}
	return true, nil
}

func voters(servers []raft.Server) int {
	v := 0
	for _, s := range servers {
		if s.Suffrage == raft.Voter {
			v++
		}
	}
	return v
}

// discovery is what a node forming a cluster (BootstrapExpect) knows.
type discovery struct {
	mu       sync.Mutex
	active   bool              // discovering; Info answers carry Known
	known    map[string]string // node name -> address, self included
	joinMode bool              // a peer is in a cluster already: join it instead
	warned   map[string]bool   // conflicts already logged
}

// learn records a discovered server; called with d.mu held.
func (d *discovery) learn(n *Raft, name, addr string) {
	if old, ok := d.known[name]; ok {
		if old != addr && !d.warned[name+"="+addr] {
			d.warned[name+"="+addr] = true
			n.log.Error("two nodes claim one name; keeping the first", "node", name, "kept", old, "other", addr)
		}
		return
	}
	d.known[name] = addr
}

// formCluster runs in Run on a node without Raft state that has Join or
// BootstrapExpect set, until the node is in a configuration.
func (n *Raft) formCluster(ctx context.Context) {
	expect := n.cfg.BootstrapExpect
	if expect > 0 {
		n.disc.mu.Lock()
		n.disc.active = true
		n.disc.known = map[string]string{n.cfg.NodeName: n.Addr()}
		n.disc.warned = map[string]bool{}
		n.disc.mu.Unlock()
		defer func() {
			n.disc.mu.Lock()
			n.disc.active = false
			n.disc.mu.Unlock()
		}()
	}
	bo := backoff.New(50*time.Millisecond, 2*time.Second)
	for attempt := 1; ; attempt++ {
		// A voter: a joiner is a non-voter in the configuration while it
		// catches up, and asks again until the leader makes it a voter.
		if n.isVoter() {
			return
		}
		n.disc.mu.Lock()
		joinMode := n.disc.joinMode
		n.disc.mu.Unlock()
		var done bool
		if expect > 0 && !joinMode {
			done = n.tryBootstrap(ctx, attempt)
		} else {
			done = n.tryJoin(ctx, attempt, false)
		}
		if done || bo.Sleep(ctx) != nil {
			return
		}
	}
}

// rejoin runs in Run on a node that has Raft state and a Join list: it
// asks once (retrying until a leader answers) to be a voter. For a member
// that is a no-op; a node that left or was removed, and is started again
// with Join, comes back, and one whose address changed has it updated
// (once its old address no longer answers as it: see join).
func (n *Raft) rejoin(ctx context.Context, moved bool) {
	bo := backoff.New(100*time.Millisecond, 2*time.Second)
	for attempt := 1; ; attempt++ {
		if n.tryJoin(ctx, attempt, moved) || bo.Sleep(ctx) != nil {
			return
		}
	}
}

// movedFrom reports whether the configuration names this node with
// other members it can ask (others), and at an address other than the
// one it has now (moved); and that address. (A lone voter needs nobody:
// it elects itself wherever it listens.)
func (n *Raft) movedFrom() (was string, moved, others bool) {
	servers := n.configuration()
	for _, s := range servers {
		if s.ID == raft.ServerID(n.cfg.NodeName) {
			others = len(servers) > 1
			return string(s.Address), string(s.Address) != n.Addr() && others, others
		}
	}
	return "", false, false
}

// peerAddrs is the Join list, the discovered servers and the other
// members of the configuration, without self.
func (n *Raft) peerAddrs() []string {
	self := n.Addr()
	var out []string
	add := func(a string) {
		if a != "" && a != self && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	for _, a := range n.cfg.Join {
		add(a)
	}
	n.disc.mu.Lock()
	for _, a := range n.disc.known {
		add(a)
	}
	n.disc.mu.Unlock()
	for _, s := range n.configuration() {
		if s.ID != raft.ServerID(n.cfg.NodeName) {
			add(string(s.Address))
		}
	}
	return out
}

// tryBootstrap asks every peer it knows for its identity and the servers
// it knows; once exactly BootstrapExpect servers are known it bootstraps
// Raft with them, sorted, which every one of them does with the same list.
func (n *Raft) tryBootstrap(ctx context.Context, attempt int) bool {
	expect := n.cfg.BootstrapExpect
	for _, addr := range n.peerAddrs() {
		cctx, cancel := context.WithTimeout(ctx, discoveryCallTimeout)
		var r InfoReply
		err := n.Call(cctx, addr, clusterService+".Info", &InfoArgs{Name: n.cfg.NodeName, Addr: n.Addr(), Expect: expect}, &r)
		cancel()
		if err != nil {
			n.log.Debug("cluster peer not answering yet", "addr", addr, "err", err)
			continue
		}
		if r.HasState {
			// Someone is in a cluster already (it may have bootstrapped
			// with us in it): join instead of bootstrapping.
			n.log.Info("a peer is already in a cluster; joining it", "peer", r.Name, "addr", r.Addr)
			if r.LastIndex <= 1 {
				// Its log holds the first configuration only: no leader
				// has appended anything yet, so nothing was acknowledged,
				// and its election needs this node's vote (voteguard.go).
				// A member of a running cluster holds more.
				n.votes.lift("a peer is forming the cluster")
			}
			n.disc.mu.Lock()
			n.disc.joinMode = true
			n.disc.mu.Unlock()
			return false
		}
		if r.Expect != 0 && r.Expect != expect {
			n.log.Warn("peer has a different BootstrapExpect", "peer", r.Name, "theirs", r.Expect, "ours", expect)
		}
		n.disc.mu.Lock()
		if validMember(r.Name, r.Addr) == nil {
			n.disc.learn(n, r.Name, r.Addr)
		}
		for _, p := range r.Known {
			if validMember(p.Name, p.Addr) == nil {
				n.disc.learn(n, p.Name, p.Addr)
			}
		}
		n.disc.mu.Unlock()
	}
	n.disc.mu.Lock()
	servers := make([]raft.Server, 0, len(n.disc.known))
	for name, addr := range n.disc.known {
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(name), Address: raft.ServerAddress(addr)})
	}
	n.disc.mu.Unlock()
	switch {
	case len(servers) < expect:
		if attempt%20 == 1 {
			n.log.Info("waiting for peers to form the cluster", "known", len(servers), "expect", expect)
		}
		return false
	case len(servers) > expect:
		if attempt%20 == 1 {
			n.log.Error("found more servers than BootstrapExpect; not bootstrapping", "known", len(servers), "expect", expect)
		}
		return false
	}
	slices.SortFunc(servers, func(a, b raft.Server) int { return strings.Compare(string(a.ID), string(b.ID)) })
	err := n.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error()
	switch {
	case err == nil:
		n.log.Info("bootstrapped the cluster", "servers", len(servers))
		// A new cluster: nothing was acknowledged before this
		// configuration, so this node may vote at once.
		n.votes.lift("bootstrapped a new cluster")
		return true
	case errors.Is(err, raft.ErrCantBootstrap):
		return true // state arrived from a peer meanwhile
	default:
		n.log.Error("bootstrap failed", "err", err)
		return false
	}
}

// JoinRefused delivers the leader's refusal of this node's join when
// asking again cannot help (its archive store is not the cluster's,
// ErrArchiveStore): the node stops with it.
func (n *Raft) JoinRefused() <-chan error { return n.joinRefused }

// tryJoin sends a Join request to the listed members in turn; moved:
// only to have this member's address updated (JoinArgs.Moved).
func (n *Raft) tryJoin(ctx context.Context, attempt int, moved bool) bool {
	var last error
	for _, addr := range n.peerAddrs() {
		cctx, cancel := context.WithTimeout(ctx, membershipTimeout)
		var r ChangeReply
		err := n.Call(cctx, addr, clusterService+".Join", &JoinArgs{Name: n.cfg.NodeName, Addr: n.Addr(), Moved: moved, FeatureLevel: n.cfg.FeatureLevel, ArchiveStore: n.cfg.ArchiveStore}, &r)
		cancel()
		if err == nil {
			err = codeErr(r.Code, r.Message)
		}
		if err == nil {
			if moved {
				n.log.Info("the cluster has this node as a member at its address", "via", addr)
			} else {
				n.log.Info("joined the cluster", "via", addr)
			}
			return true
		}
		last = fmt.Errorf("%s: %w", addr, err)
		if moved && errors.Is(err, ErrUnknownNode) {
			n.removedAway.Store(true)
			n.log.Error("this node was removed from its cluster while it was away; start it with --join of a member to return",
				"node", n.cfg.NodeName, "err", err)
			return true
		}
		if errors.Is(err, ErrOlderVersion) {
			if attempt%10 == 1 {
				n.log.Error("cannot join: the cluster runs a newer version", "node", n.cfg.NodeName, "err", err)
			}
			return false
		}
		if errors.Is(err, ErrArchiveStore) {
			// The node's own configuration is wrong (or the cluster's):
			// asking again cannot help. The node stops (JoinRefused).
			n.log.Error("cannot join: this node's archive store is not the cluster's", "node", n.cfg.NodeName, "err", err)
			select {
			case n.joinRefused <- err:
			default:
			}
			return true
		}
		if errors.Is(err, ErrNameInUse) {
			// Not a transient failure: say so at once, and keep asking
			// only in case the member with that name is gone for good.
			if attempt%10 == 1 {
				n.log.Error("cannot join: another node has this node's name", "node", n.cfg.NodeName, "err", err)
			}
			return false
		}
	}
	if last == nil && attempt == 1 {
		n.log.Warn("the Join list names no other node")
	}
	if last != nil && attempt%10 == 1 && attempt > 1 {
		n.log.Warn("cannot join the cluster yet; retrying", "err", last)
	}
	return false
}

// peerStatus is the last answer of a member to the leader's status poll.
type peerStatus struct {
	lastIndex uint64
	at        time.Time
}

// pollPeers asks every other member for its indexes, for the lag in
// Stats. It runs when Stats is asked for (an operator's status page),
// not on a timer: an idle cluster does no work for a figure nobody reads.
// Answers younger than statusInterval are reused; a member that does not
// answer within statusInterval/2 shows an unknown lag.
func (n *Raft) pollPeers(ctx context.Context) {
	if !n.IsLeader() {
		return
	}
	var wg sync.WaitGroup
	for _, s := range n.configuration() {
		if s.ID == raft.ServerID(n.cfg.NodeName) {
			continue
		}
		n.statMu.Lock()
		fresh := time.Since(n.peerStat[string(s.ID)].at) < statusInterval
		n.statMu.Unlock()
		if fresh {
			continue
		}
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, statusInterval/2)
			defer cancel()
			var r InfoReply
			if err := n.Call(cctx, string(s.Address), clusterService+".Info", &InfoArgs{}, &r); err != nil {
				return
			}
			n.statMu.Lock()
			n.peerStat[string(s.ID)] = peerStatus{lastIndex: r.LastIndex, at: time.Now()}
			n.statMu.Unlock()
		})
	}
	wg.Wait()
}

// Member is one server of the Raft configuration as this node sees it.
// It is the one member type of edgechat: the broker, presence and the
// /cluster API all take it from here.
type Member struct {
	Name     string `json:"name"`
	Addr     string `json:"clusterAddr"` // the cluster (Raft and RPC) address
	Suffrage string `json:"suffrage"`    // Voter, Nonvoter, Staging
	Leader   bool   `json:"leader"`
	// Lag is how many log entries the member is behind the leader, from
	// the leader's last poll (every second); -1 when unknown (this node is
	// not the leader, or the member has not answered lately).
	Lag int64 `json:"lag"`
	// Down: the member is marked down (it has not answered the leader
	// for Config.DownAfter, down.go), or it is this node and it has not
	// heard from a leader that long. It is still a member; what is
	// placed on members by hashing (presence homes) goes to those up.
	Down bool `json:"down,omitempty"`
}

// Members are the servers of the current Raft configuration, sorted by
// name.
func (n *Raft) Members() []Member { return n.members() }

func (n *Raft) members() []Member {
	servers := n.configuration()
	_, leaderID := n.raft.LeaderWithID()
	isLeader := n.IsLeader()
	last := n.raft.LastIndex()
	marks := n.downMarks()
	cut := n.selfDown.Load() // as announced (down.go, watchSelfDown)
	out := make([]Member, 0, len(servers))
	n.statMu.Lock()
	defer n.statMu.Unlock()
	for _, s := range servers {
		m := Member{Name: string(s.ID), Addr: string(s.Address), Suffrage: s.Suffrage.String(), Leader: s.ID == leaderID, Lag: -1}
		m.Down = marks[m.Name] || (cut && m.Name == n.cfg.NodeName)
		if isLeader {
			if s.ID == raft.ServerID(n.cfg.NodeName) {
				m.Lag = 0
			} else if ps, ok := n.peerStat[string(s.ID)]; ok && time.Since(ps.at) < statusStale {
				m.Lag = int64(last) - int64(ps.lastIndex)
				m.Lag = max(m.Lag, 0)
			}
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}
