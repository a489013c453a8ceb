package region

import (
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
)

// Expired messages deleted behind an entry that is not a message leave
// holes in the outbox: the backlog leaves them out, the link's reads
// skip them, and the cursor passing them clears the count.
func TestOutboxHolesOfExpiry(t *testing.T) {
	db, err := badger.Open(badger.DefaultOptions("").WithInMemory(true).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	update := func(f func(tx *badger.Txn) error) {
		t.Helper()
		if err := db.Update(f); err != nil {
			t.Fatal(err)
		}
	}
	update(func(tx *badger.Txn) error {
		for _, e := range []string{"m0", "Rcontact", "m2", "m3", "m4"} {
			if err := stageRegion(tx, "us", []byte(e)); err != nil {
				return err
			}
		}
		return nil
	})
	want := func(step string, n uint64, positions ...uint64) {
		t.Helper()
		if got, err := backlog(db, "us"); err != nil || got != n {
			t.Fatalf("%s: backlog %d %v, want %d", step, got, err, n)
		}
		items, _, err := source{db: db, region: "us"}.Read(0, 10)
		var got []uint64
		for _, it := range items {
			got = append(got, it.Pos)
		}
		if err != nil || len(got) != len(positions) {
			t.Fatalf("%s: read %v %v, want %v", step, got, err, positions)
		}
		for i := range got {
			if got[i] != positions[i] {
				t.Fatalf("%s: read %v, want %v", step, got, positions)
			}
		}
	}
	apply := func(h fsm.Handler, payload []byte) {
		t.Helper()
		update(func(tx *badger.Txn) error { _, err := h(tx, fsm.Position{}, payload); return err })
	}
	want("staged", 5, 0, 1, 2, 3, 4)
	apply(applyCursor, cursorCmd{Region: "us", Pos: 1}.encode()) // m0 expired at the head
	apply(applyExpire, expireCmd{Region: "us", Pos: []uint64{0, 2, 3, 9}}.encode())
	want("m2 and m3 expired behind the contact", 2, 1, 4)
	apply(applyExpire, expireCmd{Region: "us", Pos: []uint64{2}}.encode()) // again: nothing
	want("expired again", 2, 1, 4)
	apply(applyCursor, cursorCmd{Region: "us", Pos: 2}.encode()) // the contact acknowledged
	want("contact acknowledged", 1, 4)
	apply(applyCursor, cursorCmd{Region: "us", Pos: 5}.encode())
	want("all acknowledged", 0)
	update(func(tx *badger.Txn) error {
		if n, ok, err := getU64(tx, holesKey("us")); err != nil || ok {
			t.Fatalf("holes left: %d %v", n, err)
		}
		return nil
	})
	if c, err := decodeExpireCmd(expireCmd{Region: "us", Pos: []uint64{7, 1 << 40}}.encode()); err != nil || len(c.Pos) != 2 || c.Pos[1] != 1<<40 {
		t.Fatalf("expire command round trip: %+v %v", c, err)
	}
	for _, bad := range [][]byte{nil, {2, 'u', 's', 1}, {2, 'U', '!'}} {
		if _, err := decodeExpireCmd(bad); err == nil {
			t.Errorf("%q decoded", bad)
		}
	}
}
