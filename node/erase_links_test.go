package node_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// bob@us deletes his account: us erases what it holds of him, and tells
// eu, which erases what it holds of him too (his conversations with its
// users, their contacts of him, his contacts mirrored there) and answers
// him as a deleted user. alice@eu and carol@eu keep their own
// conversation. Before, eu kept everything (the erasure did not cross
// links).
func TestAccountErasureCrossesRegionLinks(t *testing.T) {
	eu, us := nodetest.StartRegionPair(t, "eu", "us", nodetest.WithConfig(func(c *node.Config) { c.AccountDeleteGrace = 0 }))
	aliceTok, carolTok := eu.NewUser(t, "alice"), eu.NewUser(t, "carol")
	bobTok := us.NewUser(t, "bob")

	// Contacts both ways across the link.
	if st := api(t, eu, aliceTok, "POST", "/user/me/contacts", map[string]string{"uid": "bob@us"}, nil); st != 201 && st != 200 {
		t.Fatalf("alice adds bob@us: %d", st)
	}
	if st := api(t, us, bobTok, "POST", "/user/me/contacts", map[string]string{"uid": "alice@eu"}, nil); st != 201 && st != 200 {
		t.Fatalf("bob adds alice@eu: %d", st)
	}
	alice := mustConnectV5(t, eu.MQTTURL, "alice", "laptop", aliceTok)
	bob := mustConnectV5(t, us.MQTTURL, "bob", "phone", bobTok)
	for i := 0; i < 3; i++ {
		if code, _ := alice.Pub(t, "user/bob@us/newMessage", 1, textMsg(fmt.Sprintf("a%d", i), "hi bob")); code != 0 {
			t.Fatalf("alice → bob@us: %#x", code)
		}
		if code, _ := bob.Pub(t, "user/alice@eu/newMessage", 1, textMsg(fmt.Sprintf("b%d", i), "hi alice")); code != 0 {
			t.Fatalf("bob → alice@eu: %#x", code)
		}
	}
	if code, _ := alice.Pub(t, "user/carol/newMessage", 1, textMsg("c0", "hi carol")); code != 0 {
		t.Fatalf("alice → carol: %#x", code)
	}
	var hist historyPage
	checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if st := api(t, eu, aliceTok, "GET", "/chat/history?with=bob@us", nil, &hist); st != 200 || len(hist.Messages) != 6 {
			return fmt.Errorf("alice's history with bob@us: %d, %d messages", st, len(hist.Messages))
		}
		// bob's contact of alice@eu is mirrored in eu.
		for k := range node.DumpState(t, eu.Node, "r/user/c/bob@us/") {
			if strings.HasSuffix(k, "/alice") {
				return nil
			}
		}
		return errors.New("bob@us's contact of alice not mirrored in eu yet")
	})
	named := map[string]int{}
	for _, k := range erasedKeys(t, eu, "bob@us") {
		named[strings.Join(strings.SplitN(k, "/", 4)[:3], "/")]++
	}
	for _, p := range []string{"r/user/c", "r/arch/c", "r/arch/s", "r/arch/v", "r/arch/x"} {
		if named[p] == 0 {
			t.Fatalf("no key under %s/ of eu names bob@us before the deletion: %v", p, named)
		}
	}

	if st := api(t, us, bobTok, "DELETE", "/user/me", map[string]string{"password": nodetest.Password("bob")}, nil); st != 202 {
		t.Fatalf("bob deletes his account: %d", st)
	}
	checkFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if left := erasedKeys(t, us, "bob"); len(left) > 0 {
			return fmt.Errorf("us: %d keys still name bob: %v", len(left), left[:min(len(left), 5)])
		}
		if left := erasedKeys(t, eu, "bob@us"); len(left) > 0 {
			return fmt.Errorf("eu: %d keys still name bob@us: %v", len(left), left[:min(len(left), 5)])
		}
		return nil
	})
	if st := api(t, eu, aliceTok, "GET", "/chat/history?with=bob@us", nil, &hist); st != 200 || len(hist.Messages) != 0 {
		t.Fatalf("alice's history with bob@us after: %d %+v", st, hist.Messages)
	}
	var convs conversations
	if st := api(t, eu, aliceTok, "GET", "/chat/conversations", nil, &convs); st != 200 {
		t.Fatalf("conversations: %d", st)
	}
	carol := false
	for _, c := range convs.Conversations {
		if c.Peer == "bob@us" {
			t.Fatalf("alice still lists her conversation with bob@us: %+v", convs)
		}
		carol = carol || c.Peer == "carol"
	}
	if !carol {
		t.Fatalf("alice lost her conversation with carol: %+v", convs)
	}
	var contacts struct {
		Contacts []profileView `json:"contacts"`
	}
	if st := api(t, eu, aliceTok, "GET", "/user/me/contacts", nil, &contacts); st != 200 || len(contacts.Contacts) != 0 {
		t.Fatalf("alice's contacts: %d %+v", st, contacts)
	}
	var prof profileView
	if st := api(t, eu, aliceTok, "GET", "/user/bob@us", nil, &prof); st != 200 || !prof.Deleted || prof.DisplayName != "deleted user" {
		t.Fatalf("GET /user/bob@us in eu: %d %+v", st, prof)
	}
	if st := api(t, eu, aliceTok, "POST", "/user/me/contacts", map[string]string{"uid": "bob@us"}, nil); st != 404 {
		t.Fatalf("adding the erased bob@us as a contact: %d", st)
	}
	if code, _ := alice.Pub(t, "user/bob@us/newMessage", 1, textMsg("late", "still there?")); code != 0x90 {
		t.Fatalf("a message to the erased bob@us: %#x, want 0x90 no such user", code)
	}
	if st := api(t, eu, carolTok, "GET", "/chat/history?with=alice", nil, &hist); st != 200 || len(hist.Messages) != 1 {
		t.Fatalf("carol's history with alice: %d %+v", st, hist.Messages)
	}
}
