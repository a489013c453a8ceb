package cluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/wire"
)

// Snowflake machine numbers are 10 bits; 0 is kept free so that an
// unassigned number is never mistaken for a real one.
const (
	MaxMachineNumber = 1023
	maxNodeName      = MaxNodeName
)

// MaxNodeName is the longest node name (bytes) a cluster accepts.
const MaxNodeName = 128

// Keys of the machine-number registry: the number of each node name, and
// the reverse index in number order (zero-padded so keys sort by number).
const (
	nodeKeyPrefix    = "r/sys/nodes/"
	nodeNumKeyPrefix = "r/sys/nodenum/"
)

func nodeKey(name string) []byte { return []byte(nodeKeyPrefix + name) }

func nodeNumKey(num uint16) []byte { return fmt.Appendf(nil, "%s%04d", nodeNumKeyPrefix, num) }

// MachineNumber returns this node's snowflake machine number, assigning
// one through the Raft log the first time. The number is stored in the
// replicated state, so it is the same after a restart and unique in the
// cluster. A number already applied locally is returned without a
// proposal (it is committed, so it cannot change).
func (n *Raft) MachineNumber(ctx context.Context) (uint16, error) {
	num, ok, err := LookupMachineNumber(n.fsm, n.cfg.NodeName)
	if err != nil {
		return 0, err
	}
	if ok {
		return num, nil
	}
	v, err := n.Propose(ctx, wire.CmdNodeRegister, []byte(n.cfg.NodeName))
	if err != nil {
		return 0, fmt.Errorf("cluster: register machine number: %w", err)
	}
	num, ok = v.(uint16)
	if !ok {
		return 0, fmt.Errorf("cluster: register machine number: unexpected result %T", v)
	}
	return num, nil
}

// LookupMachineNumber reads the machine number of a node name from the
// local replicated state; ok is false when the name has none yet.
func LookupMachineNumber(f *fsm.FSM, name string) (num uint16, ok bool, err error) {
	err = f.DB().View(func(tx *badger.Txn) error {
		num, ok, err = readNodeNumber(tx, name)
		return err
	})
	return num, ok, err
}

func readNodeNumber(tx *badger.Txn, name string) (uint16, bool, error) {
	item, err := tx.Get(nodeKey(name))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	var num uint64
	err = item.Value(func(v []byte) error {
		num, err = strconv.ParseUint(string(v), 10, 16)
		return err
	})
	if err != nil || num == 0 || num > MaxMachineNumber {
		return 0, false, fmt.Errorf("cluster: corrupt machine number of %q: %v", name, err)
	}
	return uint16(num), true, nil
}

// applyNodeRegister is the FSM handler of wire.CmdNodeRegister: payload
// is a node name; it returns (uint16) the name's number, assigning the
// smallest free one in 1..1023 the first time.
func applyNodeRegister(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	name := string(payload)
	if name == "" || len(name) > maxNodeName {
		return nil, fmt.Errorf("%w: node name must be 1..%d bytes", wire.ErrInvalid, maxNodeName)
	}
	num, ok, err := readNodeNumber(tx, name)
	if err != nil {
		return nil, err
	}
	if ok {
		// Repair the reverse index if an earlier, too-big transaction
		// committed only half of the pair.
		if _, err := tx.Get(nodeNumKey(num)); errors.Is(err, badger.ErrKeyNotFound) {
			if err := tx.Set(nodeNumKey(num), []byte(name)); err != nil {
				return nil, err
			}
		}
		return num, nil
	}
	// The reverse index iterates in number order: the first gap is the
	// smallest free number.
	want := uint16(1)
	opts := badger.DefaultIteratorOptions
	opts.PrefetchValues = false
	opts.Prefix = []byte(nodeNumKeyPrefix)
	it := tx.NewIterator(opts)
	for it.Rewind(); it.Valid(); it.Next() {
		k := it.Item().Key()[len(nodeNumKeyPrefix):]
		got, err := strconv.ParseUint(string(k), 10, 16)
		if err != nil || uint16(got) != want {
			break
		}
		want++
	}
	it.Close()
	if want > MaxMachineNumber {
		return nil, ErrMachineNumbers
	}
	if err := tx.Set(nodeKey(name), strconv.AppendUint(nil, uint64(want), 10)); err != nil {
		return nil, err
	}
	if err := tx.Set(nodeNumKey(want), []byte(name)); err != nil {
		return nil, err
	}
	return want, nil
}
