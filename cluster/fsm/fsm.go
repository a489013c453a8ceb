// Package fsm is the replicated state machine of an edgechat cluster: it
// applies committed Raft entries into the node's Badger database. An entry
// is a batch of commands; each command carries a type byte and is
// dispatched through a table of handlers that the owners of the state
// (cluster, auth, users, archive) register. Unknown types are skipped so
// that a node can run next to newer nodes during a rolling upgrade.
//
// Every replicated key lives under the prefix "r/". The index of the last
// applied entry is stored in the same Badger transaction as the entry's
// effects, so replaying the log after a restart is idempotent.
package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
)

// Prefix is the key prefix of all replicated state.
var Prefix = []byte("r/")

var appliedKey = []byte("r/sys/applied")

// partialKey marks an entry whose commands were committed in more than
// one Badger transaction (ErrTxnTooBig, see apply) while its last one,
// which moves the applied index, is not: the entry's index, the first
// command not committed yet and a checksum of the entry's data (a state
// restored from a backup into a new cluster, whose log has other entries
// at those indexes, must not match). A node that dies in between
// applies the entry again at its next start and skips the commands
// before that one. The entry's last transaction deletes it.
var partialKey = []byte("r/sys/partial")

// Sentinel errors.
var (
	ErrUnknownCommand = errors.New("fsm: unknown command type")
	ErrBadEntry       = errors.New("fsm: malformed log entry")
)

// Position identifies a command in the log: the Raft index of its entry
// and its place in the entry's batch. Seq orders all commands of the
// cluster identically on every node.
type Position struct {
	Index uint64
	Sub   uint16
	// Appended is when the leader appended the entry (raft.Log's
	// AppendedAt, by the leader's clock); zero when unknown. It does not
	// take part in the state: handlers that write must not depend on it
	// (every node writes the same keys). It tells what is live news from
	// what a node applies long after, catching up.
	Appended time.Time
}

// Seq is a cluster-wide, gap-tolerant, strictly increasing sequence number.
func (p Position) Seq() uint64 { return p.Index<<16 | uint64(p.Sub) }

// Handler applies one command inside tx. A returned error is the
// command's result (for example a conflict), not a failure of the entry:
// a handler that returns an error must not have written anything.
type Handler func(tx *badger.Txn, at Position, payload []byte) (any, error)

// AfterCommitter may be implemented by a handler's returned value: the FSM
// calls AfterCommit once the entry's transaction is committed, on every
// node. Owners use it to invalidate caches and to tell local components
// (the broker dropping a removed member's subscriptions) about a change
// that is now visible to readers.
type AfterCommitter interface{ AfterCommit() }

// Result is the outcome of one command of an entry.
type Result struct {
	Value any
	Err   error
}

// Command is one typed command.
type Command struct {
	Type    byte
	Payload []byte
}

// FSM implements raft.FSM over a Badger database.
type FSM struct {
	db  *badger.DB
	log *slog.Logger

	mu        sync.RWMutex
	handlers  [256]Handler
	onRestore []func()
	gate      chan struct{} // set by HoldApply: Apply and Restore wait until it closes
	// gateFrom, when set with gate (HoldApplyFrom), lets entries through
	// until one holds a command of that type: the gate applies from there.
	gateFrom *byte

	wmu sync.Mutex // guards w (see wait.go)
	w   waits

	// applying is when the Apply under way started (unix nanos), 0
	// between entries (ApplyingFor).
	applying atomic.Int64
	// mayBePartial: the database may hold partialKey (from New or a
	// restore until an entry has been applied; apply clears it).
	mayBePartial atomic.Bool
	// gateRestores: Restore waits for the gate too (GateRestores).
	gateRestores atomic.Bool
}

var _ raft.FSM = (*FSM)(nil)

// New returns an FSM applying into db.
func New(db *badger.DB, log *slog.Logger) *FSM {
	if log == nil {
		log = slog.Default()
	}
	f := &FSM{db: db, log: log}
	f.mayBePartial.Store(true)
	return f
}

// HoldApply makes Apply wait until release is called, so an owner that
// must create Raft before all handlers are registered can keep Raft from
// applying entries with handlers missing; and Restore too once
// GateRestores has been called.
func (f *FSM) HoldApply() (release func()) {
	g := make(chan struct{})
	f.mu.Lock()
	f.gate, f.gateFrom = g, nil
	f.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { close(g) }) }
}

