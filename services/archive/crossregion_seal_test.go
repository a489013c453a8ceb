package archive

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// A direct conversation with a user of a linked region (d:alice:bob@us)
// must not stop the sealer: the other conversations are sealed, and its
// old messages move out of Badger like any other conversation's.
func TestSealerSealsCrossRegionConversations(t *testing.T) {
	segs, _ := localSegments(t, false)
	e := newEnv(t, withRegions(euLinkedToUS), withSegments(segs))
	for i := range 20 {
		e.send(t, "alice", "bob@us", fmt.Sprintf("x%d", i))
		e.send(t, "alice", "carol", fmt.Sprintf("y%d", i))
		e.send(t, "zed", "carol", fmt.Sprintf("z%d", i))
	}
	st, err := e.svc.SealOnce(context.Background(), SealConfig{MaxMessages: 64}, time.Now())
	if err != nil {
		t.Errorf("SealOnce: %v (sealed %+v)", err, st)
	}
	for _, c := range []string{directConv("alice", "carol"), directConv("carol", "zed"), directConv("alice", "bob@us")} {
		if n := hotCount(t, e.db, c); n != 1 {
			t.Errorf("%s keeps %d hot messages, want 1", c, n)
		}
	}
	// History still reads the sealed messages of the cross-region one.
	msgs, _, err := e.svc.historyPage(context.Background(), directConv("alice", "bob@us"), nil, 50)
	if err != nil || len(msgs) != 20 {
		t.Errorf("history of the cross-region conversation: %d messages, %v; want 20", len(msgs), err)
	}
}

// Retention expires cross-region conversations like the others.
func TestRetentionExpiresCrossRegionConversations(t *testing.T) {
	e := newEnv(t, withRegions(euLinkedToUS))
	for i := range 5 {
		e.send(t, "alice", "bob@us", fmt.Sprintf("x%d", i))
		e.send(t, "alice", "carol", fmt.Sprintf("y%d", i))
	}
	st, err := e.svc.ExpireOnce(context.Background(), RetentionPolicy{Days: 1}, time.Now().Add(48*time.Hour))
	if err != nil {
		t.Errorf("ExpireOnce: %v (%+v)", err, st)
	}
	for _, c := range []string{directConv("alice", "carol"), directConv("alice", "bob@us")} {
		if n := hotCount(t, e.db, c); n != 0 {
			t.Errorf("%s keeps %d hot messages past retention, want 0", c, n)
		}
	}
}

// Segment object keys of region-qualified peers and groups read back as
// the conversation they were made for.
func TestSegmentObjectKeysOfQualifiedIDsRoundTrip(t *testing.T) {
	for _, conv := range []string{"d:alice:bob", "d:alice:bob@us", "d:alice@us:bob", "d:alice@us:bob@eu", "g:k3x9", "g:_k3", "g:k3x9@eu", "g:_k3@eu"} {
		key, err := SegmentObjectKey(conv, 5, 9)
		if err != nil {
			t.Fatalf("%s: %v", conv, err)
		}
		if strings.Contains(key, "@") {
			t.Errorf("%s: key %q holds '@' (object stores refuse it)", conv, key)
		}
		got, last, ok := parseSegmentKey(key)
		if !ok || got != conv || last != 9 {
			t.Errorf("parseSegmentKey(%q) = %q, %d, %v; want %q, 9", key, got, last, ok, conv)
		}
	}
	for _, key := range []string{"d/alice/bob/_us/_eu/1-2.seg", "g/a/_b/_c/1-2.seg", "g/a/b/1-2.seg", "d/alice/1-2.seg"} {
		if conv, _, ok := parseSegmentKey(key); ok {
			t.Errorf("parseSegmentKey(%q) accepted as %q", key, conv)
		}
	}
}

// refusingSegments fails every upload under one prefix.
type refusingSegments struct {
	SegmentStore
	prefix string
}

func (r refusingSegments) Put(ctx context.Context, key string, data []byte) error {
	if strings.HasPrefix(key, r.prefix) {
		return errors.New("injected upload failure")
	}
	return r.SegmentStore.Put(ctx, key, data)
}

// A conversation whose segment cannot be stored is skipped, logged and
// reported; the sweep seals the others (before, it stopped at the first).
func TestSealerSkipsAFailingConversationAndSealsTheOthers(t *testing.T) {
	segs, _ := localSegments(t, true)
	e := newEnv(t, withSegments(refusingSegments{segs, "d/alice/bob/"}))
	for i := range 20 {
		e.send(t, "alice", "bob", fmt.Sprintf("x%d", i))
		e.send(t, "alice", "carol", fmt.Sprintf("y%d", i))
		e.send(t, "zed", "carol", fmt.Sprintf("z%d", i))
	}
	for _, budget := range []int64{0, 1} { // by age, then by the disk budget
		cfg := SealConfig{MaxMessages: 64}
		if budget > 0 {
			cfg = SealConfig{MaxMessages: 64, HotAge: 1000 * time.Hour, LocalBudget: budget}
		}
		st, err := e.svc.SealOnce(context.Background(), cfg, time.Now())
		if err == nil || !strings.Contains(err.Error(), "injected") || st.Failed != 1 {
			t.Errorf("budget %d: SealOnce = %+v, %v; want the failure reported for one conversation", budget, st, err)
		}
	}
	for c, want := range map[string]int{directConv("alice", "carol"): 1, directConv("carol", "zed"): 1, directConv("alice", "bob"): 20} {
		if n := hotCount(t, e.db, c); n != want {
			t.Errorf("%s keeps %d hot messages, want %d", c, n, want)
		}
	}
}

// A mirror of a group of another region (g:k3x9@eu) is sealed too, into
// an object key the store accepts: before, its key held '@', which object
// stores refuse (with a local store, every node failed to write its copy
// when applying the seal).
func TestSealerSealsMirrorGroupsOfOtherRegions(t *testing.T) {
	segs, _ := localSegments(t, false)
	e := newEnv(t, withGroups(), withUsers(&lockedDir{users: map[string]bool{"bob": true}}), withSegments(segs),
		withRegions(fakeRegions{local: "us", links: map[string]bool{"eu": true}}))
	ctx := context.Background()
	e.groups.add("k3x9@eu", "bob")
	e.groups.add("k3x9@eu", "alice@eu")
	id := snowflake.ID(1 << 30)
	for i := range 10 {
		id++
		if _, _, _, err := e.svc.StoreRemoteGroup(ctx, wire.Envelope{ID: id, From: "alice@eu", Group: "k3x9@eu", CID: fmt.Sprintf("c%d", i), Type: wire.TypeText, Body: "hi"}); err != nil {
			t.Fatal(err)
		}
	}
	st, err := e.svc.SealOnce(ctx, SealConfig{}, time.Now())
	if err != nil || st.Messages != 9 {
		t.Fatalf("SealOnce = %+v, %v; want 9 sealed", st, err)
	}
	msgs, _, err := e.svc.historyPage(ctx, groupConv("k3x9@eu"), nil, 50)
	if err != nil || len(msgs) != 10 {
		t.Errorf("history of the mirror group: %d messages, %v; want 10", len(msgs), err)
	}
	// A seal an earlier version committed with the '@' key is refused
	// (decoded before anything is written), not applied.
	old := sealCmd{Ref: SegmentRef{Conv: "g:k3x9@eu", FirstID: 1, LastID: 2, Count: 2, Key: "g/k3x9@eu/1-2.seg"}}
	if _, err := decodeSealCmd(old.encode()); !errors.Is(err, ErrBadCommand) {
		t.Errorf("a seal with the old key: %v, want ErrBadCommand", err)
	}
}
