package presence

// Durable last seen.
//
// The state machine keeps a user's last seen in memory and publishes it
// retained on presence/{uid}, which every broker also keeps only in
// memory: a restart of the whole cluster (an upgrade, a power cut) lost
// every offline user's last seen. So a user's home also writes last seen
// into the replicated state (r/presence/seen/{uid}, Unix seconds), in
// the background and batched, never on a heartbeat:
//
//   - when a user goes offline, their last seen is queued and written at
//     once (one command for whatever queued meanwhile);
//   - every SeenEvery (default a minute) the last seen of the users it
//     tracks (online, inactive) that moved since it was last written.
//
// No status change waits for a write or needs a quorum: a write that
// cannot commit (no leader) is queued again and retried at the next
// round, so the record catches up once the cluster commits again. A
// record only moves forward (the handler keeps the later of the two), so
// writes may commit in any order, twice, or from a former home.
//
// GET /presence/{uid} of a user this node does not track answers the
// latest of what it remembers, the retained copy and this record. A
// deleted account's record is not written, and its erasure deletes it
// (EraseAccount).

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/wire"
)

const (
	// DefaultSeenEvery is how often the last seen of tracked users is
	// written (Config.SeenEvery).
	DefaultSeenEvery = time.Minute

	seenPrefix  = "r/presence/seen/" // + uid → Unix seconds, 8 bytes big-endian
	seenVersion = 1
	// seenBatch bounds the users of one command (~40 bytes each).
	seenBatch = 4096
	// seenTimeout bounds one write; seenStopTimeout the last one, as the
	// node stops.
	seenTimeout     = 10 * time.Second
	seenStopTimeout = time.Second
)

// Proposer commits a command through the cluster (*cluster.Raft).
type Proposer interface {
	Propose(ctx context.Context, t byte, payload []byte) (any, error)
}

// Registrar installs FSM handlers (*fsm.FSM).
type Registrar interface {
	Register(t byte, h fsm.Handler)
}

// Store makes last seen durable (see seen.go). DB, FSM and Proposer go
// together; a zero Store keeps last seen in memory only.
type Store struct {
	DB       *badger.DB
	FSM      Registrar
	Proposer Proposer
	// Deleted (optional) tells from the replicated state whether uid's
	// account is deleted: its last seen is then not written.
	Deleted func(tx *badger.Txn, uid string) (bool, error)
}

// seenCmd is the payload of wire.CmdPresenceSeen.
type seenCmd struct {
	V    int         `json:"v"`
	Seen []seenEntry `json:"seen"`
}

type seenEntry struct {
	UID string `json:"u"`
	At  int64  `json:"t"` // Unix seconds
}

var errBadSeen = errors.New("presence: malformed last seen command")

// seenState is the service's part for durable last seen (nil without a
// Store). dirty and the users' stored fields are under Service.mu.
type seenState struct {
	st       Store
	every    time.Duration
	kick     chan struct{}
	dirty    map[string]int64 // uid → last seen (Unix seconds) to write
	mFailed  prometheus.Counter
	mWritten prometheus.Counter
}

func newSeenState(st Store, every time.Duration) (*seenState, error) {
	if st.FSM == nil || st.Proposer == nil {
		return nil, fmt.Errorf("%w: a store needs its FSM and proposer", ErrConfig)
	}
	if every < 0 {
		return nil, fmt.Errorf("%w: negative seen interval %v", ErrConfig, every)
	}
	if every == 0 {
		every = DefaultSeenEvery
	}
	return &seenState{st: st, every: every, kick: make(chan struct{}, 1), dirty: map[string]int64{},
		mFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgechat_presence_lastseen_write_failures_total",
			Help: "Writes of users' last seen to the replicated state that did not commit (retried at the next round).",
		}),
		mWritten: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgechat_presence_lastseen_written_total",
			Help: "Users' last seen written to the replicated state by this node (committed).",
		})}, nil
}

// queueSeenLocked queues u's last seen for writing when it moved since
// it was last queued; now asks for the write at once.
func (s *Service) queueSeenLocked(uid string, u *user, now bool) {
	if s.seen == nil {
		return
	}
	t := u.shown()
	if t.IsZero() || t.Unix() <= u.stored {
		return
	}
	u.stored = t.Unix()
	s.seen.dirty[uid] = max(s.seen.dirty[uid], u.stored)
	if now {
		select {
		case s.seen.kick <- struct{}{}:
		default:
		}
	}
}

