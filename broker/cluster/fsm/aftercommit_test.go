package fsm

import (
	"errors"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
)

type commitProbe struct {
	db   *badger.DB
	seen *[]bool
}

// AfterCommit records whether the handler's write is visible to readers.
func (c commitProbe) AfterCommit() {
	err := c.db.View(func(tx *badger.Txn) error { _, err := tx.Get([]byte("r/probe")); return err })
	*c.seen = append(*c.seen, err == nil)
}

func TestAfterCommitRunsOnceTheWriteIsVisible(t *testing.T) {
	db, err := badger.Open(badger.DefaultOptions(t.TempDir()).WithLogger(nil).WithMemTableSize(16 << 20))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	f := New(db, nil)
	var seen []bool
	f.Register(0x70, func(tx *badger.Txn, _ Position, _ []byte) (any, error) {
		return commitProbe{db, &seen}, tx.Set([]byte("r/probe"), []byte("x"))
	})
	f.Register(0x71, func(*badger.Txn, Position, []byte) (any, error) {
		return commitProbe{db, &seen}, errors.New("refused")
	})
	f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: EncodeBatch([]Command{{Type: 0x70}, {Type: 0x71}})})
	if len(seen) != 1 || !seen[0] {
		t.Fatalf("AfterCommit calls %v, want one call that sees the write", seen)
	}
}
