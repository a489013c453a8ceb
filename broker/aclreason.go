package broker

import (
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/edgechat/edgechat/internal/wire"
)

// ACLRefusalReason says why OnACLCheck refused a v5 client's publish to
// topic: mochi puts it into the PUBACK or PUBREC of the refusal (our
// copy's patch 61) instead of the bare "not authorized". It runs only
// for a refusal. A topic (up to the packet size) is never echoed whole:
// only user IDs that are valid, so a reason stays short.
func (h *hook) ACLRefusalReason(cl *mqtt.Client, topic string) string {
	p := h.b.principal(cl)
	if p.Link != "" {
		return ""
	}
	return "not authorized: " + publishRefusal(p, h.b.cfg.Dev, topic)
}

// publishRefusal is the reason of ACLRefusalReason after "not authorized: ".
func publishRefusal(p wire.Principal, dev bool, topic string) string {
	me := p.UserID
	if me == "" {
		me = "{me}"
	}
	switch {
	case strings.ContainsAny(topic, "+#"):
		return "a topic name has no wildcards (+ or #)"
	case strings.HasPrefix(topic, "$"):
		return "topics starting with $ are the server's"
	}
	t := wire.ParseTopic(topic)
	switch t.Kind {
	case wire.KindEvents:
		return "only the server publishes on user/" + t.Owner + "/events"
	case wire.KindPresence:
		return "the server publishes presence; a client keeps its own with heartbeats on presence/" + me + "/heartbeat"
	case wire.KindHeartbeat:
		return "presence/" + t.Owner + "/heartbeat is " + t.Owner + "'s; yours is presence/" + me + "/heartbeat"
	case wire.KindGroup, wire.KindGroupTyping:
		return "not a member of group " + t.Owner
	case wire.KindOther:
		if dev {
			return "topic not allowed"
		}
		return "only the chat topics of the topic table may be published to (other topics are open with --dev only)"
	}
	// Under user/, group/ or presence/ but not in the table.
	first, rest, _ := strings.Cut(topic, "/")
	owner, leaf, hasLeaf := strings.Cut(rest, "/")
	lower := strings.ToLower(owner)
	named := wire.ValidUserID(lower) == nil // owner echoed only when it is a user ID
	switch first {
	case "user":
		if named && hasLeaf && lower != owner && (leaf == "newMessage" || leaf == "typing" || leaf == "receipts" || leaf == "events") {
			return "user IDs are lowercase: user/" + lower + "/" + leaf
		}
		if named && hasLeaf && leaf == "heartbeat" {
			return "not a topic: a heartbeat goes to presence/" + me + "/heartbeat"
		}
		if named {
			return "not a topic: a direct message to " + lower + " goes to user/" + lower + "/newMessage (also typing, receipts)"
		}
		return "not a topic: a direct message goes to user/{uid}/newMessage (also typing, receipts), uid a user ID (lowercase)"
	case "presence":
		if named && lower != owner && leaf == "heartbeat" {
			return "user IDs are lowercase: presence/" + lower + "/heartbeat"
		}
		return "not a topic: the server publishes presence/{uid}; a client's heartbeat goes to presence/" + me + "/heartbeat"
	}
	return "not a topic: a group message goes to group/{gid}/newMessage (also typing)"
}