// runSeen writes last seen until ctx ends, then once more (briefly).
// After a write that did not commit, users going offline wait for the
// next round (no proposal per offline while the cluster cannot commit).
func (s *Service) runSeen(ctx context.Context) {
	t := s.clock.NewTicker(s.seen.every)
	defer t.Stop()
	if s.cl == nil {
		s.restoreStored(ctx) // in a cluster: once the hellos are done (cluster.go)
	}
	ok := true
	for {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), seenStopTimeout)
			s.writeSeen(sctx, true)
			cancel()
			return
		case <-t.C():
			ok = s.writeSeen(ctx, true)
		case <-s.seen.kick:
			if ok {
				ok = s.writeSeen(ctx, false)
			}
		}
	}
}

// writeSeen proposes what is queued and, with tracked, the last seen of
// the tracked users that moved. What does not commit is queued again
// (false).
func (s *Service) writeSeen(ctx context.Context, tracked bool) bool {
	s.mu.Lock()
	if tracked {
		for uid, u := range s.users {
			s.queueSeenLocked(uid, u, false)
		}
	}
	dirty := s.seen.dirty
	s.seen.dirty = map[string]int64{}
	s.mu.Unlock()
	if len(dirty) == 0 {
		return true
	}
	entries := make([]seenEntry, 0, len(dirty))
	for uid, at := range dirty {
		entries = append(entries, seenEntry{UID: uid, At: at})
	}
	slices.SortFunc(entries, func(a, b seenEntry) int {
		if a.UID < b.UID {
			return -1
		}
		if a.UID > b.UID {
			return 1
		}
		return 0
	})
	for len(entries) > 0 {
		n := min(len(entries), seenBatch)
		payload, err := json.Marshal(seenCmd{V: seenVersion, Seen: entries[:n]})
		if err == nil {
			pctx, cancel := context.WithTimeout(ctx, seenTimeout)
			_, err = s.seen.st.Proposer.Propose(pctx, wire.CmdPresenceSeen, payload)
			cancel()
		}
		if err != nil {
			s.seen.mFailed.Inc()
			s.log.Info("presence: last seen not written yet; retrying at the next round", "users", len(entries), "err", err)
			s.mu.Lock()
			for _, e := range entries {
				s.seen.dirty[e.UID] = max(s.seen.dirty[e.UID], e.At)
			}
			s.mu.Unlock()
			return false
		}
		s.seen.mWritten.Add(float64(n))
		entries = entries[n:]
	}
	return true
}

