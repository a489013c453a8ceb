package region_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/edgechat/edgechat/cluster/featurelevel"
	"github.com/edgechat/edgechat/node/nodetest"
)

// bob@us leaves a group of eu while us's link into eu is cut; before his
// leave arrives, alice (the owner) removes him and adds him again. The
// leave and eu's states cross. Documented answer (regions.md, "A member
// leaves"): a member's leave wins over changes the home made before it
// heard of it; us keeps bob out until eu's state says it has applied his
// leave (the state's "leaves"), so bob is never taken back in between,
// and both regions end with bob out; alice may then add him again.
func TestRemoteLeaveCrossesRemoveAndAddAgain(t *testing.T) {
	eu, us := startRegions(t, 1, "eu", "us", nil)
	// The rule is the state's from feature level LeaveSeqs on (below it
	// both regions keep the earlier one, as their nodes of an earlier
	// version do).
	nodetest.CheckFor(t, 20e9, 20e6, func() error {
		for _, r := range []*region{eu, us} {
			if l := r.nodes[0].Node.FeatureLevel(); l < featurelevel.LeaveSeqs {
				return fmt.Errorf("%s: feature level %d", r.name, l)
			}
		}
		return nil
	})
	aliceTok := eu.newUser(t, "alice")
	bobTok, daveTok := us.newUser(t, "bob"), us.newUser(t, "dave")
	gid := newGroupAcross(t, eu, aliceTok, []string{"bob@us", "dave@us"}, us, bobTok, []string{"alice@eu", "bob", "dave"})
	mirror := gid + "@eu"

	eu.in.setCut(true) // us's leave waits in us's outbox; eu's states still reach us
	if code := call(t, us.nodes[0], bobTok, "DELETE", "/user/groups/"+mirror+"/members/bob", nil, nil); code != http.StatusNoContent {
		t.Fatalf("bob leaves %s: %d", mirror, code)
	}
	if code := call(t, eu.nodes[0], aliceTok, "DELETE", "/user/groups/"+gid+"/members/bob@us", nil, nil); code != http.StatusNoContent {
		t.Fatalf("alice removes bob@us: %d", code)
	}
	waitMirror(t, us, daveTok, mirror, []string{"alice@eu", "dave"})
	if code := call(t, eu.nodes[0], aliceTok, "POST", "/user/groups/"+gid+"/members", map[string]any{"uid": "bob@us"}, nil); code != http.StatusOK {
		t.Fatalf("alice adds bob@us again: %d", code)
	}
	waitMirror(t, eu, aliceTok, gid, []string{"alice", "bob@us", "dave@us"})
	// eu's state listing bob again has reached us (the rename after it too).
	if code := call(t, eu.nodes[0], aliceTok, "PATCH", "/user/groups/"+gid, map[string]any{"name": "marker"}, nil); code != http.StatusOK {
		t.Fatalf("rename: %d", code)
	}
	nodetest.CheckFor(t, 20e9, 20e6, func() error {
		var g struct {
			Name string `json:"name"`
		}
		if code := call(t, us.nodes[0], daveTok, "GET", "/user/groups/"+mirror, nil, &g); code != http.StatusOK || g.Name != "marker" {
			return fmt.Errorf("us's mirror: %d %q", code, g.Name)
		}
		return nil
	})
	var errs []string
	if code := call(t, us.nodes[0], bobTok, "GET", "/user/groups/"+mirror, nil, nil); code != http.StatusNotFound {
		errs = append(errs, fmt.Sprintf("while the leave waits, us took bob back into %s (GET as bob: %d): eu had not seen his leave", mirror, code))
	}

	eu.in.setCut(false)
	nodetest.CheckFor(t, 20e9, 20e6, func() error {
		for _, r := range []*region{eu, us} {
			other := map[string]string{"eu": "us", "us": "eu"}[r.name]
			if got, err := r.nodes[0].Node.Region.Backlog(other); err != nil || got != 0 {
				return fmt.Errorf("%s's backlog to %s: %d, %v", r.name, other, got, err)
			}
		}
		return nil
	})
	waitMirror(t, eu, aliceTok, gid, []string{"alice", "dave@us"})
	waitMirror(t, us, daveTok, mirror, []string{"alice@eu", "dave"})
	// The leave is done in both regions: adding bob again brings him back.
	if code := call(t, eu.nodes[0], aliceTok, "POST", "/user/groups/"+gid+"/members", map[string]any{"uid": "bob@us"}, nil); code != http.StatusOK {
		t.Fatalf("alice adds bob@us after the leave: %d", code)
	}
	waitMirror(t, us, daveTok, mirror, []string{"alice@eu", "bob", "dave"})
	for _, e := range errs {
		t.Error(e)
	}
}

// bob@us leaves while the link into eu is cut and alice removes him
// meanwhile: his leave is then nothing to do in eu (no new state), and
// alice adding him afterwards brings him back in us (the state tells
// the leave applied, so us's pending leave ends).
func TestRemoteLeaveOfARemovedMemberThenAddedAgain(t *testing.T) {
	eu, us := startRegions(t, 1, "eu", "us", nil)
	aliceTok := eu.newUser(t, "alice")
	bobTok, daveTok := us.newUser(t, "bob"), us.newUser(t, "dave")
	gid := newGroupAcross(t, eu, aliceTok, []string{"bob@us", "dave@us"}, us, bobTok, []string{"alice@eu", "bob", "dave"})
	mirror := gid + "@eu"
	eu.in.setCut(true)
	if code := call(t, us.nodes[0], bobTok, "DELETE", "/user/groups/"+mirror+"/members/bob", nil, nil); code != http.StatusNoContent {
		t.Fatalf("bob leaves %s: %d", mirror, code)
	}
	if code := call(t, eu.nodes[0], aliceTok, "DELETE", "/user/groups/"+gid+"/members/bob@us", nil, nil); code != http.StatusNoContent {
		t.Fatalf("alice removes bob@us: %d", code)
	}
	waitMirror(t, us, daveTok, mirror, []string{"alice@eu", "dave"})
	eu.in.setCut(false)
	nodetest.CheckFor(t, 20e9, 20e6, func() error {
		if got, err := us.nodes[0].Node.Region.Backlog("eu"); err != nil || got != 0 {
			return fmt.Errorf("us's backlog to eu: %d, %v", got, err)
		}
		return nil
	})
	if code := call(t, eu.nodes[0], aliceTok, "POST", "/user/groups/"+gid+"/members", map[string]any{"uid": "bob@us"}, nil); code != http.StatusOK {
		t.Fatalf("alice adds bob@us again: %d", code)
	}
	waitMirror(t, us, daveTok, mirror, []string{"alice@eu", "bob", "dave"})
	waitMirror(t, eu, aliceTok, gid, []string{"alice", "bob@us", "dave@us"})
}
