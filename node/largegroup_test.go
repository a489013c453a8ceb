package node_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node/nodetest"
)

// A group of a thousand members on three nodes (LESSONS 14: users ask
// for groups of thousands): every online member, whichever node it is
// connected to, gets each message once and in the order sent, whichever
// node it was sent on and over MQTT or HTTP; an offline member reads them
// all through sync. Each node delivers to its own members from its own
// copy of the log.
func TestLargeGroupAcrossThreeNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("a thousand accounts on three nodes")
	}
	const members, online = 1000, 150
	nodes := nodetest.StartCluster(t, 3)
	ownerTok := nodes[0].NewUser(t, "owner")
	names := make([]string, members-1)
	tokens := make([]string, online)
	var wg sync.WaitGroup
	work := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range work {
				n := nodes[i%3]
				if i < online {
					tokens[i] = n.NewUser(t, names[i])
					continue
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				if err := n.CreateAccount(ctx, names[i], names[i]); err != nil {
					t.Errorf("account %s: %v", names[i], err)
				}
				cancel()
			}
		})
	}
	for i := range names {
		names[i] = fmt.Sprintf("member%04d", i)
	}
	for i := range names {
		work <- i
	}
	close(work)
	wg.Wait()
	if t.Failed() {
		return
	}
	var g struct {
		GroupID     string `json:"groupId"`
		MemberCount int    `json:"memberCount"`
	}
	if st := api(t, nodes[1], ownerTok, "POST", "/user/groups", map[string]any{"name": "everyone", "members": names}, &g); st != 201 || g.MemberCount != members {
		t.Fatalf("create group: %d, %d members", st, g.MemberCount)
	}
	topic := "group/" + g.GroupID + "/newMessage"

	subs := make([]*mqtttest.Client, online)
	for i := range subs {
		subs[i] = mustConnectV5(t, nodes[i%3].MQTTURL, names[i], "phone", tokens[i])
		subs[i].MustSub(t, topic)
	}
	owner := mustConnectV5(t, nodes[0].MQTTURL, "owner", "laptop", ownerTok)
	var want []string
	for i := range 5 {
		body := fmt.Sprintf("owner %d", i)
		if code, _ := owner.Pub(t, topic, 1, textMsg(fmt.Sprintf("o%d", i), body)); code != 0 {
			t.Fatalf("publish %d: PUBACK %#x", i, code)
		}
		want = append(want, body)
	}
	// A member sends over HTTP through the third node.
	if st := api(t, nodes[2], tokens[2], "POST", "/chat/messages", map[string]string{"group": g.GroupID, "cid": "h1", "type": "text", "body": "from http"}, nil); st != 201 {
		t.Fatalf("HTTP send: %d", st)
	}
	want = append(want, "from http")

	checkFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		for i, s := range subs {
			if got := len(s.Received(topic)); got < len(want) {
				return fmt.Errorf("%s on n%d has %d of %d messages", names[i], i%3+1, got, len(want))
			}
		}
		return nil
	})
	for i, s := range subs {
		got := s.Received(topic)
		if len(got) != len(want) {
			t.Fatalf("%s received %d deliveries of %d messages", names[i], len(got), len(want))
		}
		for k, m := range got {
			if b := decodeEnvelope(t, m.Payload).Body; b != want[k] {
				t.Fatalf("%s: delivery %d is %q, want %q", names[i], k, b, want[k])
			}
		}
	}
	// A member who was never online reads everything through sync.
	offline := names[members-2]
	var page syncPage
	if st := api(t, nodes[1], nodes[1].Token(t, offline), "GET", "/chat/sync?limit=100", nil, &page); st != 200 || len(page.Messages) != len(want) {
		t.Fatalf("offline member's sync: %d, %d messages, want %d", st, len(page.Messages), len(want))
	}
}
