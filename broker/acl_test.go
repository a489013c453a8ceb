package broker

import (
	"strings"
	"testing"

	"github.com/edgechat/edgechat/internal/wire"
)

// staticVis: a viewer sees subjects that start with the same letter.
type staticVis struct{}

func (staticVis) CanSeePresence(viewer, subject string) bool {
	return viewer != "" && subject != "" && viewer[0] == subject[0]
}

// staticMem: a user is a member of the groups whose ID starts with the
// user's first letter.
type staticMem struct{}

func (staticMem) IsMember(gid, uid string) bool {
	return gid != "" && uid != "" && gid[0] == uid[0]
}

func TestAllowedTable(t *testing.T) {
	alice := wire.Principal{UserID: "alice"}
	admin := wire.Principal{UserID: "root", Admin: true}
	anon := wire.Principal{}
	for _, tc := range []struct {
		p     wire.Principal
		dev   bool
		topic string
		write bool
		want  bool
	}{
		{alice, false, "user/bob/newMessage", true, true},
		{alice, false, "user/bob/typing", true, true},
		{alice, false, "user/bob/receipts", true, true},
		{alice, false, "user/bob/events", true, false},
		{alice, false, "user/alice/events", true, false},
		{alice, false, "presence/alice", true, false},
		{alice, false, "presence/alice/heartbeat", true, true},
		{alice, false, "presence/bob/heartbeat", true, false},
		{alice, false, "presence/alice/heartbeat", false, false},
		{alice, false, "presence/anna", false, true}, // visible (same letter)
		{alice, false, "presence/bob", false, false},
		{alice, false, "user/alice/#", false, true},
		{alice, false, "user/alice/+", false, true},
		{alice, false, "user/alice/+/x", false, false},
		{alice, false, "user/+/newMessage", false, false},
		{alice, false, "$share/g/user/alice/newMessage", false, false},
		{alice, true, "$share/g/sensors/#", false, true},
		{alice, false, "$share/g/sensors/#", false, false},
		{alice, true, "$share/g/#", false, true}, // gets no chat topics (OnSelectSubscribers)
		{alice, true, "$share/g/$SYS/x", false, false},
		{alice, true, "sensors/#", false, true},
		{alice, true, "#", false, true}, // dev: granted, checked on delivery
		{alice, true, "+/x", false, true},
		{alice, true, "$other/x", false, false},
		{alice, true, "sensors/t1", true, true},
		{alice, false, "sensors/t1", true, false},
		{alice, false, "$SYS/#", false, false},
		{admin, false, "$SYS/#", false, true},
		{admin, false, "$SYS/broker/version", false, true},
		{admin, false, "$SYS/x", true, false},
		{admin, false, "$sys/#", false, false},
		{alice, false, "group/g1/newMessage", true, false},
		{alice, false, "group/g1/typing", false, false},
		{alice, false, "group/a1/newMessage", true, true},
		{alice, false, "group/a1/newMessage", false, true},
		{alice, false, "group/a1/typing", true, true},
		{alice, false, "group/a1/typing", false, true},
		{alice, false, "group/a1/+", false, true},
		{alice, false, "group/a1/#", false, true},
		{alice, false, "group/g1/+", false, false},
		{alice, false, "group/g1/#", false, false},
		{alice, false, "group/+/newMessage", false, false},
		{alice, false, "group/+/#", false, false},
		{alice, false, "group/#", false, false},
		{alice, false, "group/a1/+/x", false, false},
		{alice, false, "group/a1/members", false, false},
		{alice, false, "group/a+/#", false, false},
		{alice, true, "group/g1/newMessage", false, false},
		{alice, false, "$share/s/group/a1/newMessage", false, false},
		{anon, true, "group/a1/newMessage", false, false},
		{anon, true, "user/bob/newMessage", true, false},
		{anon, true, "user/bob/newMessage", false, false},
		{anon, true, "presence/bob", false, false},
		{anon, true, "sensors/t1", false, true},
		{anon, false, "sensors/t1", false, false},
		{alice, true, "", false, false},
		// Dev mode: wildcards and $SYS/# granted like on a plain broker;
		// chat topics checked by name on every delivery.
		{anon, true, "#", false, true},
		{anon, true, "+/+", false, true},
		{anon, true, "user/#", false, true},
		{anon, true, "presence/+", false, true},
		{anon, true, "group/+/newMessage", false, true},
		{alice, true, "user/bob/#", false, true},
		{anon, true, "$SYS/#", false, true},
		{anon, true, "$SYS/broker/version", false, true},
		{anon, true, "$SYS/broker/version", true, false},
		{anon, true, "$link/#", false, false},
		{anon, true, "$link/x", false, false},
		{anon, true, "$link/x", true, false},
		{anon, true, "$share/g/+/x", false, true},
		{anon, true, "$share/g/user/#", false, false},
		{alice, true, "$share/g/user/alice/+", false, false},
		{alice, true, "$share/g/presence/anna", false, false},
		{anon, true, "$share/g/$SYS/#", false, false},
		{anon, true, "user/alice/newMessage", false, false},
		{alice, true, "user/alice/newMessage", false, true},
		{alice, true, "user/bob/newMessage", false, false},
		{alice, true, "user/bob/typing", false, false},
		{alice, true, "user/alice/events", false, true},
		{alice, true, "presence/anna", false, true},
		{alice, true, "presence/bob", false, false},
		{anon, true, "presence/alice", false, false},
		{alice, true, "presence/alice/heartbeat", false, false},
		{alice, true, "group/a1/newMessage", false, true},
		{alice, true, "group/g1/typing", false, false},
		{alice, true, "user/alice", false, false},
		{anon, true, "sensors/1", false, true},
		// Outside dev mode nothing of that.
		{alice, false, "#", false, false},
		{alice, false, "+/+", false, false},
		{alice, false, "user/#", false, false},
		{alice, false, "presence/+", false, false},
		{alice, false, "$share/g/#", false, false},
	} {
		if got := allowed(tc.p, tc.dev, staticVis{}, staticMem{}, tc.topic, tc.write); got != tc.want {
			t.Errorf("allowed(%q dev=%v %q write=%v) = %v", tc.p.UserID, tc.dev, tc.topic, tc.write, got)
		}
	}
}