// GateRestores makes Restore wait for HoldApply's release as Apply does.
// Call it once Raft is built: the restore of the node's own latest
// snapshot that Raft does while it is being built must not wait (nothing
// could release it), but a snapshot the leader sends afterwards must: it
// replaces the state while the owners still load their in-memory copies
// of it, and an owner whose OnRestore is not registered yet keeps a copy
// of the state the snapshot replaced (deleted accounts, device holders,
// routes) until the node restarts.
func (f *FSM) GateRestores() { f.gateRestores.Store(true) }

// HoldApplyFrom is HoldApply from the first entry that holds a command
// of type t on: the entries before it apply. Tests hold a command's apply
// with it without also holding whatever the node proposed on its own
// just before (a background proposal held in flight would keep the
// command from being proposed at all).
func (f *FSM) HoldApplyFrom(t byte) (release func()) {
	g := make(chan struct{})
	f.mu.Lock()
	f.gate, f.gateFrom = g, &t
	f.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { close(g) }) }
}

// waitGate waits for HoldApply's release before entry data is applied
// (nil data: a restore, which waits whenever the gate is set).
func (f *FSM) waitGate(data []byte) {
	f.mu.RLock()
	g, from := f.gate, f.gateFrom
	f.mu.RUnlock()
	if g == nil {
		return
	}
	if from != nil && data != nil {
		cmds, _ := DecodeBatch(data)
		if !slices.ContainsFunc(cmds, func(c Command) bool { return c.Type == *from }) {
			return
		}
		f.mu.Lock()
		f.gateFrom = nil // every entry after this one waits too, in order
		f.mu.Unlock()
	}
	<-g
}

// Register installs the handler of a command type. Register all handlers
// before Raft starts.
func (f *FSM) Register(t byte, h Handler) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.handlers[t] != nil {
		panic(fmt.Sprintf("fsm: command type %#x registered twice", t))
	}
	f.handlers[t] = h
}

// Handler is the handler registered for command type t (nil: none), for
// tests that check every registered handler.
func (f *FSM) Handler(t byte) Handler {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.handlers[t]
}

// OnRestore registers fn to run after a snapshot replaced the state, so
// that owners can drop caches.
func (f *FSM) OnRestore(fn func()) {
	f.mu.Lock()
	f.onRestore = append(f.onRestore, fn)
	f.mu.Unlock()
}

// DB is the database the FSM applies into; owners read their prefix from it.
func (f *FSM) DB() *badger.DB { return f.db }

// AppliedIndex is the index of the last entry applied into the database.
func (f *FSM) AppliedIndex() (uint64, error) {
	var idx uint64
	err := f.db.View(func(tx *badger.Txn) error {
		var err error
		idx, err = readApplied(tx)
		return err
	})
	return idx, err
}

// SkipAhead moves the applied index forward to index (never back)
// without applying anything: the entries between were never part of
// this state's log. Only for a state that starts a new log (a restore
// into a new cluster, services/backup), before any node runs on it.
func (f *FSM) SkipAhead(index uint64) error {
	return f.db.Update(func(tx *badger.Txn) error {
		cur, err := readApplied(tx)
		if err != nil || index <= cur {
			return err
		}
		return tx.Set(appliedKey, binary.BigEndian.AppendUint64(nil, index))
	})
}

func readApplied(tx *badger.Txn) (uint64, error) {
	it, err := tx.Get(appliedKey)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var idx uint64
	err = it.Value(func(v []byte) error {
		if len(v) != 8 {
			return ErrBadEntry
		}
		idx = binary.BigEndian.Uint64(v)
		return nil
	})
	return idx, err
}

func encodePartial(index uint64, next int, sum uint32) []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 16), index)
	b = binary.BigEndian.AppendUint32(b, uint32(next))
	return binary.BigEndian.AppendUint32(b, sum)
}

// readPartial reads partialKey: the entry split over transactions, its
// first command not committed and its data's checksum; ok is false when
// there is none.
func readPartial(tx *badger.Txn) (index uint64, next int, sum uint32, ok bool, err error) {
	it, err := tx.Get(partialKey)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, 0, 0, false, nil
	}
	if err != nil {
		return 0, 0, 0, false, err
	}
	err = it.Value(func(v []byte) error {
		if len(v) != 16 {
			return ErrBadEntry
		}
		index, next, sum = binary.BigEndian.Uint64(v), int(binary.BigEndian.Uint32(v[8:])), binary.BigEndian.Uint32(v[12:])
		return nil
	})
	return index, next, sum, err == nil, err
}

