package cli

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	edgechat "github.com/edgechat/edgechat/clients/go"
)

func (f *fakeClient) GroupHistory(_ context.Context, gid, before string, _ int) ([]edgechat.Message, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.history = append(f.history, "#"+gid+" "+before)
	return f.groupPages[before], false, nil
}

func (f *fakeClient) Groups(context.Context) ([]edgechat.Group, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.groups, nil
}

func (f *fakeClient) MarkGroupRead(_ context.Context, gid, upTo string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.read = append(f.read, "#"+gid+" "+upTo)
	return nil
}

func groupMsg(n int, from, gid, body string) edgechat.Message {
	m := msg(n, from, "", body)
	m.Group = gid
	return m
}

// A group is a conversation of its own, keyed apart from users (a
// group ID is often a valid user name): listed by name with its unread
// count, opened with /group NAME, its history read with GroupHistory,
// what I type sent to the group, and read as I read it (MarkGroupRead).
func TestModelGroupConversation(t *testing.T) {
	const gid = "k3v9q2m8x7c1z0ab"
	fc := &fakeClient{
		groups:     []edgechat.Group{{ID: gid, Name: "Team", MemberCount: 3}, {ID: "emptygroup000000", Name: "Quiet"}},
		groupPages: map[string][]edgechat.Message{"": {groupMsg(2, "carol", gid, "second"), groupMsg(1, "dave", gid, "first")}},
	}
	now := t0
	m := testModel(fc, &now)
	run(m, m.loadGroups())
	run(m, m.loadConversations())
	m.Update(incomingMsg(groupMsg(3, "carol", gid, "third")))
	// A user named like the group is another conversation.
	m.Update(incomingMsg(msg(4, gid, "me", "I am a user")))
	g, u := m.st.conv(groupKey(gid)), m.st.conv(gid)
	if g == nil || u == nil || g.unread != 1 || u.unread != 1 || m.st.conv(groupKey("emptygroup000000")) == nil {
		t.Fatalf("convs %+v", m.st.convs)
	}
	if v := m.View(); !strings.Contains(v, "# Team (1)") || !strings.Contains(v, "# Quiet") || !strings.Contains(v, "carol: third") {
		t.Fatalf("the list lacks the groups:\n%s", v)
	}

	typeLine(m, "/group team")
	if m.st.open != groupKey(gid) || g.unread != 0 || !slices.Equal(bodies(g), []string{"first", "second", "third"}) {
		t.Fatalf("open %q unread %d %v", m.st.open, g.unread, bodies(g))
	}
	if !slices.Contains(fc.history, "#"+gid+" ") || !slices.Contains(fc.read, "#"+gid+" "+msg(3, "", "", "").ID) {
		t.Fatalf("history %v read %v", fc.history, fc.read)
	}
	if v := m.View(); !strings.Contains(v, "# Team · 3 members") || !strings.Contains(v, "dave: first") {
		t.Fatalf("view:\n%s", v)
	}
	typeLine(m, "hi all")
	if len(fc.sent) != 1 || fc.sent[0].Group != gid || fc.sent[0].To != "" || fc.typing != 0 {
		t.Fatalf("sent %+v (typing %d: none to a group)", fc.sent, fc.typing)
	}
	if slices.Contains(fc.watches, gid) {
		t.Fatalf("watched a group's presence: %v", fc.watches)
	}
	// A live message in the open group is read as it comes.
	_, cmd := m.Update(incomingMsg(groupMsg(200, "dave", gid, "live")))
	run(m, cmd)
	if g.unread != 0 || fc.read[len(fc.read)-1] != "#"+gid+" "+msg(200, "", "", "").ID {
		t.Fatalf("unread %d read %v", g.unread, fc.read)
	}

	typeLine(m, "/open alice")
	typeLine(m, "/open #Team")
	if m.st.open != groupKey(gid) {
		t.Fatalf("/open #Team opened %q", m.st.open)
	}
	typeLine(m, "/group nope")
	if !strings.Contains(m.st.status, "no group named") {
		t.Fatalf("status %q", m.st.status)
	}
	// Left the group: gone from the list (the open one stays).
	m.Update(groupsMsg{list: []edgechat.Group{{ID: gid, Name: "Team"}}})
	if m.st.conv(groupKey("emptygroup000000")) != nil {
		t.Fatal("a group I left is still listed")
	}
}

