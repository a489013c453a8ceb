package e2e_test

import (
	"context"
	"testing"
	"time"

	edgechat "github.com/edgechat/edgechat/clients/go"
	"github.com/edgechat/edgechat/node/nodetest"
)

// SendMessage with the CID of a message already stored (an app that
// retries a send whose outcome it did not learn, after a restart) keeps
// the message once and returns the message first stored with it, as
// SendMessage's documentation says: its ID, its body, its time. The
// server acknowledges such a retry without delivering it again, so no
// stored copy comes to match.
func TestSendWithAStoredCIDReturnsTheStoredMessage(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok := n.NewUser(t, "alice")
	n.NewUser(t, "bob")
	gid := newGroup(t, n, aliceTok, "team", "bob")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name string
		msg  edgechat.Message
	}{
		{"direct", edgechat.Message{To: "bob", Body: "first"}},
		{"group", edgechat.Message{Group: gid, Body: "first"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ab := newInbox()
			alice := dial(t, []string{n.WSURL}, "", aliceTok, ab, nil)
			first, err := alice.SendMessage(ctx, tc.msg)
			if err != nil || first.ID == "" {
				t.Fatalf("first send: %+v, %v", first, err)
			}
			// A later client of the app (EchoWait short: the test is about
			// what comes back, not when).
			again := dial(t, []string{n.WSURL}, "", aliceTok, nil, func(o *edgechat.Options) { o.EchoWait = 2 * time.Second })
			retry := tc.msg
			retry.CID, retry.Body = first.CID, "first, sent again"
			got, err := again.SendMessage(ctx, retry)
			if err != nil {
				t.Fatal(err)
			}
			if got.ID != first.ID || got.Body != first.Body || !got.Time.Equal(first.Time) {
				t.Fatalf("resent with cid %s: got id %q body %q, want the stored message, id %q body %q", first.CID, got.ID, got.Body, first.ID, first.Body)
			}
			var hist []edgechat.Message
			if tc.msg.Group != "" {
				hist, _, err = again.GroupHistory(ctx, gid, "", 50)
			} else {
				hist, _, err = again.History(ctx, "bob", "", 50)
			}
			if err != nil {
				t.Fatal(err)
			}
			stored := 0
			for _, h := range hist {
				if h.CID == first.CID {
					stored++
				}
			}
			if stored != 1 {
				t.Fatalf("%d stored copies of cid %s, want 1", stored, first.CID)
			}
		})
	}
}
