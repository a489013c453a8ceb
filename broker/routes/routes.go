// Package routes is the cluster's replicated route table: which node has
// local subscribers of which topic filter. A node proposes a route when it
// gets its first local subscriber of a filter and withdraws it on its
// last; a node that leaves or is removed has all its routes dropped. The
// table lives in the FSM under r/route/{filter}/{node} and is mirrored in
// memory (an index over filter levels with + and #) that answers "which
// nodes want topic T" on every publish without touching Badger.
//
// The in-memory index is loaded from Badger in New, kept current by the
// FSM handlers' AfterCommit (on every node), and reloaded after a
// snapshot restore.
package routes

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/dgraph-io/badger/v4"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/wire"
)

// KeyPrefix is where the table lives in the FSM's Badger.
const KeyPrefix = "r/route/"

// Limits of a route.
const (
	MaxNodeName  = 128
	MaxFilterLen = 1024
	// maxDropPerCommand bounds the deletes of one CmdRoutesDropNode, so
	// that a node with very many routes never makes a transaction too
	// big; DropNode proposers repeat the command until none are left.
	maxDropPerCommand = 5000
)

// ErrInvalid marks a malformed route command or argument.
var ErrInvalid = fmt.Errorf("routes: invalid route: %w", wire.ErrInvalid)

// Registrar installs FSM handlers (implemented by *fsm.FSM). When it also
// has OnRestore(func()) (as *fsm.FSM does), the index is reloaded after a
// snapshot replaces the state.
type Registrar interface {
	Register(t byte, h fsm.Handler)
}

type restorer interface{ OnRestore(fn func()) }

// Table is the in-memory index of the replicated route table. It is safe
// for concurrent use.
type Table struct {
	db *badger.DB

	// drops: where each node's drop walk stopped (see fsm.ScanResume);
	// dropVisits counts the routes its steps visited (tests).
	drops      fsm.ScanResume
	dropVisits atomic.Int64
	dropBatch  int // maxDropPerCommand; fewer in tests

	mu     sync.RWMutex
	byNode map[string]map[string]struct{} // node → filters
	idx    *mqtt.TopicsIndex              // filter → nodes (as mochi "clients")

	cbMu     sync.RWMutex
	onChange []func(node, filter string)
}

// New registers the route commands' handlers on reg and loads the index
// from db (the database reg's FSM applies into). Call it before Raft
// starts applying entries.
func New(db *badger.DB, reg Registrar) (*Table, error) {
	if db == nil || reg == nil {
		return nil, errors.New("routes: a database and a Registrar are required")
	}
	t := &Table{db: db, dropBatch: maxDropPerCommand}
	if err := t.Load(); err != nil {
		return nil, err
	}
	reg.Register(wire.CmdRouteAdd, t.applyAdd)
	reg.Register(wire.CmdRouteDel, t.applyDel)
	reg.Register(wire.CmdRoutesDropNode, t.applyDropNode)
	if r, ok := reg.(restorer); ok {
		r.OnRestore(func() {
			t.drops.Reset()
			if err := t.Load(); err != nil {
				// The database just accepted the snapshot; a read failing
				// now means the node cannot serve anyway.
				panic(fmt.Sprintf("routes: reload after restore: %v", err))
			}
			t.changed("", "")
		})
	}
	return t, nil
}

// OnChange registers fn to run after a committed change of the table:
// node and filter of an added or withdrawn route, or node and "" when all
// of a node's routes were dropped, or "" and "" after a reload. It runs on
// the FSM's goroutine and must not block.
func (t *Table) OnChange(fn func(node, filter string)) {
	t.cbMu.Lock()
	t.onChange = append(t.onChange, fn)
	t.cbMu.Unlock()
}

func (t *Table) changed(node, filter string) {
	t.cbMu.RLock()
	fns := t.onChange
	t.cbMu.RUnlock()
	for _, fn := range fns {
		fn(node, filter)
	}
}

