package media

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/services/media/store"
)

func TestEraseAccountDropsDirectUploadsKeepsGroupOnes(t *testing.T) {
	e := newEnv(t, Config{Worker: true, SharedStore: true})
	ctx := context.Background()
	up := func(owner, name string) Record {
		r := e.upload(owner, name, name)
		e.svc.workOnce(ctx)
		return r
	}
	direct, group, unsent := up("bob", "direct.txt"), up("bob", "group.txt"), up("bob", "unsent.txt")
	alices := up("alice", "alices.txt")
	if err := e.svc.Attach(ctx, "bob", &wire.Media{ID: direct.ID}, "alice", ""); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Attach(ctx, "bob", &wire.Media{ID: group.ID}, "", "team"); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Attach(ctx, "alice", &wire.Media{ID: alices.ID}, "bob", ""); err != nil {
		t.Fatal(err)
	}
	eraseInSteps(t, e, "bob")
	// At once: nobody reads bob's direct and unsent uploads, nor bob alice's.
	for _, c := range []struct {
		id, who string
		code    int
	}{{direct.ID, "alice", 404}, {unsent.ID, "bob", 404}, {alices.ID, "bob", 404}, {alices.ID, "alice", 200}, {group.ID, "carol", 200}} {
		if r := e.do("GET", "/media/"+c.id, c.who, nil, nil); r.Code != c.code {
			t.Errorf("%s reads %s: %d, want %d", c.who, c.id, r.Code, c.code)
		}
	}
	e.svc.Sweep(ctx)
	for _, id := range []string{direct.ID, unsent.ID} {
		if _, err := e.svc.Get(id); err == nil {
			t.Errorf("record %s left after the sweep", id)
		}
		for _, tier := range []store.Tier{store.TierRaw, store.TierProcessed, store.TierCold} {
			if e.st.has(tier, id) {
				t.Errorf("file %s left in %s", id, tier)
			}
		}
	}
	if r, err := e.svc.Get(group.ID); err != nil || r.Erased || !e.st.has(store.TierProcessed, group.ID) {
		t.Fatalf("the group's upload: %+v %v", r, err)
	}
}

// failReader fails the test's upload if it is read: a replayed upload
// must not read its body.
type failReader struct{ t *testing.T }

func (f failReader) Read([]byte) (int, error) {
	f.t.Error("the body of an upload sent again was read")
	return 0, io.EOF
}

// An upload's Idempotency-Key answers the upload it made without reading
// the body again; it goes with an upload whose bytes never arrived (so
// that the retry makes it anew) and with its owner's account.
func TestUploadKeysFollowTheirUploads(t *testing.T) {
	e := newEnv(t, Config{Worker: true, SharedStore: true, MaxSize: 10})
	ctx := context.Background()
	keys := func() int { return len(fsmtest.Dump(t, e.prop.DB, prefixUploadKey)) }
	up := func(key, body string, size int64, r io.Reader) (Record, bool, error) {
		if r == nil {
			r = strings.NewReader(body)
		}
		return e.svc.StoreKeyed(ctx, "bob", Upload{Name: "a.txt", ClaimedType: "text/plain", Size: size, Body: r, Key: key})
	}
	first, replay, err := up("k1", "abc", 3, nil)
	if err != nil || replay {
		t.Fatalf("upload: %v %v", replay, err)
	}
	again, replay, err := up("k1", "", 3, failReader{t})
	if err != nil || !replay || again.ID != first.ID {
		t.Fatalf("sent again: %+v %v %v", again, replay, err)
	}
	if _, _, err := up("k1", "abcd", 4, nil); !errors.Is(err, ErrKeyReused) {
		t.Fatalf("the key with another size: %v", err)
	}
	// Too large: the first attempt's record goes, and its key with it.
	if _, _, err := up("k2", "0123456789abc", -1, nil); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("too large: %v", err)
	}
	if n := keys(); n != 1 {
		t.Fatalf("%d keys after a failed upload, want 1", n)
	}
	if r, replay, err := up("k2", "01234", -1, nil); err != nil || replay || r.ID != keyedID("bob", "k2") {
		t.Fatalf("the failed upload sent again: %+v %v %v", r, replay, err)
	}
	for done := false; !done; {
		tx := e.prop.DB.NewTransaction(true)
		if done, _, err = e.svc.EraseAccount(tx, "bob", fsm.NewBudget(1)); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	if n := keys(); n != 0 {
		t.Fatalf("%d keys after erasing their owner", n)
	}
}

// alice of eu was erased there, and eu told us (bridge/region
// erasure.go): us erases the records of the media she sent its users in
// direct messages (nobody reads them any more); what she sent to a
// group stays, as for a local user. EraseAccount refused a user of
// another region.
func TestEraseAccountOfAnotherRegionsUser(t *testing.T) {
	e := newEnv(t, Config{MaxSize: 1 << 20})
	ctx := context.Background()
	e.svc.SetRemote(&fakeRemote{gate: make(chan struct{})})
	direct := &wire.Media{ID: remoteID(0), Mime: "image/png", Kind: "image", Size: 10}
	if err := e.svc.AttachRemote(ctx, "us", "eu", "alice@eu", direct, "bob", "", 77); err != nil {
		t.Fatal(err)
	}
	group := &wire.Media{ID: remoteID(1), Mime: "image/png", Kind: "image", Size: 10}
	if err := e.svc.AttachRemote(ctx, "us", "eu", "alice@eu", group, "", "team", 78); err != nil {
		t.Fatal(err)
	}
	eraseInSteps(t, e, "alice@eu")
	if r, err := e.svc.Get(direct.ID); err == nil && !r.Erased {
		t.Errorf("alice@eu's direct media %s: %+v, want erased", direct.ID, r)
	}
	if r, err := e.svc.Get(group.ID); err != nil || r.Erased {
		t.Errorf("alice@eu's group media %s: %+v %v, want kept", group.ID, r, err)
	}
}

// eraseInSteps runs the media eraser for uid, one key per step, until it
// says done.
func eraseInSteps(t *testing.T, e *env, uid string) {
	t.Helper()
	for done, steps := false, 0; !done; steps++ {
		if steps > 100 {
			t.Fatal("never done")
		}
		tx := e.prop.DB.NewTransaction(true)
		var err error
		if done, _, err = e.svc.EraseAccount(tx, uid, fsm.NewBudget(1)); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
}
