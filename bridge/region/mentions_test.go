package region_test

import (
	"encoding/json"
	"slices"
	"testing"
)

// Mentions cross links qualified and come back to plain names: alice of
// eu mentions bob@us (listed by her client) and carol (by @carol in the
// body) in a group message; bob sees mentions ["bob","carol@eu"]. bob
// mentions alice@eu back in a direct message; alice sees ["alice"].
func TestMentionsAcrossRegions(t *testing.T) {
	eu, us := startRegions(t, 1, "eu", "us", nil)
	aliceTok := eu.newUser(t, "alice")
	eu.newUser(t, "carol")
	bobTok := us.newUser(t, "bob")
	gid := newGroupAcross(t, eu, aliceTok, []string{"carol", "bob@us"}, us, bobTok, []string{"alice@eu", "bob", "carol@eu"})
	alice := connect(t, eu.nodes[0], "alice", "phone", aliceTok)
	bob := connect(t, us.nodes[0], "bob", "phone", bobTok)
	home, mirror := "group/"+gid+"/newMessage", "group/"+gid+"@eu/newMessage"
	alice.MustSub(t, home, "user/alice/newMessage")
	bob.MustSub(t, mirror)
	mentions := func(p []byte) []string {
		var v struct {
			Mentions []string `json:"mentions"`
		}
		if err := json.Unmarshal(p, &v); err != nil {
			t.Fatalf("%q: %v", p, err)
		}
		return v.Mentions
	}
	if code, ack := alice.Pub(t, home, 1, `{"cid":"m1","type":"text","body":"@carol and bob, see","mentions":["bob@us"]}`); code != 0 {
		t.Fatalf("PUBACK %#x %q", code, ack.Properties.ReasonString)
	}
	if got := mentions(nextOn(t, alice, home).Payload); !slices.Equal(got, []string{"bob@us", "carol"}) {
		t.Fatalf("alice's copy mentions %v", got)
	}
	if got := mentions(nextOn(t, bob, mirror).Payload); !slices.Equal(got, []string{"bob", "carol@eu"}) {
		t.Fatalf("bob's copy mentions %v", got)
	}
	if code, ack := bob.Pub(t, "user/alice@eu/newMessage", 1, `{"cid":"m2","type":"text","body":"thanks","mentions":["alice@eu"]}`); code != 0 {
		t.Fatalf("PUBACK %#x %q", code, ack.Properties.ReasonString)
	}
	if got := mentions(nextOn(t, alice, "user/alice/newMessage").Payload); !slices.Equal(got, []string{"alice"}) {
		t.Fatalf("alice got mentions %v", got)
	}
}
