package broker

import (
	"strings"

	"github.com/edgechat/edgechat/internal/wire"
)

// allowed is the topic table of docs/protocol.md as an access check. For
// write it gets a topic name (a client publish); otherwise a subscription
// filter or, on delivery, a topic name. p is the client's identity (empty
// UserID: anonymous, dev mode only). It is a pure function of its
// arguments, so that it can be fuzzed.
//
// Rules: chat topics (under user/, group/, presence/) follow the table in
// every mode; wildcards are allowed on chat topics only inside the user's
// own subtree (user/{self}/# and user/{self}/+) and inside the subtree of
// a group the user is a member of (group/{gid}/# and group/{gid}/+);
// $SYS is for admins to subscribe; everything else is open in dev mode
// only.
func allowed(p wire.Principal, dev bool, vis PresenceVisibility, mem Membership, topic string, write bool) bool {
	if topic == "" {
		return false
	}
	if write && strings.ContainsAny(topic, "+#") {
		return false // not a topic name (mochi refuses it first)
	}
	if !write {
		if rest, ok := sharedFilter(topic); ok {
			// Shared subscriptions spread messages across several
			// clients: never on chat topics, reserved or $SYS ones.
			if rest == "" || wire.IsChatPrefix(rest) || strings.HasPrefix(rest, "$") {
				return false
			}
			return dev
		}
		if strings.ContainsAny(topic, "+#") {
			return filterAllowed(p, dev, mem, topic)
		}
	}
	return nameAllowed(p, dev, vis, mem, topic, write)
}

// filterAllowed decides wildcard subscriptions.
func filterAllowed(p wire.Principal, dev bool, mem Membership, filter string) bool {
	if strings.HasPrefix(filter, "$") {
		return p.Admin && p.UserID != "" && strings.HasPrefix(filter, "$SYS/")
	}
	if p.UserID != "" && (filter == "user/"+p.UserID+"/#" || filter == "user/"+p.UserID+"/+") {
		return true
	}
	if gid, ok := groupWildcard(filter); ok {
		return groupAllowed(p, mem, gid)
	}
	if wire.IsChatPrefix(filter) {
		return false
	}
	return dev
}

// nameAllowed decides a topic name (a publish, an exact subscription or a
// delivery).
func nameAllowed(p wire.Principal, dev bool, vis PresenceVisibility, mem Membership, name string, write bool) bool {
	t := wire.ParseTopic(name)
	uid := p.UserID
	switch t.Kind {
	case wire.KindDirect, wire.KindUserTyping, wire.KindReceipts:
		// Any authenticated user may write to uid (blocks are checked
		// by the publish handlers, which drop rather than disconnect a
		// 3.1.1 client); only uid reads.
		if write {
			return uid != ""
		}
		return uid != "" && uid == t.Owner
	case wire.KindEvents:
		return !write && uid != "" && uid == t.Owner
	case wire.KindPresence:
		if write || uid == "" {
			return false // the server publishes presence
		}
		return uid == t.Owner || (vis != nil && vis.CanSeePresence(uid, t.Owner))
	case wire.KindHeartbeat:
		return write && uid != "" && uid == t.Owner
	case wire.KindGroup, wire.KindGroupTyping:
		// Members publish and subscribe; the same check on every
		// delivery stops a removed member's subscription at once.
		return groupAllowed(p, mem, t.Owner)
	case wire.KindSys:
		return !write && p.Admin && uid != ""
	case wire.KindChatInvalid:
		return false
	}
	if strings.HasPrefix(name, "$") {
		return false // reserved for the broker
	}
	return dev
}

// sharedFilter splits "$share/{group}/{filter}" (mochi matches the
// prefix case-insensitively) and returns the filter.
func sharedFilter(f string) (string, bool) {
	first, rest, ok := strings.Cut(f, "/")
	if !ok || !strings.EqualFold(first, "$share") {
		return "", false
	}
	_, filter, _ := strings.Cut(rest, "/")
	return filter, true
}
