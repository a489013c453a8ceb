package node_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// dumpThrough reads every replicated key and value as tx sees them (its
// own pending writes included).
func dumpThrough(t *testing.T, tx *badger.Txn) map[string]string {
	t.Helper()
	out := map[string]string{}
	it := tx.NewIterator(badger.IteratorOptions{Prefix: fsm.Prefix, PrefetchValues: true})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		v, err := it.Item().ValueCopy(nil)
		if err != nil {
			t.Fatal(err)
		}
		out[string(it.Item().KeyCopy(nil))] = string(v)
	}
	return out
}

// malformedPayloads are payloads no proposer makes: not the command's
// encoding, or its encoding with fields missing, of the wrong type or
// naming what does not exist.
func malformedPayloads(rng *rand.Rand) [][]byte {
	out := [][]byte{nil, {}, []byte("null"), []byte("[]"), []byte("{"), []byte("{}"), []byte(`""`), {0}, {0xff},
		bytes.Repeat([]byte{0}, 8), bytes.Repeat([]byte{0xff}, 16), []byte(`{"v":1}`), []byte(`{"v":0}`), []byte(`{"v":99}`)}
	keys := []string{"v", "uid", "UID", "owner", "uid2", "gid", "id", "ID", "from", "to", "group", "conv", "by", "uids", "add", "remove",
		"at", "node", "name", "seq", "region", "members", "key", "op", "family", "hash", "reader", "peer", "upTo", "device", "platform", "token", "entry"}
	values := []any{1, 0, -1, "", "alice", "bob", "Alice!", "g1", "g1@us", "alice@us", "2026-01-01T00:00:00Z", true, false, nil,
		[]string{"alice", "bob"}, []any{1, "x"}, map[string]any{"id": "alice"}, 1 << 62, "x/../y"}
	for range 300 {
		m := map[string]any{}
		for range 1 + rng.IntN(6) {
			m[keys[rng.IntN(len(keys))]] = values[rng.IntN(len(values))]
		}
		b, _ := json.Marshal(m)
		out = append(out, b)
	}
	for range 100 {
		b := make([]byte, rng.IntN(48))
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		out = append(out, b)
	}
	return out
}

// Every command type a node registers refuses a malformed payload
// without writing (the FSM commits what a handler wrote before its
// error, so a refused command that wrote leaves half of a change in
// the replicated state) and without panicking (a panic on apply stops
// every node of the cluster, at every restart).
func TestEveryHandlerRefusesMalformedPayloadsWithoutWriting(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "alice")
	n.NewUser(t, "bob")
	rng := rand.New(rand.NewPCG(34, 1))
	payloads := malformedPayloads(rng)
	registered := 0
	for typ := range 256 {
		h, db := node.FSMHandler(n.Node, byte(typ))
		if h == nil {
			continue
		}
		registered++
		for i, p := range payloads {
			func() {
				tx := db.NewTransaction(true)
				defer tx.Discard()
				before := dumpThrough(t, tx)
				var herr error
				func() {
					defer func() {
						if r := recover(); r != nil {
							t.Errorf("command type %#x, payload %d %q: the handler panicked: %v", typ, i, p, r)
						}
					}()
					_, herr = h(tx, fsm.Position{Index: 1 << 40, Sub: uint16(i)}, p)
				}()
				if herr == nil {
					return
				}
				after := dumpThrough(t, tx)
				if diff := diffState(before, after); diff != "" {
					t.Errorf("command type %#x, payload %q: refused (%v) but wrote: %s", typ, p, herr, diff)
				}
			}()
		}
	}
	if registered < 50 {
		t.Fatalf("only %d command types registered", registered)
	}
}

func diffState(a, b map[string]string) string {
	var out []string
	for k, v := range a {
		if w, ok := b[k]; !ok {
			out = append(out, "deleted "+k)
		} else if w != v {
			out = append(out, "changed "+k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, "set "+k)
		}
	}
	if len(out) == 0 {
		return ""
	}
	return fmt.Sprint(out)
}
