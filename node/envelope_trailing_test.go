package node_test

import (
	"testing"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A message published over MQTT is one JSON object: a stray closing
// bracket or brace after it is trailing data, refused like any other
// (PUBACK 0x99 payload format invalid), as POST /chat/messages refuses
// it. The envelope decoder asked dec.More(), which answers false before
// ']' and '}', and stored such a message.
func TestPublishedEnvelopeWithTrailingCloserRefused(t *testing.T) {
	n := nodetest.StartNode(t)
	alice := n.NewUser(t, "alice")
	n.NewUser(t, "bob")
	c := mustConnectV5(t, n.MQTTURL, "alice", "phone", alice)
	for i, payload := range []string{
		`{"cid":"t1","type":"text","body":"hi"}}`,
		`{"cid":"t2","type":"text","body":"hi"}]`,
		`{"cid":"t3","type":"text","body":"hi"} junk`,
	} {
		if code, _ := c.Pub(t, "user/bob/newMessage", 1, payload); code != 0x99 {
			t.Errorf("publish %d %s: PUBACK %#x, want 0x99", i, payload, code)
		}
	}
	if code, _ := c.Pub(t, "user/bob/newMessage", 1, "{\"cid\":\"t4\",\"type\":\"text\",\"body\":\"hi\"}\n"); code != 0 {
		t.Errorf("publish with a trailing newline: PUBACK %#x, want 0", code)
	}
}
