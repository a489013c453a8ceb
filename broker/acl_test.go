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
		{alice, true, "$share/g/#", false, false},
		{alice, true, "$share/g/$SYS/x", false, false},
		{alice, true, "sensors/#", false, true},
		{alice, true, "#", false, false},
		{alice, true, "+/x", false, false},
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
	} {
		if got := allowed(tc.p, tc.dev, staticVis{}, staticMem{}, tc.topic, tc.write); got != tc.want {
			t.Errorf("allowed(%q dev=%v %q write=%v) = %v", tc.p.UserID, tc.dev, tc.topic, tc.write, got)
		}
	}
}

// FuzzACL checks the invariants of the topic table for any principal,
// mode and topic: chat topics never open to the wrong user, and outside
// dev mode nothing outside the table is allowed.
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
			if write || !dev || wire.IsChatPrefix(shared) || strings.HasPrefix(shared, "$") {
				t.Fatalf("shared %q allowed (write=%v dev=%v)", topic, write, dev)
			}
			return
		}
		if strings.HasPrefix(topic, "$") {
			if write || !admin || uid == "" || !strings.HasPrefix(topic, "$SYS") {
				t.Fatalf("%q allowed for %+v write=%v", topic, p, write)
			}
			return
		}
		if !wire.IsChatPrefix(topic) {
			if !dev {
				t.Fatalf("non-chat %q allowed outside dev mode", topic)
			}
			return
		}
		// Chat topics: only the table.
		if uid == "" {
			t.Fatalf("anonymous allowed on chat topic %q", topic)
		}
		if !write && strings.ContainsAny(topic, "+#") {
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
