// Package registry is the cluster's replicated client registry: which
// node holds the live connection of each MQTT client ID. A node proposes
// "client X is on me, connection G" when a session is established there;
// every node applies it, and the node that holds an older connection of
// X disconnects it (session takeover across nodes). A connection that
// ends withdraws the entry only if the entry still names that very
// connection, so a late withdraw never erases a newer node's entry; a
// node that leaves or is removed has all its entries dropped.
//
// The registry lives in the FSM under r/reg/{clientID}; the value holds
// the node, the connection's generation (unique on its node) and the
// position of the registering command in the log (Seq), which orders
// registrations identically on every node: a registration committed
// later is newer. Reads go to Badger (they are rare: the broker's
// reconcile loop); changes are announced through OnChange.
package registry

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/wire"
)

// KeyPrefix is where the registry lives in the FSM's Badger.
const KeyPrefix = "r/reg/"

// Limits.
const (
	MaxNodeName = 128
	// MaxClientID bounds the client IDs that are registered; the broker
	// does not register longer ones (no cross-node takeover for them).
	MaxClientID = 1024
	// maxDropPerCommand bounds the deletes of one CmdClientsDropNode;
	// DropNode proposers repeat the command until none are left.
	maxDropPerCommand = 5000
)

// ErrInvalid marks a malformed registry command or argument.
var ErrInvalid = fmt.Errorf("registry: invalid entry: %w", wire.ErrInvalid)

// Registrar installs FSM handlers (implemented by *fsm.FSM). When it also
// has OnRestore(func()), OnChange subscribers hear of a restore.
type Registrar interface {
	Register(t byte, h fsm.Handler)
}

type restorer interface{ OnRestore(fn func()) }

// Entry is where a client is connected.
type Entry struct {
	Node string
	Gen  uint64 // the connection's generation on Node
	Seq  uint64 // log position of the registration (fsm.Position.Seq): later is newer
}

// Change is a committed change of the registry.
type Change struct {
	ClientID string // "" after a snapshot restore or a node drop (see Node)
	Entry    Entry  // the new entry when Set
	Set      bool   // registered (true) or removed (false)
	Node     string // with ClientID "": the node whose entries were all dropped ("" for a restore)
}

// Table is the registry. It is safe for concurrent use.
type Table struct {
	db *badger.DB

	// drops: where each node's drop walk stopped (see fsm.ScanResume);
	// dropVisits counts the registry entries its steps visited (tests).
	drops      fsm.ScanResume
	dropVisits atomic.Int64
	dropBatch  int // maxDropPerCommand; fewer in tests

	cbMu     sync.RWMutex
	onChange []func(Change)
}

// New registers the registry's command handlers on reg. Call it before
// Raft starts applying entries.
func New(db *badger.DB, reg Registrar) (*Table, error) {
	if db == nil || reg == nil {
		return nil, errors.New("registry: a database and a Registrar are required")
	}
	t := &Table{db: db, dropBatch: maxDropPerCommand}
	reg.Register(wire.CmdClientRegister, t.applyRegister)
	reg.Register(wire.CmdClientWithdraw, t.applyWithdraw)
	reg.Register(wire.CmdClientsDropNode, t.applyDropNode)
	if r, ok := reg.(restorer); ok {
		r.OnRestore(func() {
			t.drops.Reset()
			t.changed(Change{})
		})
	}
	return t, nil
}

// OnChange registers fn to run after each committed change (on the FSM's
// goroutine: it must not block).
func (t *Table) OnChange(fn func(Change)) {
	t.cbMu.Lock()
	t.onChange = append(t.onChange, fn)
	t.cbMu.Unlock()
}

func (t *Table) changed(c Change) {
	t.cbMu.RLock()
	fns := t.onChange
	t.cbMu.RUnlock()
	for _, fn := range fns {
		fn(c)
	}
}