// After a start from a saved cursor the chat pane lists what came while
// the client was not running, until a conversation is opened; /away
// shows it again.
func TestModelShowsWhatCameWhileAway(t *testing.T) {
	fc := &fakeClient{groups: []edgechat.Group{{ID: "g1", Name: "Team"}}}
	now := t0
	m := testModel(fc, &now)
	run(m, m.loadGroups())
	m.st.arrive([]edgechat.Message{groupMsg(2, "carol", "g1", "in the group"), msg(1, "alice", "me", "hi bob")}, true)
	m.refresh()
	v := m.View()
	for _, s := range []string{"While you were away: 2 new messages", "alice: hi bob", "# Team", "carol: in the group"} {
		if !strings.Contains(v, s) {
			t.Fatalf("view lacks %q:\n%s", s, v)
		}
	}
	if strings.Index(v, "hi bob") > strings.Index(v, "in the group") {
		t.Fatalf("not oldest first:\n%s", v)
	}
	if m.st.conv("alice").unread != 1 || m.st.conv(groupKey("g1")).unread != 1 {
		t.Fatal("the away messages are not unread in their conversations")
	}
	typeLine(m, "/open alice")
	if strings.Contains(m.View(), "While you were away") {
		t.Fatal("the away list covers the open conversation")
	}
	typeLine(m, "/away")
	if !strings.Contains(m.View(), "While you were away") {
		t.Fatal("/away does not show it again")
	}

	// Nothing came: said so.
	m2 := testModel(&fakeClient{}, &now)
	m2.st.arrive(nil, true)
	m2.refresh()
	if !strings.Contains(m2.View(), "Nothing new while you were away") {
		t.Fatalf("view:\n%s", m2.View())
	}
}

// Quitting saves the cursor first (when online), and a second Esc quits
// at once; messages coming in schedule a save.
func TestModelSavesTheCursorBeforeQuitting(t *testing.T) {
	now := t0
	m := testModel(&fakeClient{}, &now)
	m.st.online = true
	saves := 0
	m.saveCursor = func(context.Context) error { saves++; return nil }
	if cmd := m.scheduleSave(); cmd == nil || !m.saving {
		t.Fatal("no save scheduled")
	}
	if cmd := m.scheduleSave(); cmd != nil {
		t.Fatal("a second save scheduled while one is due")
	}
	_, cmd := m.Update(saveDueMsg{})
	run(m, cmd)
	if saves != 1 || m.saving {
		t.Fatalf("saves %d saving %v", saves, m.saving)
	}
	_, cmd = m.Update(tea.KeyMsg{Type: tea.KeyEsc})
	if cmd == nil || !m.quitting {
		t.Fatal("Esc does not quit")
	}
	if _, cmd2 := m.Update(tea.KeyMsg{Type: tea.KeyEsc}); cmd2 == nil {
		t.Fatal("a second Esc does not quit at once")
	}
	done := make(chan any, 1)
	go func() { done <- cmd() }()
	select {
	case out := <-done:
		if saves != 2 {
			t.Fatalf("saves %d, want the quit's", saves)
		}
		if _, ok := out.(tea.QuitMsg); !ok {
			t.Fatalf("the quit's command yields %T", out)
		}
	case <-time.After(time.Minute):
		t.Fatal("the quit's save hangs")
	}
}

// Removed from a group (or having left it on another device) while its
// chat is open, the chat keeps the group's name and says that I am no
// longer a member: by hand, the header and the list turned to the
// group's ID ("# hub2c7pnmqdh73dq") with no word of why, and the next
// message was refused.
func TestARemovedGroupKeepsItsNameAndSaysSo(t *testing.T) {
	const gid = "k3v9q2m8x7c1z0ab"
	fc := &fakeClient{groups: []edgechat.Group{{ID: gid, Name: "Team", MemberCount: 3}}}
	now := t0
	m := testModel(fc, &now)
	run(m, m.loadGroups())
	typeLine(m, "/group Team")
	if v := m.View(); !strings.Contains(v, "# Team · 3 members") {
		t.Fatalf("the open group:\n%s", v)
	}
	fc.mu.Lock()
	fc.groups = nil // removed
	fc.mu.Unlock()
	m.Update(groupsChangedMsg{})
	run(m, m.loadGroups())
	v := m.View()
	if strings.Contains(v, gid) || !strings.Contains(v, "# Team") || !strings.Contains(v, "no longer a member") {
		t.Fatalf("after my removal the chat reads:\n%s", v)
	}
	fc.mu.Lock()
	fc.groups = []edgechat.Group{{ID: gid, Name: "Team", MemberCount: 4}} // added back
	fc.mu.Unlock()
	run(m, m.loadGroups())
	if v := m.View(); strings.Contains(v, "no longer a member") || !strings.Contains(v, "# Team · 4 members") {
		t.Fatalf("added back:\n%s", v)
	}
}
