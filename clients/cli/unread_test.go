package cli

import (
	"testing"

	edgechat "github.com/edgechat/edgechat/clients/go"
)

// The conversation list and the messages the SDK delivers race (at
// start the first sync's messages, after a reconnect the catch-up's):
// the list's unread count covers what the server had up to its newest
// message, and each message from the peer counts once whichever comes
// first. A message that came before the list answered was lost from
// the count (the list's count replaced it), and a message the list had
// counted was counted again when it came after.
func TestUnreadCountsEachMessageOnceWhateverTheOrder(t *testing.T) {
	list := func(last edgechat.Message, unread int) convsMsg {
		return convsMsg{list: []edgechat.Conversation{{Peer: "alice", LastMessage: last, Unread: unread}}}
	}
	now := t0
	for _, tc := range []struct {
		name  string
		steps []any
		want  int
	}{
		{"a newer message, then the list", []any{incomingMsg(msg(5, "alice", "me", "new")), list(msg(3, "alice", "me", "x"), 2)}, 3},
		{"the list, then a message it counted", []any{list(msg(3, "alice", "me", "x"), 2), incomingMsg(msg(3, "alice", "me", "x"))}, 2},
		{"the list, then a newer message", []any{list(msg(3, "alice", "me", "x"), 2), incomingMsg(msg(5, "alice", "me", "new"))}, 3},
		{"a message the list counted, then the list", []any{incomingMsg(msg(3, "alice", "me", "x")), list(msg(3, "alice", "me", "x"), 2)}, 2},
	} {
		m := testModel(&fakeClient{}, &now)
		for _, s := range tc.steps {
			m.Update(s)
		}
		if c := m.st.conv("alice"); c == nil || c.unread != tc.want {
			got := -1
			if c != nil {
				got = c.unread
			}
			t.Errorf("%s: alice's unread %d, want %d", tc.name, got, tc.want)
		}
	}
}

// A group's messages make a conversation of the group, not a direct
// conversation named by the group's ID (a group ID is 16 characters of
// a-z0-9: often a valid user name): once, they made a direct
// conversation of that name, counted unread, and a reply there went to
// the user of that name instead of the group. /open of that name is
// still the user's.
func TestGroupMessagesDoNotBecomeADirectConversation(t *testing.T) {
	now := t0
	fc := &fakeClient{}
	m := testModel(fc, &now)
	g := msg(7, "bob", "", "hi team")
	g.Group = "k3v9q2m8x7c1z0ab"
	m.Update(incomingMsg(g))
	if m.st.conv(g.Group) != nil || m.st.conv(groupKey(g.Group)) == nil || m.st.totalUnread() != 1 {
		t.Fatalf("a group message made conversations %+v (%d unread)", m.st.convs, m.st.totalUnread())
	}
	typeLine(m, "/open "+g.Group)
	typeLine(m, "meant for the user")
	if len(fc.sent) != 1 || fc.sent[0].To != g.Group || fc.sent[0].Group != "" || len(m.st.conv(g.Group).entries) != 1 {
		t.Fatalf("sent %+v", fc.sent)
	}
}