// FuzzACL checks the invariants of the topic table for any principal,
// mode and topic: chat topic names (and so deliveries) never open to the
// wrong user, and outside dev mode nothing outside the table is allowed.
func FuzzACL(f *testing.F) {
	for _, s := range []string{"user/alice/newMessage", "user/bob/#", "user/alice/#", "presence/bob", "presence/anna",
		"presence/alice/heartbeat", "$share/g/user/alice/+", "$SYS/#", "#", "+/+/+", "group/g/newMessage", "group/a1/#", "group/a/+", "group/+/typing", "sensors/x", "user//newMessage", "$SHARE/x/y"} {
		f.Add("alice", false, false, s, false)
		f.Add("alice", true, true, s, true)
	}
	f.Fuzz(func(t *testing.T, uid string, admin, dev bool, topic string, write bool) {
		if uid != "" && wire.ValidUserID(uid) != nil {
			uid = "alice" // principals are always valid user IDs or anonymous
		}
		p := wire.Principal{UserID: uid, Admin: admin}
		ok := allowed(p, dev, staticVis{}, staticMem{}, topic, write)
		if !write && devOpen(topic) && allowed(p, true, staticVis{}, staticMem{}, topic, false) != true {
			t.Fatalf("devOpen(%q) but allowed refuses it in dev mode for %+v", topic, p)
		}
		if !ok {
			return
		}
		if topic == "" {
			t.Fatal("empty topic allowed")
		}
		shared, isShared := sharedFilter(topic)
		if write && strings.ContainsAny(topic, "+#") {
			t.Fatalf("write to wildcard %q allowed", topic)
		}
		if isShared {
			first, _, _ := strings.Cut(shared, "/")
			if write || !dev || first == "user" || first == "group" || first == "presence" || strings.HasPrefix(shared, "$") {
				t.Fatalf("shared %q allowed (write=%v dev=%v)", topic, write, dev)
			}
			return
		}
		if strings.HasPrefix(topic, "$") {
			if write || !strings.HasPrefix(topic, "$SYS") || !(dev || admin && uid != "") {
				t.Fatalf("%q allowed for %+v write=%v dev=%v", topic, p, write, dev)
			}
			return
		}
		if !wire.IsChatPrefix(topic) {
			if !dev {
				t.Fatalf("non-chat %q allowed outside dev mode", topic)
			}
			return
		}
		if !write && strings.ContainsAny(topic, "+#") {
			if dev {
				return // any filter in dev mode: deliveries are checked by name below
			}
			if uid == "" {
				t.Fatalf("anonymous allowed on chat filter %q", topic)
			}
			if gid, ok := strings.CutPrefix(topic, "group/"); ok {
				gid, last, _ := strings.Cut(gid, "/")
				if (last != "#" && last != "+") || wire.ValidGroupID(gid) != nil || !(staticMem{}).IsMember(gid, uid) {
					t.Fatalf("group wildcard %q allowed for %s", topic, uid)
				}
				return
			}
			if topic != "user/"+uid+"/#" && topic != "user/"+uid+"/+" {
				t.Fatalf("wildcard %q allowed for %s", topic, uid)
			}
			return
		}
		// Chat topic names (publishes, exact subscriptions, every
		// delivery, in every mode): only the table.
		if uid == "" {
			t.Fatalf("anonymous allowed on chat topic %q (dev=%v)", topic, dev)
		}
		tp := wire.ParseTopic(topic)
		switch tp.Kind {
		case wire.KindDirect, wire.KindUserTyping, wire.KindReceipts:
			if !write && tp.Owner != uid {
				t.Fatalf("%s may read %q", uid, topic)
			}
		case wire.KindGroup, wire.KindGroupTyping:
			if !(staticMem{}).IsMember(tp.Owner, uid) {
				t.Fatalf("%s not a member, write=%v on %q", uid, write, topic)
			}
		case wire.KindEvents:
			if write || tp.Owner != uid {
				t.Fatalf("%s write=%v on %q", uid, write, topic)
			}
		case wire.KindPresence:
			if write || (tp.Owner != uid && !(staticVis{}).CanSeePresence(uid, tp.Owner)) {
				t.Fatalf("%s write=%v on %q", uid, write, topic)
			}
		case wire.KindHeartbeat:
			if !write || tp.Owner != uid {
				t.Fatalf("%s write=%v on %q", uid, write, topic)
			}
		default:
			t.Fatalf("%q (%v) allowed for %s write=%v", topic, tp.Kind, uid, write)
		}
	})
}

