package broker

import (
	"strings"
	"testing"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
)

// A CONNECT that spells the user ID with capitals (the name as the user
// typed it at sign-up: "Alice", registered as alice) is refused as
// before, but its reason string says user IDs are lowercase and names
// the one to use: it said "token belongs to another user" (the token is
// alice's own) or "want {userID}/{deviceID} of the authenticated user",
// and a developer could not tell what was wrong.
func TestConnectWithACapitalisedUserIDSaysUserIDsAreLowercase(t *testing.T) {
	e := startBroker(t, nil)
	for _, tc := range []struct {
		clientID, user string
		code           byte
		want           string
	}{
		{"alice/phone", "Alice", 0x86, "user IDs are lowercase: username alice"},
		{"Alice/phone", "alice", 0x85, "user IDs are lowercase: client ID alice/phone"},
		{"Alice/phone", "Alice", 0x85, "user IDs are lowercase: client ID alice/phone"},
	} {
		_, ca, err := mqtttest.Dial(t, e.addr, mqtttest.Options{ClientID: tc.clientID, Username: tc.user, Password: "tok:alice"})
		if ca == nil {
			t.Fatalf("%s as %s: no CONNACK: %v", tc.clientID, tc.user, err)
		}
		reason := ""
		if ca.Properties != nil {
			reason = ca.Properties.ReasonString
		}
		if ca.ReasonCode != tc.code || !strings.Contains(reason, tc.want) {
			t.Errorf("CONNECT %s as %s with alice's token: 0x%02x %q, want 0x%02x saying %q", tc.clientID, tc.user, ca.ReasonCode, reason, tc.code, tc.want)
		}
	}
	// Another user's token says what it said.
	_, ca, _ := mqtttest.Dial(t, e.addr, mqtttest.Options{ClientID: "alice/phone", Username: "alice", Password: "tok:bob"})
	if ca == nil || ca.ReasonCode != 0x86 || ca.Properties == nil || !strings.Contains(ca.Properties.ReasonString, "another user") {
		t.Errorf("bob's token as alice: %+v, want 0x86 'token belongs to another user'", ca)
	}
}
