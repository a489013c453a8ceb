package node_test

import (
	"fmt"
	"time"

	"testing"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A direct conversation makes presence visible both ways (protocol.md,
// Presence visibility). A watcher whose subscription to presence/{uid}
// was granted while uid had him in her contacts keeps it when she takes
// him out (its deliveries are refused meanwhile); when the first direct
// message between them, either way, lets him see uid again, the last
// status his client got must not be one uid left meanwhile. The changes
// are made through one node of three, the watcher and uid are connected
// to the other two: each node hands its own sessions the status.
func TestPresenceWatcherWhoStartsAConversationDoesNotKeepAStaleStatus(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	n0, n1, n2 := nodes[0], nodes[1], nodes[2]
	for _, c := range []struct{ name, subject, viewer, from, to string }{
		{"uid writes first", "alice", "bob", "alice", "bob"},
		{"the watcher writes first", "carol", "dave", "dave", "carol"},
	} {
		subjTok, viewTok := n0.NewUser(t, c.subject), n0.NewUser(t, c.viewer)
		tok := map[string]string{c.subject: subjTok, c.viewer: viewTok}
		if st := api(t, n0, subjTok, "POST", "/user/me/contacts", map[string]string{"uid": c.viewer}, nil); st/100 != 2 {
			t.Fatalf("%s: add contact: %d", c.name, st)
		}
		watcher := mustConnectV5(t, n2.MQTTURL, c.viewer, "phone", viewTok)
		watcher.MustSub(t, "presence/"+c.subject)
		subj := mustConnectV5(t, n1.MQTTURL, c.subject, "phone", subjTok)
		subj.Pub(t, "presence/"+c.subject+"/heartbeat", 0, "")
		waitLastPresence(t, watcher, c.subject, "online", c.name+": a contact")

		if st := api(t, n0, subjTok, "DELETE", "/user/me/contacts/"+c.viewer, nil, nil); st/100 != 2 {
			t.Fatalf("%s: remove contact: %d", c.name, st)
		}
		_ = subj.Disconnect(&paho.Disconnect{})
		userWaits(t, n0, subjTok, c.subject, "offline")
		if st := api(t, n0, tok[c.from], "POST", "/chat/messages", map[string]string{"to": c.to, "cid": "first", "type": "text", "body": "hi"}, nil); st != 201 {
			t.Fatalf("%s: first message: %d", c.name, st)
		}
		waitLastPresence(t, watcher, c.subject, "offline", c.name+": the first direct message")
	}
}

// userWaits checks until uid's status, as uid reads it, is want.
func userWaits(t *testing.T, n *nodetest.Node, tok, uid, want string) {
	t.Helper()
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		var p struct{ Status string }
		if st := api(t, n, tok, "GET", "/presence/"+uid, nil, &p); st != 200 || p.Status != want {
			return fmt.Errorf("%s's presence: %d %+v, want %s", uid, st, p, want)
		}
		return nil
	})
}
