package auth

import (
	"context"
	"errors"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
)

// An erase step in which a service's eraser fails after another erased
// its part keeps what the first did and tells it (its after-commit
// function: a service drops its cached copy of what it erased): the
// step returned the failure as the command's error, the FSM committed
// the first eraser's deletions all the same (a handler's error does not
// undo its writes), and the after-commit functions of a command in
// error never run, so the first service's cache kept what was gone
// from its state. The next step resumes with the eraser that failed.
func TestAFailedEraserKeepsWhatTheOthersErased(t *testing.T) {
	e := newEnv(t)
	told := 0
	e.svc.AddEraser("first", func(tx *badger.Txn, uid string, b *fsm.Budget) (bool, func(), error) {
		done, err := fsm.DeleteMatching(tx, []byte("r/test/"+uid+"/"), b, nil)
		return done, func() { told++ }, err
	})
	failing := true
	e.svc.AddEraser("second", func(*badger.Txn, string, *fsm.Budget) (bool, func(), error) {
		if failing {
			return false, nil, errors.New("boom")
		}
		return true, nil, nil
	})
	e.register("bob", "bob-password")
	seedTestKeys(t, e.db, "bob", 3)
	ctx := context.Background()
	if _, err := e.svc.DeleteAccount(ctx, "bob", "bob-password", "192.0.2.1"); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.erase(ctx, "bob"); err == nil {
		t.Fatal("an erase whose eraser fails said it was done")
	}
	if left := fsmtest.Dump(t, e.db, "r/test/"); len(left) != 0 && told == 0 {
		t.Fatalf("keys left: %v", left)
	}
	if told == 0 {
		t.Fatal("the first eraser's deletions were committed, but it was never told (its after-commit function did not run)")
	}
	failing = false
	if err := e.svc.erase(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if r, ok := e.svc.gone.get("bob"); !ok || r.ErasedAt == nil {
		t.Fatalf("bob not erased: %+v %v", r, ok)
	}
}
