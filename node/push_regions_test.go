package node_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/edgechat/edgechat/bridge/push/pushtest"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// bob of us, offline, is pushed by his region for messages of alice of
// eu, direct and in her group he is a member of, under her display name
// as GET /user/alice@eu shows it to him, not her address.
func TestPushForMessagesFromAnotherRegion(t *testing.T) {
	opt, m := withPushMocks(t)
	eu, us := nodetest.StartRegionPair(t, "eu", "us", opt, nodetest.WithConfig(func(c *node.Config) { c.PushGrace = flowGrace }))
	aliceTok, bobTok := eu.NewUser(t, "alice"), us.NewUser(t, "bob")
	eu.NewUser(t, "carol")
	phone := pushtest.NewDeviceToken()
	if st := api(t, us, bobTok, "POST", "/user/me/devices",
		map[string]any{"device": "phone", "platform": "apns", "token": phone}, nil); st != 200 {
		t.Fatalf("register the phone: %d", st)
	}
	alice := mustConnectV5(t, eu.MQTTAddr(), "alice", "laptop", aliceTok)
	var id string
	checkFor(t, 15*time.Second, 100*time.Millisecond, func() error {
		code, resp := alice.Pub(t, "user/bob@us/newMessage", 1, textMsg("d1", "hello from eu"))
		if code != 0 || resp == nil {
			return fmt.Errorf("alice → bob@us: %#x", code)
		}
		id = resp.Properties.User.Get("id")
		return nil
	})
	find := func(body string) (pushtest.APNsRequest, error) {
		for _, r := range m.apns.Requests() {
			if alert, _ := r.APS["alert"].(map[string]any); r.Token == phone && alert["body"] == body {
				return r, nil
			}
		}
		return pushtest.APNsRequest{}, errors.New("no push of " + body)
	}
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error { _, err := find("hello from eu"); return err })
	r, _ := find("hello from eu")
	alert, _ := r.APS["alert"].(map[string]any)
	if r.Custom["conversationId"] != "user:alice@eu" || r.Custom["messageId"] != id || r.CollapseID != "user:alice@eu" ||
		alert["title"] != "Alice" {
		t.Errorf("direct push from alice@eu: title %v, conversation %v, message %v (want %s), collapse %v",
			alert["title"], r.Custom["conversationId"], r.Custom["messageId"], id, r.CollapseID)
	}

	team := createGroup(t, eu, aliceTok, "team", "carol", "bob@us").GroupID
	checkFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		code, _ := alice.Pub(t, "group/"+team+"/newMessage", 1, textMsg(fmt.Sprintf("g%d", time.Now().UnixNano()), "hello team"))
		if code != 0 {
			return fmt.Errorf("alice → team: %#x", code)
		}
		_, err := find("hello team")
		return err
	})
	r, _ = find("hello team")
	alert, _ = r.APS["alert"].(map[string]any)
	if r.Custom["conversationId"] != "group:"+team+"@eu" || alert["title"] != "Alice in team" {
		t.Errorf("group push from eu: conversation %v, title %v", r.Custom["conversationId"], alert["title"])
	}
}
