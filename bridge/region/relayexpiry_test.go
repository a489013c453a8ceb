package region_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// A group of eu (the home) has members in us and ap. carol@ap's message
// waited two hours in ap's outbox (a link outage; ap keeps queued
// messages 7 days), then reaches eu, which stores it and relays it to
// us at once over a link that is up. eu keeps its own queued messages
// one hour (--link-retention 1h): that bounds how long a message waits
// in eu's outbox, not how old its origin ID is. eu's link judged the
// relayed message by its ID's time, found it "older than
// --link-retention" the moment it was staged, and dropped it: bob@us
// never got a message eu and ap had stored and delivered.
func TestRelayedGroupMessageNotExpiredByItsOriginTime(t *testing.T) {
	eu, us := startLinked(t, 1, "eu", "us", nil, nil, nodetest.WithConfig(func(c *node.Config) {
		if c.Region == "eu" {
			// ap: a linked region whose link only dials in here (the
			// test plays it); eu's own link to it stays down.
			c.Links = append(c.Links, "ap=tcp://127.0.0.1:1")
			c.LinkRetention = time.Hour
		}
	}))
	aliceTok, bobTok := eu.newUser(t, "alice"), us.newUser(t, "bob")
	g := newGroup(t, eu.nodes[0], aliceTok, "world", "bob@us", "carol@ap")
	mirror := g.GroupID + "@eu"
	nodetest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if code := call(t, us.nodes[0], bobTok, "GET", "/user/groups/"+mirror+"/members", nil, nil); code != http.StatusOK {
			return fmt.Errorf("mirror in us: %d", code)
		}
		return nil
	})
	bob := connect(t, us.nodes[0], "bob", "phone", bobTok)
	bob.MustSub(t, "group/"+mirror+"/newMessage")

	ap := mqtttest.MustDial(t, eu.nodes[0].MQTTAddr(), mqtttest.Options{ClientID: "$link/ap", Username: "$link/ap", Password: secret})
	old := snowflake.Make(uint64((time.Since(snowflake.Epoch) - 2*time.Hour).Milliseconds()), 3<<6, 0)
	msg := fmt.Sprintf(`{"id":"%s","from":"carol@ap","group":"%s","cid":"c1","type":"text","body":"sent during the outage"}`, old, mirror)
	if code, ack := ap.Pub(t, "$link/ap/gmsg", 1, msg); code != 0 {
		t.Fatalf("eu's PUBACK to ap's link %#x %q", code, ack.Properties.ReasonString)
	}
	// A message alice sends afterwards: bob gets carol's first.
	alice := connect(t, eu.nodes[0], "alice", "phone", aliceTok)
	if code, ack := alice.Pub(t, "group/"+g.GroupID+"/newMessage", 1, textMsg("a1", "after")); code != 0 {
		t.Fatalf("alice's PUBACK %#x %q", code, ack.Properties.ReasonString)
	}
	first := decode(t, bob.Next(t).Payload)
	if first.ID != old.String() || first.From != "carol@ap" {
		t.Fatalf("bob's first message %+v, want carol@ap's %s (relayed by eu)", first, old)
	}
	if n := counter(t, eu.nodes[0], "edgechat_region_link_expired_total", `link="us"`); n != 0 {
		t.Errorf("eu's link to us dropped %v messages as expired", n)
	}
}
