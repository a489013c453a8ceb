package region_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A message whose body a local recipient accepts (at most 8 KiB, the
// client's publish well under 16 KiB) reaches users of another region
// too. Its stored envelope writes each <, > and & as a 6-byte escape
// (\u003c): 4,000 '<' take 24 KiB there, and the other region parsed
// the forwarded envelope with the client's 16 KiB limit: a direct
// message came back undeliverable ("invalid"), a group message was
// skipped without a word. Both directions of a group are covered: the
// remote member's message to the home, and the home's relay back.
func TestEscapedBodyCrossesLinks(t *testing.T) {
	eu, us := startRegions(t, 1, "eu", "us", nil)
	aliceTok, bobTok := eu.newUser(t, "alice"), us.newUser(t, "bob")
	alice := connect(t, eu.nodes[0], "alice", "phone", aliceTok)

	direct := strings.Repeat("<", 4000)
	if code, ack := alice.Pub(t, "user/bob@us/newMessage", 1, textMsg("big", direct)); code != 0 {
		t.Fatalf("PUBACK %#x %q", code, ack.Properties.ReasonString)
	}
	nodetest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		for _, e := range history(t, us.nodes[0], bobTok, "alice@eu") {
			if e.Body == direct {
				return nil
			}
		}
		if m, ok := alice.TryNext(); ok {
			return fmt.Errorf("alice got on %s: %s", m.Topic, m.Payload)
		}
		return fmt.Errorf("the 4,000-byte direct message is not in bob's history")
	})

	gid := newGroupAcross(t, eu, aliceTok, []string{"bob@us"}, us, bobTok, []string{"alice@eu", "bob"})
	bob := connect(t, us.nodes[0], "bob", "phone", bobTok)
	fromBob, fromAlice := strings.Repeat("&", 4000), strings.Repeat(">", 4000)
	if code, ack := bob.Pub(t, "group/"+gid+"@eu/newMessage", 1, textMsg("g1", fromBob)); code != 0 {
		t.Fatalf("bob's PUBACK %#x %q", code, ack.Properties.ReasonString)
	}
	if code, ack := alice.Pub(t, "group/"+gid+"/newMessage", 1, textMsg("g2", fromAlice)); code != 0 {
		t.Fatalf("alice's PUBACK %#x %q", code, ack.Properties.ReasonString)
	}
	has := func(r *region, tok, g, body string) error {
		for _, e := range groupHistory(t, r.nodes[0], tok, g) {
			if e.Body == body {
				return nil
			}
		}
		return fmt.Errorf("a 4,000-byte group message is not in %s's history of %s", r.name, g)
	}
	nodetest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if err := has(eu, aliceTok, gid, fromBob); err != nil {
			return err
		}
		return has(us, bobTok, gid+"@eu", fromAlice)
	})
}