// A link connection (bridge/region) publishes under its own
// $link/{region}/ and reads nothing; users never reach $link/ (FuzzACL:
// no $ topic but $SYS for them).
func TestAllowedLink(t *testing.T) {
	p := wire.Principal{Link: "eu"}
	for _, c := range []struct {
		topic string
		write bool
		want  bool
	}{
		{"$link/eu/dm", true, true},
		{"$link/eu/dm", false, false},
		{"$link/us/dm", true, false},
		{"$link/eu", true, false},
		{"$link/eu/+", true, false},
		{"$link/#", false, false},
		{"user/bob/newMessage", true, false},
		{"user/bob/newMessage", false, false},
		{"sensors/x", true, false},
	} {
		for _, dev := range []bool{false, true} {
			if got := allowed(p, dev, staticVis{}, staticMem{}, c.topic, c.write); got != c.want {
				t.Errorf("link eu, %q write=%v dev=%v: %v, want %v", c.topic, c.write, dev, got, c.want)
			}
		}
	}
	for _, uid := range []string{"", "alice"} {
		for _, dev := range []bool{false, true} {
			if allowed(wire.Principal{UserID: uid, Admin: true}, dev, staticVis{}, staticMem{}, "$link/eu/dm", true) {
				t.Errorf("user %q (dev=%v) may publish to $link/eu/dm", uid, dev)
			}
		}
	}
}

func FuzzACLLink(f *testing.F) {
	f.Add("eu", "$link/eu/dm", true)
	f.Add("eu", "$link/us/dm", true)
	f.Add("eu", "user/bob/newMessage", false)
	f.Fuzz(func(t *testing.T, region, topic string, write bool) {
		if region == "" {
			region = "eu"
		}
		if allowed(wire.Principal{Link: region}, true, staticVis{}, staticMem{}, topic, write) &&
			(!write || !strings.HasPrefix(topic, "$link/"+region+"/") || strings.ContainsAny(topic, "+#")) {
			t.Fatalf("link %q allowed %q write=%v", region, topic, write)
		}
	})
}