// EncodeBatch packs commands into one log entry: a version byte, the
// count, then type, length and payload of each command.
func EncodeBatch(cmds []Command) []byte {
	n := 1 + binary.MaxVarintLen64
	for _, c := range cmds {
		n += 1 + binary.MaxVarintLen64 + len(c.Payload)
	}
	b := make([]byte, 0, n)
	b = append(b, 1)
	b = binary.AppendUvarint(b, uint64(len(cmds)))
	for _, c := range cmds {
		b = append(b, c.Type)
		b = binary.AppendUvarint(b, uint64(len(c.Payload)))
		b = append(b, c.Payload...)
	}
	return b
}

// DecodeBatch is the inverse of EncodeBatch.
func DecodeBatch(b []byte) ([]Command, error) {
	if len(b) < 1 || b[0] != 1 {
		return nil, fmt.Errorf("%w: unknown batch version", ErrBadEntry)
	}
	b = b[1:]
	n, k := binary.Uvarint(b)
	if k <= 0 || n > 1<<16 {
		return nil, fmt.Errorf("%w: bad count", ErrBadEntry)
	}
	b = b[k:]
	// Each command takes at least two bytes; don't trust the count for the allocation.
	cmds := make([]Command, 0, min(n, uint64(len(b)/2)))
	for i := uint64(0); i < n; i++ {
		if len(b) < 1 {
			return nil, fmt.Errorf("%w: truncated", ErrBadEntry)
		}
		t := b[0]
		l, k := binary.Uvarint(b[1:])
		if k <= 0 || l > uint64(len(b)-1-k) {
			return nil, fmt.Errorf("%w: bad length", ErrBadEntry)
		}
		start := 1 + k
		cmds = append(cmds, Command{Type: t, Payload: b[start : start+int(l)]})
		b = b[start+int(l):]
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: trailing bytes", ErrBadEntry)
	}
	return cmds, nil
}

// Apply applies a committed entry and returns []Result, one per command.
// Entries at or below the stored applied index are skipped (a replay).
// The results are also handed to WaitApplied's waiters.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	f.waitGate(l.Data)
	f.applying.Store(time.Now().UnixNano())
	results := f.apply(l)
	f.applying.Store(0)
	f.applied(l.Index, results)
	return results
}

// ApplyingFor is how long the entry being applied has taken so far, 0
// when none is. An apply takes milliseconds; one that lasts is a database
// that cannot write (Badger waits for room while its memtables cannot be
// flushed: a full or failing disk).
func (f *FSM) ApplyingFor() time.Duration {
	start := f.applying.Load()
	if start == 0 {
		return 0
	}
	return time.Since(time.Unix(0, start))
}

