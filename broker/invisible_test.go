package broker

import (
	"strings"
	"testing"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
)

// A device ID (the {deviceID} of a CONNECT's client ID) and a message's
// cid are new input: they may not hold C1 controls, bidi controls or
// other invisible characters, which end up in the node's log, the
// session list of the web UI and push payloads. They were taken: the
// rule refused only C0 controls and DEL.
func TestNewIDsWithInvisibleCharactersAreRefused(t *testing.T) {
	e := startBroker(t, nil)
	for _, dev := range []string{"phone\u0085", "\u009b31mphone", "enohp\u202e", "\u200bphone", "ph\u00adone"} {
		code, reason := aliceConnectsAs(t, e, dev)
		if code != 0x85 || !strings.Contains(reason, "device ID") {
			t.Errorf("CONNECT alice/%+q: 0x%02x %q, want 0x85 saying what is wrong with the device ID", dev, code, reason)
		}
	}
	bob := mustV5(t, e.addr, "bob", "phone")
	bob.MustSub(t, "user/bob/newMessage")
	alice := mustV5(t, e.addr, "alice", "Alice's phone 2")
	for _, cid := range []string{"c\u0085", "c\u202e1", "\ufeffc"} {
		code, pr := alice.Pub(t, "user/bob/newMessage", 1, `{"cid":"`+cid+`","type":"text","body":"hi"}`)
		if code != 0x99 || pr.Properties == nil || !strings.Contains(pr.Properties.ReasonString, "cid") {
			t.Errorf("cid %+q: PUBACK 0x%02x %+v, want 0x99 about the cid", cid, code, pr.Properties)
		}
	}
	if n := e.chat.callCount(); n != 0 {
		t.Fatalf("ChatStore called %d times", n)
	}
	if code, _ := alice.Pub(t, "user/bob/newMessage", 1, `{"cid":"ünï 1","type":"text","body":"fine"}`); code != 0 {
		t.Fatalf("a printable cid: PUBACK 0x%02x", code)
	}
}

// In dev mode an anonymous client may not take a client ID of the
// {user}/{device} form, invisible characters or not: the other parts of
// the broker still read such an ID as the user's.
func TestAnonymousClientIDWithInvisibleDeviceStillNeedsCredentials(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.Dev = true })
	_, ca, _ := mqtttest.Dial(t, e.addr, mqtttest.Options{ClientID: "alice/phone\u0085"})
	if ca == nil || ca.ReasonCode != 0x85 {
		t.Fatalf("anonymous alice/phone\\u0085: %+v, want 0x85", ca)
	}
}

// A device ID refused by the rule that was already there (a C0 control
// such as a tab, '+', '#', '/', none, more than 64 bytes) is told what a
// device ID may be, as one with an invisible character is: the reason
// string said only "want {userID}/{deviceID} of the authenticated user",
// which a client ID "alice/tab<TAB>let" of alice matches as far as its
// user can tell.
func TestDeviceIDsOfTheOldRuleAreToldTheRule(t *testing.T) {
	e := startBroker(t, nil)
	for _, dev := range []string{"tab\tlet", "a+b", "a#", "a/b", "", strings.Repeat("x", 65)} {
		code, reason := aliceConnectsAs(t, e, dev)
		if code != 0x85 || !strings.Contains(reason, "device ID: 1 to 64 bytes") {
			t.Errorf("CONNECT alice/%+q: 0x%02x %q, want 0x85 saying what a device ID may be", dev, code, reason)
		}
	}
	// A client ID that is not of the form, or names an invalid user, is
	// not told about device IDs.
	for _, id := range []string{"alice", "al/phone"} {
		_, ca, _ := mqtttest.Dial(t, e.addr, mqtttest.Options{ClientID: id, Username: "alice", Password: "tok:alice"})
		if ca == nil || ca.ReasonCode != 0x85 || ca.Properties != nil && strings.Contains(ca.Properties.ReasonString, "device ID") {
			t.Errorf("CONNECT %q: %+v, want 0x85 without a device ID hint", id, ca)
		}
	}
}

// aliceConnectsAs connects alice with device ID dev and returns the
// CONNACK's reason code and reason string.
func aliceConnectsAs(t *testing.T, e *testEnv, dev string) (byte, string) {
	t.Helper()
	_, ca, err := mqtttest.Dial(t, e.addr, mqtttest.Options{ClientID: "alice/" + dev, Username: "alice", Password: "tok:alice"})
	if ca == nil {
		t.Fatalf("device %+q: no CONNACK: %v", dev, err)
	}
	if ca.Properties == nil {
		return ca.ReasonCode, ""
	}
	return ca.ReasonCode, ca.Properties.ReasonString
}
