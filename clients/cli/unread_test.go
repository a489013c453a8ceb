package cli

import (
	"strings"
	"testing"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/ansi"

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

// The conversation list shows each conversation's unread count after its
// title, whatever the title's length: a group's name (up to 64
// characters, wide ones too) or a user ID (up to 32) longer than the
// pane pushed the count past its edge, where the list cut it with the
// rest of the title ("# Product team weekly s…"): the user saw no new
// messages in the chat that had them.
func TestTheUnreadCountShowsWhateverTheTitlesLength(t *testing.T) {
	now := t0
	m := testModel(&fakeClient{}, &now)
	m.Update(tea.WindowSizeMsg{Width: 100, Height: 30})
	long := "abcdefghijklmnopqrstuvwxyz012345" // 32, the longest user ID
	m.st.setGroups([]edgechat.Group{
		{ID: "g1", Name: "Product team weekly sync, Berlin office", MemberCount: 12},
		{ID: "g2", Name: strings.Repeat("宽字符测试", 6), MemberCount: 3},
	})
	var list []edgechat.Conversation
	for i, k := range []struct{ peer, group string }{{peer: long}, {group: "g1"}, {group: "g2"}} {
		list = append(list, edgechat.Conversation{Peer: k.peer, Group: k.group, LastMessage: msg(10+i, "bob", "me", "hi"), Unread: 7 + i})
	}
	m.Update(convsMsg{list: list})
	view := ansi.Strip(m.View())
	for _, want := range []string{"(7)", "(8)", "(9)"} {
		if !strings.Contains(view, want) {
			t.Errorf("the list does not show the unread count %s:\n%s", want, view)
		}
	}
	for _, title := range []string{"# Product team", "# 宽字符测试", "○ abcdefghij"} {
		if !strings.Contains(view, title) {
			t.Errorf("the list does not show the start of %q:\n%s", title, view)
		}
	}
}
