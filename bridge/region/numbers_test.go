package region_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/node/nodetest"
)

// regionOf is the region-number part of a message ID's machine bits.
func regionOf(t *testing.T, id string) uint16 {
	t.Helper()
	v, err := snowflake.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	return v.Machine() >> 6
}

// Each region mints IDs with its number in the top machine bits, so a
// message keeps one ID in both regions and never meets another's.
func TestRegionNumbersInIDs(t *testing.T) {
	eu, us := startRegions(t, 1, "eu", "us", nil) // numbers 1 and 2
	aliceTok, bobTok := eu.newUser(t, "alice"), us.newUser(t, "bob")
	alice := connect(t, eu.nodes[0], "alice", "phone", aliceTok)
	bob := connect(t, us.nodes[0], "bob", "phone", bobTok)
	alice.MustSub(t, "user/alice/newMessage")
	bob.MustSub(t, "user/bob/newMessage")
	if code, _ := alice.Pub(t, "user/bob@us/newMessage", 1, textMsg("n1", "hi")); code != 0 {
		t.Fatalf("PUBACK %#x", code)
	}
	got := decode(t, bob.Next(t).Payload)
	if r := regionOf(t, got.ID); r != 1 {
		t.Fatalf("eu's message %s has region number %d, want 1", got.ID, r)
	}
	if code, _ := bob.Pub(t, "user/alice@eu/newMessage", 1, textMsg("n2", "hi back")); code != 0 {
		t.Fatalf("PUBACK %#x", code)
	}
	_ = alice.Next(t) // alice's own copy of n1
	back := decode(t, alice.Next(t).Payload)
	if r := regionOf(t, back.ID); r != 2 || back.From != "bob@us" {
		t.Fatalf("us's message %+v has region number %d, want 2", back, r)
	}
}

// Two regions configured with the same number are refused at the link's
// CONNECT (their IDs could clash): nothing crosses, it is counted and the
// message waits in the outbox. The dialling side says so too: it counted
// a plain connects{result="refused"}, which the docs explain as a wrong
// secret, and now counts connects{result="number_clash"} (and logs an
// error naming --region-number).
func TestSameRegionNumberRefused(t *testing.T) {
	eu, us := startNumbered(t, 1, "eu", "us", nil, nil, map[string]int{"eu": 3, "us": 3})
	aliceTok := eu.newUser(t, "alice")
	us.newUser(t, "bob")
	alice := connect(t, eu.nodes[0], "alice", "phone", aliceTok)
	if code, _ := alice.Pub(t, "user/bob@us/newMessage", 1, textMsg("c1", "hello")); code != 0 {
		t.Fatalf("PUBACK %#x (committed in eu whatever the link does)", code)
	}
	nodetest.CheckFor(t, 20e9, 20e6, func() error {
		if n := counter(t, us.nodes[0], "edgechat_region_link_auth_total", `result="number_clash"`); n == 0 {
			return errors.New("us refused no link for its number yet")
		}
		if n := counter(t, eu.nodes[0], "edgechat_region_link_connects_total", `result="number_clash"`); n == 0 {
			return fmt.Errorf("eu counts no number_clash of its link (refused: %v)",
				counter(t, eu.nodes[0], "edgechat_region_link_connects_total", `result="refused"`))
		}
		return nil
	})
	if n := counter(t, us.nodes[0], "edgechat_region_link_received_total", ""); n != 0 {
		t.Fatalf("us received %v messages over a refused link", n)
	}
	if n, err := eu.nodes[0].Node.Region.Backlog("us"); err != nil || n != 1 {
		t.Fatalf("eu's backlog to us: %d, %v; want 1", n, err)
	}
}
