package broker

import (
	"testing"

	"github.com/edgechat/edgechat/internal/wire"
)

// A link reads what its region asked for: typing and receipts addressed
// to its own region's users, presence of this region's users; it writes
// only under its own $link/{region}/.
func TestLinkACL(t *testing.T) {
	eu := wire.Principal{Link: "eu"}
	for _, c := range []struct {
		topic string
		write bool
		want  bool
	}{
		{"$link/eu/dm", true, true},
		{"$link/us/dm", true, false},
		{"$link/eu/#", true, false},
		{"user/+/typing", false, true},
		{"user/+/receipts", false, true},
		{"user/+/newMessage", false, false},
		{"user/#", false, false},
		{"user/alice@eu/typing", false, true},
		{"user/alice@eu/receipts", false, true},
		{"user/alice@asia/typing", false, false},
		{"user/alice/typing", false, false},
		{"user/alice@eu/newMessage", false, false},
		{"presence/bob", false, true},
		{"presence/bob@eu", false, false},
		{"presence/+", false, false},
		{"presence/bob/heartbeat", false, false},
		{"user/alice@eu/typing", true, false},
		{"presence/bob", true, false},
		{"group/+/typing/eu", false, true},
		{"group/g1/typing/eu", false, true},
		{"group/g1@us/typing/eu", false, true},
		{"group/g1/typing/us", false, false},
		{"group/+/typing/+", false, false},
		{"group/#/typing/eu", false, false},
		{"group/+/typing", false, false},
		{"group/g1/typing", false, false},
		{"group/g1/typing/eu", true, false},
	} {
		if got := allowed(eu, false, nil, nil, c.topic, c.write); got != c.want {
			t.Errorf("link eu, %s write=%v: %v, want %v", c.topic, c.write, got, c.want)
		}
	}
	// No user reads (or writes) what a region hands a link, dev mode or
	// not (a dev-mode wildcard is granted, each delivery is checked by
	// name).
	alice := wire.Principal{UserID: "alice"}
	for _, dev := range []bool{false, true} {
		topic := "group/g1/typing/eu"
		if allowed(alice, dev, nil, nil, topic, false) || allowed(alice, dev, nil, nil, topic, true) {
			t.Errorf("alice (dev %v) may use %s", dev, topic)
		}
	}
	if allowed(alice, false, nil, nil, "group/+/typing/eu", false) {
		t.Error("alice may subscribe to group/+/typing/eu")
	}
}
