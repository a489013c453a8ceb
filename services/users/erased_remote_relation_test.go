package users

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/wire"
)

// bob@us was erased in us and us told eu, which erased him too (his
// tombstone r/user/gone/bob@us). Blocking him afterwards is refused as
// for an erased user of eu (404; the change's handler found no
// profile), and so is any contact or block of him committed after the
// erasure, even one whose node checked before it knew (the erasure of
// another region has no grace period): before, alice's block of bob@us
// was stored (us still answered his profile from a cached copy, or the
// link was down and the block was kept unchecked) and named, for good,
// the user eu had just erased, and it went to us, which refuses it.
func TestRelationOfAnErasedUserOfAnotherRegionRefused(t *testing.T) {
	e := newEnv(t)
	e.users("alice")
	e.svc.SetRegions(fakeRegions{})
	e.svc.SetRemoteProfiles(fakeRemote{}) // answers bob@us's profile (a cached copy)
	if err := e.db.Update(func(tx *badger.Txn) error { return tx.Set([]byte(prefixGoneProfile+"bob@us"), nil) }); err != nil {
		t.Fatal(err)
	}
	if r := e.do(http.MethodPost, "/user/me/blocks", `{"uid":"bob@us"}`, "alice"); r.Code != http.StatusNotFound {
		t.Errorf("alice blocks the erased bob@us: %d %s, want 404", r.Code, r.Body)
	}
	// Checked on a node that did not know yet, committed after.
	for _, cmd := range []byte{wire.CmdContact, wire.CmdBlock} {
		b, _ := json.Marshal(relationCmd{Owner: "alice", UID: "bob@us", Add: true, At: time.Unix(1700000000, 0).UTC()})
		if _, err := e.prop.Propose(context.Background(), cmd, b); err == nil {
			t.Errorf("command %#x: alice's relation with the erased bob@us committed", cmd)
		}
	}
	if err := e.db.View(func(tx *badger.Txn) error {
		it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte("r/user/")})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if k := string(it.Item().Key()); strings.Contains(k, "bob@us") && k != prefixGoneProfile+"bob@us" {
				t.Errorf("key naming the erased bob@us: %q", k)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
