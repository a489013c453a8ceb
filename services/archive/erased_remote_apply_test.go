package archive

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/wire"
)

// lagging is this node's directory while it has not applied bob@us's
// erasure yet (its in-memory Deleted still says no), but the replicated
// state the message is applied on has it: the leader's sweeper erased
// him at once (an erasure of another region has no grace period).
type lagging struct{ fakeDir }

func (lagging) Deleted(string) bool { return false }

func (lagging) DeletedIn(tx *badger.Txn, uid string) (bool, error) {
	_, err := tx.Get([]byte("r/auth/gone/" + uid))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

// A direct message to or from bob@us, checked on a node that had not
// applied his erasure yet and committed after the erasure's steps,
// must not be stored: the erasure is over, nothing would ever take it
// (alice's conversation with bob@us came back, and her message waited
// in the outbox for us, which refuses it).
func TestDirectMessageOfAnErasedUserOfAnotherRegionIsNotStored(t *testing.T) {
	e := newEnv(t, withRegions(euLinkedToUS), withUsers(lagging{fakeDir{"alice": true}}))
	ctx := context.Background()
	// eu committed bob@us's erasure (CmdRemoteErase) and erased him.
	if err := e.db.Update(func(tx *badger.Txn) error { return tx.Set([]byte("r/auth/gone/bob@us"), []byte(`{}`)) }); err != nil {
		t.Fatal(err)
	}
	_, _, _, err := e.svc.SendDirect(ctx, "alice", "bob@us", wire.Envelope{CID: "late", Type: wire.TypeText, Body: "still there?"})
	if !errors.Is(err, wire.ErrNotFound) {
		t.Errorf("alice → the erased bob@us: %v, want not found", err)
	}
	_, _, _, err = e.svc.StoreRemote(ctx, wire.Envelope{ID: e.ids.Next(), From: "bob@us", To: "alice", CID: "b9", Type: wire.TypeText, Body: "late"})
	if !errors.Is(err, wire.ErrForbidden) {
		t.Errorf("the erased bob@us → alice: %v, want forbidden", err)
	}
	for k := range dump(t, e.db) {
		if strings.HasPrefix(k, "r/arch/") && strings.Contains(k, "bob@us") {
			t.Errorf("key naming the erased bob@us stored: %q", k)
		}
	}
}
