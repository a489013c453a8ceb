package cli

import (
	"strings"
	"testing"
	"time"

	edgechat "github.com/edgechat/edgechat/clients/go"
)

// A read of mine on another device (OnRead) lowers the conversation's
// unread count to the server's after the read, but not below the
// messages newer than the read that came here since; it never raises a
// count, and leaves the open conversation (read here) at 0.
func TestModelFollowsReadsOnOtherDevices(t *testing.T) {
	now := t0
	const gid = "k3v9q2m8x7c1z0ab"
	m := testModel(&fakeClient{}, &now)
	for i := 1; i <= 3; i++ {
		m.Update(incomingMsg(msg(i, "bob", "me", "b")))
	}
	m.Update(incomingMsg(groupMsg(4, "carol", gid, "g")))
	m.Update(incomingMsg(msg(5, "dave", "me", "d")))
	if v := m.View(); !strings.Contains(v, "bob (3)") || !strings.Contains(v, "dave (1)") {
		t.Fatalf("before the reads:\n%s", v)
	}
	m.Update(readMsg{Peer: "bob", UpTo: msg(3, "", "", "").ID, Unread: 0})
	m.Update(readMsg{Group: gid, UpTo: msg(4, "", "", "").ID, Unread: 0})
	if c := m.st.conv("bob"); c.unread != 0 || m.st.conv(groupKey(gid)).unread != 0 || strings.Contains(m.View(), "bob (") {
		t.Fatalf("after reading bob and the group on the phone: bob %d, group %d\n%s", c.unread, m.st.conv(groupKey(gid)).unread, m.View())
	}
	// A read up to 2 of bob's 4 (one came here after the server counted).
	m.Update(incomingMsg(msg(6, "bob", "me", "b")))
	m.Update(incomingMsg(msg(7, "bob", "me", "b")))
	m.Update(readMsg{Peer: "bob", UpTo: msg(6, "", "", "").ID, Unread: 0})
	if c := m.st.conv("bob"); c.unread != 1 {
		t.Fatalf("bob's unread after a read up to 6 of 7: %d, want 1", c.unread)
	}
	// Never raised; another conversation untouched.
	m.Update(readMsg{Peer: "bob", UpTo: msg(1, "", "", "").ID, Unread: 5})
	if c := m.st.conv("bob"); c.unread != 1 || m.st.conv("dave").unread != 1 {
		t.Fatalf("bob %d (want 1), dave %d (want 1)", c.unread, m.st.conv("dave").unread)
	}
}

// Typing notices: a group's typists show in its header (by name, also
// several), a "stopped" notice clears at once what a start showed, and
// a notice expires after typingShown without another.
func TestModelShowsTypingInGroupsAndStops(t *testing.T) {
	now := t0
	const gid = "k3v9q2m8x7c1z0ab"
	fc := &fakeClient{groups: []edgechat.Group{{ID: gid, Name: "Team", MemberCount: 3}}}
	m := testModel(fc, &now)
	run(m, m.loadGroups())
	typeLine(m, "/group team")
	m.Update(typingMsg{from: "carol", group: gid})
	m.Update(typingMsg{from: "bob", group: gid})
	m.Update(typingMsg{from: "dave", group: "othergroup000000"})
	if v := m.View(); !strings.Contains(v, "bob, carol typing…") {
		t.Fatalf("two typing in the group:\n%s", v)
	}
	m.Update(typingMsg{from: "bob", group: gid, stopped: true})
	if v := m.View(); !strings.Contains(v, "carol typing…") || strings.Contains(v, "bob, carol") {
		t.Fatalf("after bob stopped:\n%s", v)
	}
	m.Update(incomingMsg(groupMsg(1, "carol", gid, "done")))
	if v := m.View(); strings.Contains(v, "typing…") {
		t.Fatalf("after carol's message:\n%s", v)
	}
	// Direct: started, then stopped; started, then expired.
	typeLine(m, "/open bob")
	m.Update(typingMsg{from: "bob"})
	if !strings.Contains(m.View(), "typing…") {
		t.Fatalf("bob typing to me:\n%s", m.View())
	}
	m.Update(typingMsg{from: "bob", stopped: true})
	if strings.Contains(m.View(), "typing…") {
		t.Fatalf("bob stopped:\n%s", m.View())
	}
	m.Update(typingMsg{from: "bob"})
	now = now.Add(typingShown + time.Second)
	if strings.Contains(m.View(), "typing…") {
		t.Fatalf("bob's notice after %v:\n%s", typingShown+time.Second, m.View())
	}
}