// Load rebuilds the index from the database. The read happens under the
// index lock, so an AfterCommit that runs meanwhile is applied after it
// (and, being idempotent, lands either way).
func (t *Table) Load() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	byNode := map[string]map[string]struct{}{}
	idx := mqtt.NewTopicsIndex()
	err := t.db.View(func(tx *badger.Txn) error {
		it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte(KeyPrefix)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			filter, node, ok := parseKey(it.Item().Key())
			if !ok {
				continue
			}
			addLocked(byNode, idx, node, filter)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("routes: load: %w", err)
	}
	t.byNode, t.idx = byNode, idx
	return nil
}

func addLocked(byNode map[string]map[string]struct{}, idx *mqtt.TopicsIndex, node, filter string) {
	fs := byNode[node]
	if fs == nil {
		fs = map[string]struct{}{}
		byNode[node] = fs
	}
	fs[filter] = struct{}{}
	idx.Subscribe(node, packets.Subscription{Filter: filter})
}

// Match returns the nodes that have a route matching topic (a topic name),
// sorted, or nil.
func (t *Table) Match(topic string) []string {
	t.mu.RLock()
	idx := t.idx
	empty := len(t.byNode) == 0
	t.mu.RUnlock()
	if empty || topic == "" {
		return nil
	}
	subs := idx.Subscribers(topic)
	if len(subs.Subscriptions) == 0 {
		return nil
	}
	out := make([]string, 0, len(subs.Subscriptions))
	for node := range subs.Subscriptions {
		out = append(out, node)
	}
	slices.Sort(out)
	return out
}

// OtherNodes reports whether a node other than node has a route. When
// none has, a publish on node has nowhere to go and the forwarder skips
// Match, which on a single node would run a topic lookup for every
// publish only to find node itself.
func (t *Table) OtherNodes(node string) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for n := range t.byNode {
		if n != node {
			return true
		}
	}
	return false
}

// Has reports whether node has a route for filter.
func (t *Table) Has(node, filter string) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	_, ok := t.byNode[node][filter]
	return ok
}

// Filters returns node's route filters, sorted.
func (t *Table) Filters(node string) []string {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make([]string, 0, len(t.byNode[node]))
	for f := range t.byNode[node] {
		out = append(out, f)
	}
	slices.Sort(out)
	return out
}

