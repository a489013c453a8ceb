package broker

import (
	"strings"
	"testing"
)

// A v5 publish the topic table refuses gets a reason string that says
// what is wrong: it got 0x87 with mochi's bare "not authorized", so a
// developer who published to user/Bob (a user topic without its leaf,
// or a user ID with capitals) could not tell a typo from a missing
// right, where the CONNECT and SUBSCRIBE refusals say why.
func TestRefusedPublishSaysWhatIsWrong(t *testing.T) {
	e := startBroker(t, nil)
	alice := mustV5(t, e.addr, "alice", "phone")
	for _, tc := range []struct{ topic, want string }{
		{"user/Bob", "user/bob/newMessage"},
		{"user/bob", "user/bob/newMessage"},
		{"user/Bob/newMessage", "user IDs are lowercase: user/bob/newMessage"},
		{"user/Bob/typing", "user IDs are lowercase: user/bob/typing"},
		{"user/bob/status", "user/bob/newMessage"},
		{"user/alice/heartbeat", "presence/alice/heartbeat"},
		{"user/bob/events", "only the server publishes on user/bob/events"},
		{"presence/bob", "the server publishes presence"},
		{"presence/bob/heartbeat", "presence/alice/heartbeat"},
		{"presence/Alice/heartbeat", "user IDs are lowercase: presence/alice/heartbeat"},
		{"sensors/kitchen", "--dev"},
		{"$SYS/broker/x", "$"},
		{"user/" + strings.Repeat("x", 5000), "user/{uid}/newMessage"},
	} {
		for _, qos := range []byte{1, 2} {
			code, pr := alice.Pub(t, tc.topic, qos, `{"cid":"x","type":"text","body":"hi"}`)
			reason := ""
			if pr.Properties != nil {
				reason = pr.Properties.ReasonString
			}
			if code != 0x87 || !strings.HasPrefix(reason, "not authorized: ") || !strings.Contains(reason, tc.want) || len(reason) > 300 {
				t.Errorf("QoS %d publish to %.40s: 0x%02x %q, want 0x87 'not authorized: ...' saying %q", qos, tc.topic, code, reason, tc.want)
			}
		}
	}
	// What is allowed still is.
	if code, _ := alice.Pub(t, "user/bob/newMessage", 1, `{"cid":"ok","type":"text","body":"hi"}`); code != 0 {
		t.Fatalf("a direct message: 0x%02x", code)
	}
}
