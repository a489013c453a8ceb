package clustertest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/wire"
)

const cmdPut byte = 0xF0 // payload "k=v": sets r/t/k

func withPut(m *Server) {
	m.FSM.Register(cmdPut, func(tx *badger.Txn, _ fsm.Position, p []byte) (any, error) {
		for i, b := range p {
			if b == '=' {
				return string(p[:i]), tx.Set(append([]byte("r/t/"), p[:i]...), p[i+1:])
			}
		}
		return nil, errors.New("no =")
	})
}

func put(k, v string) fsm.Command { return fsm.Command{Type: cmdPut, Payload: []byte(k + "=" + v)} }

func get(m *Server, k string) (string, error) {
	var v []byte
	err := m.DB.View(func(tx *badger.Txn) error {
		it, err := tx.Get([]byte("r/t/" + k))
		if err != nil {
			return err
		}
		v, err = it.ValueCopy(nil)
		return err
	})
	return string(v), err
}

func TestMinorityCannotCommitMajorityCanAndHealConverges(t *testing.T) {
	c := StartInmem(t, 5, WithHandlers(withPut))
	ctx := context.Background()
	if res, _, err := c.Propose(ctx, put("before", "1")); err != nil || res[0].Value != "before" {
		t.Fatalf("propose: %+v, %v", res, err)
	}

	// Cut the leader and one follower off: a minority of two.
	old := c.Leader()
	var buddy *Server
	for _, m := range c.Servers {
		if m != old {
			buddy = m
			break
		}
	}
	c.Partition(old.ID, buddy.ID)
	var majority []string
	for _, m := range c.Servers {
		if m != old && m != buddy {
			majority = append(majority, m.ID)
		}
	}

	// The old leader cannot commit: its proposal fails (it steps down or
	// times out), it is never a success.
	mctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, _, err := old.Propose(mctx, put("minority", "x")); !errors.Is(err, wire.ErrUnavailable) {
		t.Fatalf("minority propose: %v, want ErrUnavailable", err)
	}
	// The majority elects a leader and commits.
	leader := c.Leader(majority...)
	var last uint64
	for i := range 10 {
		_, idx, err := leader.Propose(ctx, put(fmt.Sprint("maj", i), "y"))
		if err != nil {
			t.Fatalf("majority propose: %v", err)
		}
		last = idx
	}
	for _, m := range []*Server{old, buddy} {
		if _, err := get(m, "maj0"); err == nil {
			t.Fatalf("%s saw a write across the partition", m.ID)
		}
	}

	c.Heal()
	c.WaitApplied(last)
	for _, m := range c.Servers {
		for i := range 10 {
			if v, err := get(m, fmt.Sprint("maj", i)); err != nil || v != "y" {
				t.Errorf("%s: maj%d = %q, %v", m.ID, i, v, err)
			}
		}
		if _, err := get(m, "minority"); !errors.Is(err, badger.ErrKeyNotFound) {
			t.Errorf("%s has the minority's uncommitted write: %v", m.ID, err)
		}
		if v, err := get(m, "before"); err != nil || v != "1" {
			t.Errorf("%s: before = %q, %v", m.ID, v, err)
		}
	}
	// Healed cluster still takes writes.
	if _, _, err := c.Propose(ctx, put("after", "z")); err != nil {
		t.Fatal(err)
	}
}