// Nodes returns the nodes that have at least one route, sorted.
func (t *Table) Nodes() []string {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make([]string, 0, len(t.byNode))
	for n := range t.byNode {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Len is the number of routes.
func (t *Table) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	n := 0
	for _, fs := range t.byNode {
		n += len(fs)
	}
	return n
}

// --- commands ---

// ValidNode checks a node name as it appears in a route.
func ValidNode(node string) error {
	if node == "" || len(node) > MaxNodeName || strings.ContainsAny(node, "/\x00") || !utf8.ValidString(node) {
		return fmt.Errorf("%w: node name %q", ErrInvalid, node)
	}
	return nil
}

// ValidFilter checks a route filter: a valid, non-shared MQTT filter (the
// broker strips $share/{group}/ before it routes).
func ValidFilter(filter string) error {
	if filter == "" || len(filter) > MaxFilterLen || strings.ContainsRune(filter, 0) || !utf8.ValidString(filter) ||
		mqtt.IsSharedFilter(filter) || !mqtt.IsValidFilter(filter, false) {
		return fmt.Errorf("%w: filter %q", ErrInvalid, filter)
	}
	return nil
}

// EncodeRoute is the payload of CmdRouteAdd and CmdRouteDel.
func EncodeRoute(node, filter string) ([]byte, error) {
	if err := ValidNode(node); err != nil {
		return nil, err
	}
	if err := ValidFilter(filter); err != nil {
		return nil, err
	}
	b := make([]byte, 0, binary.MaxVarintLen64+len(node)+len(filter))
	b = binary.AppendUvarint(b, uint64(len(node)))
	b = append(b, node...)
	return append(b, filter...), nil
}

// DecodeRoute is the inverse of EncodeRoute; it validates both parts.
func DecodeRoute(p []byte) (node, filter string, err error) {
	n, k := binary.Uvarint(p)
	if k <= 0 || n > uint64(len(p)-k) {
		return "", "", fmt.Errorf("%w: malformed payload", ErrInvalid)
	}
	node, filter = string(p[k:k+int(n)]), string(p[k+int(n):])
	if err := ValidNode(node); err != nil {
		return "", "", err
	}
	if err := ValidFilter(filter); err != nil {
		return "", "", err
	}
	return node, filter, nil
}

// EncodeDropNode is the payload of CmdRoutesDropNode.
func EncodeDropNode(node string) ([]byte, error) {
	if err := ValidNode(node); err != nil {
		return nil, err
	}
	return []byte(node), nil
}

func key(filter, node string) []byte { return []byte(KeyPrefix + filter + "/" + node) }

// parseKey splits r/route/{filter}/{node}; node names hold no '/'.
func parseKey(k []byte) (filter, node string, ok bool) {
	rest, ok := strings.CutPrefix(string(k), KeyPrefix)
	if !ok {
		return "", "", false
	}
	i := strings.LastIndexByte(rest, '/')
	if i <= 0 || i == len(rest)-1 {
		return "", "", false
	}
	return rest[:i], rest[i+1:], true
}

// change is a committed change, applied to the index in AfterCommit.
type change struct {
	t      *Table
	add    bool
	node   string
	filter string // "" with !add: every route of node
	// A drop: the filters it deleted; more when it left routes of node
	// behind (repeat it), and stop the first of those.
	dropped []string
	more    bool
	stop    []byte
}

var _ fsm.AfterCommitter = (*change)(nil)

// More reports whether a CmdRoutesDropNode left routes behind (it deletes
// at most a few thousand per command).
func (c *change) More() bool { return c.more }

func (c *change) AfterCommit() {
	t := c.t
	t.mu.Lock()
	switch {
	case c.add:
		addLocked(t.byNode, t.idx, c.node, c.filter)
	case c.filter != "":
		if fs := t.byNode[c.node]; fs != nil {
			delete(fs, c.filter)
			if len(fs) == 0 {
				delete(t.byNode, c.node)
			}
		}
		t.idx.Unsubscribe(c.filter, c.node)
	default:
		// A drop: what it deleted is exactly what Badger no longer holds
		// (it may have been cut short, more).
		fs := t.byNode[c.node]
		for _, f := range c.dropped {
			delete(fs, f)
			t.idx.Unsubscribe(f, c.node)
		}
		if len(fs) == 0 {
			delete(t.byNode, c.node)
		}
	}
	if c.add {
		t.drops.Forget(c.node)
	} else if c.filter == "" {
		t.drops.Mark(c.node, c.stop)
	}
	t.mu.Unlock()
	t.changed(c.node, c.filter)
}

func (t *Table) applyAdd(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	node, filter, err := DecodeRoute(payload)
	if err != nil {
		return nil, err
	}
	t.drops.Forget(node) // a route of node, maybe below its drop's mark
	if err := tx.Set(key(filter, node), nil); err != nil {
		return nil, err
	}
	return &change{t: t, add: true, node: node, filter: filter}, nil
}

func (t *Table) applyDel(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	node, filter, err := DecodeRoute(payload)
	if err != nil {
		return nil, err
	}
	if err := tx.Delete(key(filter, node)); err != nil {
		return nil, err
	}
	return &change{t: t, node: node, filter: filter}, nil
}

func (t *Table) applyDropNode(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	node := string(payload)
	if err := ValidNode(node); err != nil {
		return nil, err
	}
	var keys [][]byte
	var dropped []string
	var stop []byte
	it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte(KeyPrefix)})
	visits := int64(0)
	t.drops.Start(it, node) // entries of node below its mark are gone
	for ; it.Valid(); it.Next() {
		visits++
		if f, n, ok := parseKey(it.Item().Key()); ok && n == node {
			if len(keys) == t.dropBatch {
				stop = it.Item().KeyCopy(nil)
				break
			}
			keys = append(keys, it.Item().KeyCopy(nil))
			dropped = append(dropped, f)
		}
	}
	it.Close()
	t.dropVisits.Add(visits)
	for _, k := range keys {
		if err := tx.Delete(k); err != nil {
			return nil, err
		}
	}
	return &change{t: t, node: node, dropped: dropped, more: stop != nil, stop: stop}, nil
}
