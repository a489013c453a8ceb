package archive

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/edgechat/edgechat/internal/wire"
)

// Erasing alice takes the retry records of her conversation with bob@us
// too, those of bob's messages included: the link stored them under "@"
// and the origin's ID (StoreRemote), not under the cid in the body, and
// the erasure looked for dedup/bob@us/{cid}, which does not exist, so
// dedup/bob@us/@{id} stayed behind, naming a conversation that is gone.
func TestEraseAccountRemovesRetryRecordsOfAnotherRegionsMessages(t *testing.T) {
	e := newEnv(t, withRegions(euLinkedToUS))
	ctx := context.Background()
	var cids []string
	for i := range 3 {
		env := wire.Envelope{ID: e.ids.Next(), From: "bob@us", To: "alice", CID: fmt.Sprintf("b%d", i), Type: wire.TypeText, Body: "hi"}
		stored, _, dup, err := e.svc.StoreRemote(ctx, env)
		if err != nil || dup {
			t.Fatalf("StoreRemote %d: dup %v, %v", i, dup, err)
		}
		cids = append(cids, "@"+stored.ID.String())
	}
	if _, _, _, err := e.svc.SendDirect(ctx, "alice", "bob@us", wire.Envelope{CID: "a0", Type: wire.TypeText, Body: "hi back"}); err != nil {
		t.Fatal(err)
	}
	if left := dedupLeft(t, e, "bob@us", cids...); len(left) != 3 {
		t.Fatalf("retry records before the erasure: %v, want all of %v", left, cids)
	}
	eraseInSteps(t, e, "alice", 1000)
	if left := dedupLeft(t, e, "bob@us", cids...); len(left) != 0 {
		t.Errorf("retry records of bob@us's messages to the erased alice left: %v", left)
	}
	for k := range dump(t, e.db) {
		if strings.HasPrefix(k, string(dedupPrefixOf("bob@us"))) {
			t.Errorf("key left: %q", k)
		}
	}
}

// bob@us was erased in us and us told this region (bridge/region
// erasure.go): erasing "bob@us" here takes both sides of his direct
// conversations with this region's users, in small steps, and leaves
// theirs with each other. PeerRegions (what us reads to know whom to
// tell) names the regions of a user's direct peers. EraseAccount
// refused a user of another region.
func TestEraseAccountOfAUserOfAnotherRegion(t *testing.T) {
	e := newEnv(t, withRegions(euLinkedToUS))
	ctx := context.Background()
	for i := range 3 {
		env := wire.Envelope{ID: e.ids.Next(), From: "bob@us", To: "alice", CID: fmt.Sprintf("b%d", i), Type: wire.TypeText, Body: "hi"}
		if _, _, dup, err := e.svc.StoreRemote(ctx, env); err != nil || dup {
			t.Fatalf("StoreRemote %d: dup %v, %v", i, dup, err)
		}
	}
	for _, to := range []string{"bob@us", "carol"} {
		if _, _, _, err := e.svc.SendDirect(ctx, "alice", to, wire.Envelope{CID: "a-" + to, Type: wire.TypeText, Body: "hi"}); err != nil {
			t.Fatal(err)
		}
	}
	tx := e.db.NewTransaction(false)
	regions, err := PeerRegions(tx, "alice")
	tx.Discard()
	if err != nil || len(regions) != 1 || regions[0] != "us" {
		t.Fatalf("PeerRegions(alice) = %v, %v; want [us]", regions, err)
	}
	named := 0
	for k := range dump(t, e.db) {
		if strings.Contains(k, "bob@us") {
			named++
		}
	}
	if named < 10 {
		t.Fatalf("%d keys name bob@us before the erasure", named)
	}
	if steps := eraseInSteps(t, e, "bob@us", 4); steps < 2 {
		t.Fatalf("erased in %d step", steps)
	}
	for k := range dump(t, e.db) {
		if strings.Contains(k, "bob@us") {
			t.Errorf("key left: %q", k)
		}
	}
	tx = e.db.NewTransaction(false)
	regions, err = PeerRegions(tx, "alice")
	tx.Discard()
	if err != nil || len(regions) != 0 {
		t.Fatalf("PeerRegions(alice) after = %v, %v; want none", regions, err)
	}
	left := 0
	for k := range dump(t, e.db) {
		if strings.Contains(k, "d:alice:carol") {
			left++
		}
	}
	if left == 0 {
		t.Fatal("alice's conversation with carol went too")
	}
}
