package badgeropts

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// TestOpensATreeWrittenWithOtherOptions: a node upgraded to these options
// keeps its data directory, whose tables were written with 4 KB blocks
// and five L0 tables (Badger's defaults, and the node's before session
// 12). Every key must read back from those tables, and new writes must
// go on beside them.
func TestOpensATreeWrittenWithOtherOptions(t *testing.T) {
	dir := t.TempDir()
	old := badger.DefaultOptions(dir).WithLogger(nil).
		WithCompression(Node(dir).Compression).WithZSTDCompressionLevel(1)
	if old.BlockSize == BlockSize || old.NumLevelZeroTables == LevelZeroTables {
		t.Fatalf("Badger's defaults are these options now (block %d, L0 %d): the test proves nothing", old.BlockSize, old.NumLevelZeroTables)
	}
	const n = 20000
	key := func(i int) []byte { return fmt.Appendf(nil, "r/arch/c/d:a:b/%08d", i) }
	val := func(i int) []byte { return bytes.Repeat(fmt.Appendf(nil, "body %d;", i), 8) }
	db, err := badger.Open(old)
	if err != nil {
		t.Fatal(err)
	}
	wb := db.NewWriteBatch()
	for i := range n {
		if err := wb.Set(key(i), val(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := wb.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil { // writes the memtable out as a table
		t.Fatal(err)
	}

	db, err = badger.Open(Node(dir).WithLogger(nil))
	if err != nil {
		t.Fatalf("opening the older tree with the node's options: %v", err)
	}
	defer db.Close()
	if len(db.Tables()) == 0 {
		t.Fatal("no tables: the keys would be read from a memtable, not from 4 KB blocks")
	}
	if err := db.Update(func(tx *badger.Txn) error { return tx.Set(key(n), val(n)) }); err != nil {
		t.Fatal(err)
	}
	err = db.View(func(tx *badger.Txn) error {
		for i := range n + 1 {
			item, err := tx.Get(key(i))
			if err != nil {
				return fmt.Errorf("key %d: %w", i, err)
			}
			v, err := item.ValueCopy(nil)
			if err != nil {
				return fmt.Errorf("key %d: %w", i, err)
			}
			if !bytes.Equal(v, val(i)) {
				return fmt.Errorf("key %d = %q, want %q", i, v, val(i))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