// Lookup returns the entry of clientID.
func (t *Table) Lookup(clientID string) (Entry, bool, error) {
	var e Entry
	found := false
	err := t.db.View(func(tx *badger.Txn) error {
		var err error
		e, found, err = get(tx, clientID)
		return err
	})
	if err != nil {
		return Entry{}, false, fmt.Errorf("registry: lookup: %w", err)
	}
	return e, found, nil
}

// Clients returns the client IDs registered on node (admin, tests; it
// scans the registry).
func (t *Table) Clients(node string) ([]string, error) {
	var out []string
	err := t.scan(func(id string, e Entry) bool {
		if e.Node == node {
			out = append(out, id)
		}
		return true
	})
	return out, err
}

// Counts returns the number of registered clients per node.
func (t *Table) Counts() (map[string]int, error) {
	out := map[string]int{}
	err := t.scan(func(_ string, e Entry) bool { out[e.Node]++; return true })
	return out, err
}

func (t *Table) scan(fn func(id string, e Entry) bool) error {
	err := t.db.View(func(tx *badger.Txn) error {
		it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte(KeyPrefix), PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			e, err := decodeValue(v)
			if err != nil {
				continue
			}
			if !fn(strings.TrimPrefix(string(it.Item().Key()), KeyPrefix), e) {
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("registry: scan: %w", err)
	}
	return nil
}

// --- commands ---

// ValidNode checks a node name.
func ValidNode(node string) error {
	if node == "" || len(node) > MaxNodeName || strings.ContainsAny(node, "/\x00") || !utf8.ValidString(node) {
		return fmt.Errorf("%w: node name %q", ErrInvalid, node)
	}
	return nil
}

// ValidClientID checks a client ID as the registry keeps it.
func ValidClientID(id string) error {
	if id == "" || len(id) > MaxClientID || strings.ContainsRune(id, 0) || !utf8.ValidString(id) {
		return fmt.Errorf("%w: client id %q", ErrInvalid, id)
	}
	return nil
}

// EncodeClient is the payload of CmdClientRegister and CmdClientWithdraw:
// client X's connection gen on node.
func EncodeClient(clientID, node string, gen uint64) ([]byte, error) {
	if err := ValidClientID(clientID); err != nil {
		return nil, err
	}
	if err := ValidNode(node); err != nil {
		return nil, err
	}
	b := make([]byte, 0, 3*binary.MaxVarintLen64+len(node)+len(clientID))
	b = binary.AppendUvarint(b, gen)
	b = binary.AppendUvarint(b, uint64(len(node)))
	b = append(b, node...)
	return append(b, clientID...), nil
}

// DecodeClient is the inverse of EncodeClient; it validates every part.
func DecodeClient(p []byte) (clientID, node string, gen uint64, err error) {
	gen, k := binary.Uvarint(p)
	if k <= 0 {
		return "", "", 0, fmt.Errorf("%w: malformed payload", ErrInvalid)
	}
	p = p[k:]
	n, k := binary.Uvarint(p)
	if k <= 0 || n > uint64(len(p)-k) {
		return "", "", 0, fmt.Errorf("%w: malformed payload", ErrInvalid)
	}
	node, clientID = string(p[k:k+int(n)]), string(p[k+int(n):])
	if err := ValidNode(node); err != nil {
		return "", "", 0, err
	}
	if err := ValidClientID(clientID); err != nil {
		return "", "", 0, err
	}
	return clientID, node, gen, nil
}

// EncodeDropNode is the payload of CmdClientsDropNode.
func EncodeDropNode(node string) ([]byte, error) {
	if err := ValidNode(node); err != nil {
		return nil, err
	}
	return []byte(node), nil
}

func key(clientID string) []byte { return []byte(KeyPrefix + clientID) }

func encodeValue(e Entry) []byte {
	b := make([]byte, 0, 2*binary.MaxVarintLen64+len(e.Node))
	b = binary.AppendUvarint(b, e.Gen)
	b = binary.AppendUvarint(b, e.Seq)
	return append(b, e.Node...)
}

func decodeValue(v []byte) (Entry, error) {
	gen, k := binary.Uvarint(v)
	if k <= 0 {
		return Entry{}, fmt.Errorf("%w: malformed value", ErrInvalid)
	}
	v = v[k:]
	seq, k := binary.Uvarint(v)
	if k <= 0 {
		return Entry{}, fmt.Errorf("%w: malformed value", ErrInvalid)
	}
	return Entry{Node: string(v[k:]), Gen: gen, Seq: seq}, nil
}

func get(tx *badger.Txn, clientID string) (Entry, bool, error) {
	it, err := tx.Get(key(clientID))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return Entry{}, false, nil
	}
	if err != nil {
		return Entry{}, false, err
	}
	v, err := it.ValueCopy(nil)
	if err != nil {
		return Entry{}, false, err
	}
	e, err := decodeValue(v)
	if err != nil {
		return Entry{}, false, err
	}
	return e, true, nil
}

// change is returned by the handlers; AfterCommit announces it.
type change struct {
	t *Table
	c Change
	// more: a drop that left entries of the node behind (repeat it),
	// and stop the first of them.
	more bool
	stop []byte
}

var _ fsm.AfterCommitter = (*change)(nil)

// More reports whether a CmdClientsDropNode left entries behind.
func (c *change) More() bool { return c.more }

// AfterCommit moves the drop walk's mark and tells the subscribers.
func (c *change) AfterCommit() {
	switch {
	case c.c.Set:
		c.t.drops.Forget(c.c.Entry.Node)
	case c.c.ClientID == "" && c.c.Node != "":
		c.t.drops.Mark(c.c.Node, c.stop)
	}
	c.t.changed(c.c)
}

func (t *Table) applyRegister(tx *badger.Txn, at fsm.Position, payload []byte) (any, error) {
	id, node, gen, err := DecodeClient(payload)
	if err != nil {
		return nil, err
	}
	e := Entry{Node: node, Gen: gen, Seq: at.Seq()}
	t.drops.Forget(node) // an entry of node, maybe below its drop's mark
	if err := tx.Set(key(id), encodeValue(e)); err != nil {
		return nil, err
	}
	return &change{t: t, c: Change{ClientID: id, Entry: e, Set: true}}, nil
}

// applyWithdraw deletes the entry only when it still names the same node
// and connection: a withdraw that arrives after a newer registration
// (on another node, or a newer connection on the same node) is a no-op.
func (t *Table) applyWithdraw(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	id, node, gen, err := DecodeClient(payload)
	if err != nil {
		return nil, err
	}
	e, ok, err := get(tx, id)
	if err != nil {
		return nil, err
	}
	if !ok || e.Node != node || e.Gen != gen {
		return nil, nil
	}
	if err := tx.Delete(key(id)); err != nil {
		return nil, err
	}
	return &change{t: t, c: Change{ClientID: id, Entry: e}}, nil
}

func (t *Table) applyDropNode(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	node := string(payload)
	if err := ValidNode(node); err != nil {
		return nil, err
	}
	var keys [][]byte
	var stop []byte
	it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte(KeyPrefix), PrefetchValues: true})
	visits := int64(0)
	t.drops.Start(it, node) // entries of node below its mark are gone
	for ; it.Valid(); it.Next() {
		visits++
		v, err := it.Item().ValueCopy(nil)
		if err != nil {
			it.Close()
			return nil, err
		}
		if e, err := decodeValue(v); err == nil && e.Node == node {
			if len(keys) == t.dropBatch {
				stop = it.Item().KeyCopy(nil)
				break
			}
			keys = append(keys, it.Item().KeyCopy(nil))
		}
	}
	it.Close()
	t.dropVisits.Add(visits)
	for _, k := range keys {
		if err := tx.Delete(k); err != nil {
			return nil, err
		}
	}
	return &change{t: t, c: Change{Node: node}, more: stop != nil, stop: stop}, nil
}
