package node_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// Messages written before a snapshot (which compacts the Raft log; the
// snapshot only refers to the node's Badger) and a value-log GC read back
// after a restart on the same data. A message resent after the restart is
// still recognised as a duplicate. When the node's Badger is gone the
// node refuses to start: its snapshot does not hold the state.
func TestSettledStorageSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	n := nodetest.StartNode(t, nodetest.WithDataDir(dir))
	n.NewUser(t, "alice")
	n.NewUser(t, "bob")
	rng := rand.New(rand.NewPCG(1, 2))
	type sent struct {
		id      snowflake.ID
		payload []byte
	}
	var msgs []sent
	send := func(i int) {
		t.Helper()
		env, err := wire.ParseEnvelope(fmt.Appendf(nil, `{"cid":"m%d","type":"text","body":%q}`, i, randomBody(rng, 100)))
		if err != nil {
			t.Fatal(err)
		}
		stored, payload, _, err := n.Archive.SendDirect(ctx, "alice", "bob", env)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, sent{stored.ID, payload})
	}
	for i := range 300 {
		send(i)
	}
	if err := node.SettleStorage(ctx, n.Node); err != nil {
		t.Fatal(err)
	}
	for i := 300; i < 320; i++ { // in the log only
		send(i)
	}
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}

	check := func(n *nodetest.Node) {
		t.Helper()
		for _, m := range msgs {
			got, ok, err := n.Archive.MessageIn(m.id, "alice", "bob", "")
			if err != nil || !ok || !bytes.Equal(got, m.payload) {
				t.Fatalf("message %d after restart: %q, %v, %v; want %q", m.id, got, ok, err, m.payload)
			}
		}
		env, err := wire.ParseEnvelope([]byte(`{"cid":"m7","type":"text","body":"again"}`))
		if err != nil {
			t.Fatal(err)
		}
		stored, _, dup, err := n.Archive.SendDirect(ctx, "alice", "bob", env)
		if err != nil || !dup || stored.ID != msgs[7].id {
			t.Fatalf("resent m7: id %d dup %v err %v; want the original %d as a duplicate", stored.ID, dup, err, msgs[7].id)
		}
	}
	n2 := nodetest.StartNode(t, nodetest.WithDataDir(dir))
	check(n2)
	if err := n2.Stop(); err != nil {
		t.Fatal(err)
	}

	if err := os.RemoveAll(filepath.Join(dir, "db")); err != nil {
		t.Fatal(err)
	}
	cfg := nodetest.TestConfig(t)
	cfg.DataDir = dir
	if _, err := node.New(cfg, slog.New(slog.DiscardHandler)); !errors.Is(err, fsm.ErrStateLost) {
		t.Fatalf("node.New with its database gone: %v, want fsm.ErrStateLost", err)
	}
}