// applySeen is the FSM handler of wire.CmdPresenceSeen: each user's
// record moves to the later of the two, except a deleted account's.
func (s *Service) applySeen(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c seenCmd
	if err := json.Unmarshal(payload, &c); err != nil || c.V != seenVersion {
		return nil, fmt.Errorf("%w (version %d): %v", errBadSeen, c.V, err)
	}
	for _, e := range c.Seen {
		if wire.ValidUserID(e.UID) != nil || e.At <= 0 {
			continue
		}
		if del := s.seen.st.Deleted; del != nil {
			gone, err := del(tx, e.UID)
			if err != nil {
				return nil, err
			}
			if gone {
				continue
			}
		}
		cur, err := readSeen(tx, e.UID)
		if err != nil {
			return nil, err
		}
		if e.At <= cur {
			continue
		}
		if err := tx.Set([]byte(seenPrefix+e.UID), binary.BigEndian.AppendUint64(nil, uint64(e.At))); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

func readSeen(tx *badger.Txn, uid string) (int64, error) {
	it, err := tx.Get([]byte(seenPrefix + uid))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var at int64
	err = it.Value(func(v []byte) error {
		if len(v) == 8 {
			at = int64(binary.BigEndian.Uint64(v))
		}
		return nil
	})
	return at, err
}

// storedSeen is uid's last seen as this node's replicated state keeps
// it (zero: none).
func (s *Service) storedSeen(uid string) time.Time {
	if s.seen == nil || s.seen.st.DB == nil {
		return time.Time{}
	}
	var at int64
	err := s.seen.st.DB.View(func(tx *badger.Txn) error {
		var err error
		at, err = readSeen(tx, uid)
		return err
	})
	if err != nil {
		s.log.Warn("presence: reading the stored last seen", "user", uid, "err", err)
	}
	return goneTime(at)
}

// restoreStored retains on this node presence/{uid} offline with the
// stored last seen, for every user with a record that this node retains
// nothing of: after a restart of the whole cluster no broker retains
// anything, and a client subscribing to presence/{uid} would get no
// status at all. In a cluster it runs once this run's hellos are done
// (their answers brought the members' copies, newer than any record);
// a status published since stays, as RestoreRetained keeps what is
// retained already.
func (s *Service) restoreStored(ctx context.Context) {
	if s.seen == nil || s.seen.st.DB == nil || s.restorer == nil {
		return
	}
	const chunk = 1024
	prefix := []byte(seenPrefix)
	next := prefix
	restored := 0
	for ctx.Err() == nil {
		var page []seenEntry
		err := s.seen.st.DB.View(func(tx *badger.Txn) error {
			it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true})
			defer it.Close()
			for it.Seek(next); it.Valid() && len(page) < chunk; it.Next() {
				k := it.Item().KeyCopy(nil)
				var at int64
				if err := it.Item().Value(func(v []byte) error {
					if len(v) == 8 {
						at = int64(binary.BigEndian.Uint64(v))
					}
					return nil
				}); err != nil {
					return err
				}
				page = append(page, seenEntry{UID: string(k[len(prefix):]), At: at})
				next = append(k, 0)
			}
			return nil
		})
		if err != nil {
			s.log.Warn("presence: reading stored last seen", "err", err)
			return
		}
		for _, e := range page {
			if e.At <= 0 || wire.ValidUserID(e.UID) != nil {
				continue
			}
			if s.retained != nil {
				if _, ok := s.retained.RetainedPresence(e.UID); ok {
					continue
				}
			}
			payload, err := json.Marshal(wire.Presence{Status: wire.StatusOffline, LastSeen: goneTime(e.At)})
			if err == nil {
				err = s.restorer.RestoreRetained(wire.PresenceTopic(e.UID), payload)
			}
			if err != nil {
				s.log.Debug("presence: stored last seen not retained", "user", e.UID, "err", err)
				continue
			}
			restored++
		}
		if len(page) < chunk {
			break
		}
	}
	if restored > 0 {
		s.log.Info("presence: retained the stored last seen of users no node retained", "users", restored)
	}
}

// EraseAccount deletes uid's stored last seen (an auth.Eraser: one
// step, under r/presence/ only); once committed, this node forgets the
// last seen it remembers of uid too.
func (s *Service) EraseAccount(tx *badger.Txn, uid string, b *fsm.Budget) (done bool, after func(), err error) {
	if wire.ValidPeerID(uid) != nil { // name@region: a user of another region, erased there
		return false, nil, fmt.Errorf("%w: bad uid", errBadSeen)
	}
	if ok, err := b.Delete(tx, []byte(seenPrefix+uid)); err != nil || !ok {
		return false, nil, err
	}
	return true, func() { s.forgetSeen(uid) }, nil
}

// forgetSeen drops what this node remembers of an erased user's last
// seen: its own record, the user's state if it still tracks them (an
// account erased at once, --account-delete-grace 0, while the grace of
// its closed connections runs: their offline must not retain the last
// seen again) and its broker's copy of presence/{uid} (not on the FSM's
// goroutine: the broker's retained store has its own lock).
func (s *Service) forgetSeen(uid string) {
	s.mu.Lock()
	delete(s.gone, uid)
	if s.seen != nil {
		delete(s.seen.dirty, uid)
	}
	if u, ok := s.users[uid]; ok {
		s.counts[u.status]--
		delete(s.users, uid)
		s.gOnline.Set(float64(s.counts[wire.StatusOnline]))
		s.gInactive.Set(float64(s.counts[wire.StatusInactive]))
	}
	s.mu.Unlock()
	if s.dropper != nil {
		go s.dropper.DropRetained(wire.PresenceTopic(uid))
	}
}