func (f *FSM) apply(l *raft.Log) []Result {
	cmds, err := DecodeBatch(l.Data)
	if err != nil {
		f.log.Error("skipping malformed raft entry", "index", l.Index, "err", err)
		return []Result{{Err: err}}
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	results := make([]Result, len(cmds))
	tx := f.db.NewTransaction(true)
	defer func() { tx.Discard() }()
	applied, err := readApplied(tx)
	if err != nil {
		panic(fmt.Sprintf("fsm: reading applied index: %v", err))
	}
	if l.Index <= applied {
		for i := range results {
			results[i].Err = ErrReplayed
		}
		return results
	}
	// A replay of an entry whose first commands were committed before
	// the node died (partialKey) goes on from the first one that was not.
	// split: partialKey is set and goes with this entry's last
	// transaction (one that names another entry is stale: a state
	// restored from a backup).
	start, split := 0, false
	if f.mayBePartial.Load() {
		idx, next, sum, ok, err := readPartial(tx)
		if err != nil {
			panic(fmt.Sprintf("fsm: reading partial entry: %v", err))
		}
		if ok && idx == l.Index && sum == crc32.ChecksumIEEE(l.Data) {
			start = min(next, len(cmds))
			for i := range start {
				results[i].Err = ErrReplayed
			}
		}
		split = ok
		// Only apply writes the key, and it deletes it with the entry's
		// last transaction: none is left once an entry has been applied
		// (a restore sets this again).
		f.mayBePartial.Store(false)
	}
	// start is the first command whose writes are only in tx (earlier
	// ones are committed). A handler that fills the transaction
	// (ErrTxnTooBig) may have written part of its effects: tx is thrown
	// away, the commands before it are redone and committed alone (with
	// partialKey naming the entry and the command after them: commitPart),
	// and the command is retried in a fresh transaction. The same happens
	// when the entry's own keys (appliedKey, partialKey's removal) do not
	// fit after its last command. Handlers are deterministic, so redoing
	// gives the same results.
	sum := crc32.ChecksumIEEE(l.Data)
	for i := start; ; {
		full := false
		for ; i < len(cmds); i++ {
			c := cmds[i]
			h := f.handlers[c.Type]
			if h == nil {
				f.log.Warn("skipping unknown command type", "type", c.Type, "index", l.Index)
				results[i].Err = fmt.Errorf("%w %#x", ErrUnknownCommand, c.Type)
				continue
			}
			v, herr := h(tx, Position{Index: l.Index, Sub: uint16(i), Appended: l.AppendedAt}, c.Payload)
			if errors.Is(herr, badger.ErrTxnTooBig) {
				full = true
				break
			}
			results[i] = Result{Value: v, Err: herr}
		}
		if !full {
			var idx [8]byte
			binary.BigEndian.PutUint64(idx[:], l.Index)
			err := tx.Set(appliedKey, idx[:])
			if err == nil && split {
				err = tx.Delete(partialKey)
			}
			if err == nil {
				break
			}
			if !errors.Is(err, badger.ErrTxnTooBig) {
				panic(fmt.Sprintf("fsm: set applied: %v", err))
			}
			// The last commands left no room for the entry's keys:
			// commit what comes before the last of them first.
		}
		tx.Discard()
		tx = f.db.NewTransaction(true)
		if i == start {
			if i == len(cmds) {
				panic(fmt.Sprintf("fsm: entry %d: its own keys do not fit an empty transaction", l.Index))
			}
			// Too big even alone: refuse it, nothing of it is kept.
			results[i] = Result{Err: fmt.Errorf("%w: command too large for one transaction", ErrBadEntry)}
			i++
			start = i
			continue
		}
		tx, start = f.commitPart(tx, l, cmds, results, start, i, sum)
		split = true
		i = start // retry from the first command not committed, in a fresh transaction
	}
	if err := tx.Commit(); err != nil {
		// The database is the state; if it cannot be written the node
		// must stop rather than diverge from the log.
		panic(fmt.Sprintf("fsm: commit entry %d: %v", l.Index, err))
	}
	for _, r := range results {
		if ac, ok := r.Value.(AfterCommitter); ok && r.Err == nil {
			ac.AfterCommit()
		}
	}
	return results
}

// commitPart commits the commands start..k-1 of entry l, redone in tx
// (a fresh transaction), with partialKey naming command k, for the
// largest k ≤ end whose writes and partialKey fit one transaction, and
// returns a fresh transaction and k. The commands up to end fitted
// without partialKey; when even start's alone leaves no room for it,
// start is committed without it (a crash before the entry's end then
// applies it again on replay, as before partialKey existed: a command
// within a few bytes of the transaction limit).
func (f *FSM) commitPart(tx *badger.Txn, l *raft.Log, cmds []Command, results []Result, start, end int, sum uint32) (*badger.Txn, int) {
	for k := end; ; k-- {
		for j := start; j < k; j++ {
			if h := f.handlers[cmds[j].Type]; h != nil {
				v, herr := h(tx, Position{Index: l.Index, Sub: uint16(j), Appended: l.AppendedAt}, cmds[j].Payload)
				results[j] = Result{Value: v, Err: herr}
			}
		}
		err := tx.Set(partialKey, encodePartial(l.Index, k, sum))
		if errors.Is(err, badger.ErrTxnTooBig) && k > start+1 {
			tx.Discard()
			tx = f.db.NewTransaction(true)
			continue
		}
		if errors.Is(err, badger.ErrTxnTooBig) {
			f.log.Warn("committing a command without the partial-entry mark: it leaves no room for it", "index", l.Index, "command", start)
		} else if err != nil {
			panic(fmt.Sprintf("fsm: set partial entry: %v", err))
		} else {
			f.mayBePartial.Store(true)
		}
		if err := tx.Commit(); err != nil {
			panic(fmt.Sprintf("fsm: commit: %v", err))
		}
		return f.db.NewTransaction(true), k
	}
}

// ErrReplayed marks the results of an entry that was already applied
// before a restart.
var ErrReplayed = errors.New("fsm: entry already applied")
