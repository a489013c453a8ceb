package region

import (
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
)

// The erasure takes the user's direct messages and contact changes out
// of every outbox, in steps as small as the budget, and keeps the rest
// (others' messages, the user's group messages and leaves, notices);
// the backlog and the link's reads leave the holes out, and the cursor
// passing them clears the count.
func TestEraseAccountEmptiesTheOutboxesOfTheUser(t *testing.T) {
	db, err := badger.Open(badger.DefaultOptions("").WithInMemory(true).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	b := &Bridge{}
	update := func(f func(tx *badger.Txn) error) {
		t.Helper()
		if err := db.Update(f); err != nil {
			t.Fatal(err)
		}
	}
	stageAll := func(region string, entries ...string) {
		update(func(tx *badger.Txn) error {
			for _, e := range entries {
				if err := stageRegion(tx, region, []byte(e)); err != nil {
					return err
				}
			}
			return nil
		})
	}
	dm := func(from, to string) string {
		return `{"id":"1","from":"` + from + `","to":"` + to + `","type":"text","body":"x"}`
	}
	stageAll("us",
		dm("alice", "bob@us"),                                              // 0: erased
		dm("carol", "bob@us"),                                              // 1
		`{"id":"2","from":"alice","group":"g1","body":"x"}`,                // 2: a group message stays
		`R{"kind":"block","owner":"alice","uid":"bob@us","add":true}`,      // 3: erased
		`R{"kind":"block","owner":"carol","uid":"bob@us","add":true}`,      // 4
		`L{"group":"g9@us","uid":"alice"}`,                                 // 5: her leave stays
		dm("alice", "dave@us"),                                             // 6: erased
		`U{"id":"3","from":"bob@us","to":"alice","reason":"no_such_user"}`, // 7: a notice stays
	)
	stageAll("ap", dm("alice", "eve@ap"), dm("alice", "eve@ap"), dm("alicia", "eve@ap"))
	update(func(tx *badger.Txn) error {
		_, err := applyCursor(tx, fsm.Position{}, cursorCmd{Region: "ap", Pos: 1}.encode())
		return err
	})

	steps := 0
	for done := false; !done; steps++ {
		if steps > 10 {
			t.Fatal("the erasure does not end")
		}
		update(func(tx *badger.Txn) error {
			var err error
			done, _, err = b.EraseAccount(tx, "alice", fsm.NewBudget(2)) // one entry and the holes count a step
			return err
		})
	}
	if steps < 4 {
		t.Errorf("erased in %d steps of one entry, want at least 4", steps)
	}
	read := func(region string) []uint64 {
		items, _, err := source{db: db, region: region}.Read(0, 100)
		if err != nil {
			t.Fatal(err)
		}
		var out []uint64
		for _, it := range items {
			out = append(out, it.Pos)
		}
		return out
	}
	check := func(region string, backlogWant uint64, want ...uint64) {
		t.Helper()
		got := read(region)
		if len(got) != len(want) {
			t.Fatalf("%s: outbox %v, want %v", region, got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%s: outbox %v, want %v", region, got, want)
			}
		}
		if n, err := backlog(db, region); err != nil || n != backlogWant {
			t.Fatalf("%s: backlog %d %v, want %d", region, n, err, backlogWant)
		}
	}
	check("us", 5, 1, 2, 4, 5, 7)
	check("ap", 1, 2)
	// The cursor passes the holes: the count goes with them.
	update(func(tx *badger.Txn) error {
		if _, err := applyCursor(tx, fsm.Position{}, cursorCmd{Region: "us", Pos: 8}.encode()); err != nil {
			return err
		}
		_, err := applyCursor(tx, fsm.Position{}, cursorCmd{Region: "ap", Pos: 3}.encode())
		return err
	})
	check("us", 0)
	check("ap", 0)
	update(func(tx *badger.Txn) error {
		for _, r := range []string{"us", "ap"} {
			if n, ok, err := getU64(tx, holesKey(r)); err != nil || ok {
				t.Fatalf("%s: holes left: %d %v", r, n, err)
			}
		}
		return nil
	})
}

// Erasing bob@us here (us erased him and told us) takes the direct
// messages to him and the contact and block changes about him waiting
// in the outboxes, nothing else.
func TestErasedEntryOfAUserOfAnotherRegion(t *testing.T) {
	for _, c := range []struct {
		entry string
		want  bool
	}{
		{`{"id":"1","from":"alice","to":"bob@us","type":"text","body":"x"}`, true},
		{`{"id":"1","from":"alice","to":"bobby@us","type":"text","body":"x"}`, false},
		{`{"id":"1","from":"alice","to":"dave@us","type":"text","body":"\"to\":\"bob@us\""}`, false},
		{`{"id":"2","from":"alice","group":"g1@us","to":"bob@us","body":"x"}`, false}, // a group's: stays
		{`R{"kind":"contact","owner":"alice","uid":"bob@us","add":true}`, true},
		{`R{"kind":"contact","owner":"alice","uid":"dave@us","add":true}`, false},
		{`L{"group":"g9@us","uid":"alice"}`, false},
		{`U{"id":"3","from":"bob@us","to":"alice","reason":"no_such_user"}`, false},
		{`E{"uid":"alice"}`, false},
	} {
		if got := erasedEntry([]byte(c.entry), "bob@us"); got != c.want {
			t.Errorf("%s: %v, want %v", c.entry, got, c.want)
		}
	}
}
