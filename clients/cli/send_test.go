package cli

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/ansi"

	edgechat "github.com/edgechat/edgechat/clients/go"
)

// A message whose send gave up (the 2-minute timeout, the server away)
// may have been stored all the same: when its stored copy arrives (the
// catch-up after the reconnection), it replaces the "not sent" line
// rather than showing next to it, so that the user does not send it
// again.
func TestAFailedSendIsReplacedByItsStoredCopy(t *testing.T) {
	s := newState("me")
	s.openConv("alice")
	s.addPending("alice", "cid-1", "hello", t0)
	s.sendFailed("alice", "cid-1", errors.New("context deadline exceeded"))
	stored := msg(5, "me", "alice", "hello")
	stored.CID = "cid-1"
	s.receive(stored)
	c := s.conv("alice")
	if len(c.entries) != 1 || c.entries[0].failed != "" || c.entries[0].ID != stored.ID {
		t.Fatalf("entries after the stored copy came: %+v", c.entries)
	}
}

// A message over the server's limit (8 KiB) is refused on the input line
// with a word of why, and stays there to be shortened: the input line
// used to cut a longer paste at 8192 characters without a word, and
// Enter sent what was left.
func TestAnOverlongMessageIsRefusedNotCut(t *testing.T) {
	fc := &fakeClient{}
	now := t0
	m := testModel(fc, &now)
	typeLine(m, "/open alice")
	long := strings.Repeat("a", edgechat.MaxBodyBytes) + "THE END"
	_, cmd := m.Update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(long), Paste: true})
	run(m, cmd)
	_, cmd = m.Update(tea.KeyMsg{Type: tea.KeyEnter})
	run(m, cmd)
	for _, s := range fc.sent {
		if s.Body != long {
			t.Fatalf("sent a message of %d bytes cut from the %d pasted", len(s.Body), len(long))
		}
	}
	if len(fc.sent) != 0 {
		t.Fatal("sent a message over the limit")
	}
	if !strings.Contains(m.st.status, "8192") || m.input.Value() == "" {
		t.Fatalf("status %q, input %d bytes: want the limit said and the text kept", m.st.status, len(m.input.Value()))
	}
}

// A message I send shows at once, also in a conversation longer than the
// chat pane: the pane stayed where it was, so my line went in below its
// bottom, out of sight, until PgDn (the stored copy that replaces it
// did not move the pane either; the first went into the blank line
// under the last message). By hand: a 120-message chat, the second line
// sent after opening it not on the screen.
func TestMyMessageShowsInALongConversation(t *testing.T) {
	var page []edgechat.Message
	for i := 60; i >= 1; i-- { // newest first, as the server pages
		page = append(page, msg(i, "alice", "me", fmt.Sprintf("old message %d", i)))
	}
	fc := &fakeClient{pages: map[string][]edgechat.Message{"": page}}
	now := t0.Add(time.Hour)
	m := testModel(fc, &now)
	typeLine(m, "/open alice")
	if v := ansi.Strip(m.View()); !strings.Contains(v, "old message 60") {
		t.Fatalf("the newest message is not on the screen after opening:\n%s", v)
	}
	for _, line := range []string{"my first line", "my second line", "my new line"} {
		typeLine(m, line)
		if v := ansi.Strip(m.View()); !strings.Contains(v, "me: "+line) {
			t.Fatalf("the message I sent, %q, is not on the screen:\n%s", line, v)
		}
	}
	m.Update(incomingMsg(msg(3700, "alice", "me", "her answer")))
	if v := ansi.Strip(m.View()); !strings.Contains(v, "her answer") || !strings.Contains(v, "me: my new line") {
		t.Fatalf("the answer that came next is not on the screen under mine:\n%s", v)
	}
}

// A message of another day says which day: the chat and the away list
// showed only the time, so yesterday's 11:47 could not be told from
// today's, nor last year's from last week's.
func TestAMessageOfAnotherDaySaysWhichDay(t *testing.T) {
	old := msg(1, "alice", "me", "from last week")
	today := msg(8*24*3600, "alice", "me", "from today")
	fc := &fakeClient{pages: map[string][]edgechat.Message{"": {today, old}}}
	now := today.Time.Add(time.Minute)
	m := testModel(fc, &now)
	typeLine(m, "/open alice")
	v := strings.Join(strings.Fields(ansi.Strip(m.View())), " ")
	wantOld := old.Time.Local().Format("Jan 2 15:04") + " alice: from last week"
	wantToday := "│" + today.Time.Local().Format("15:04") + " alice: from today" // no day before it
	if !strings.Contains(v, wantOld) || !strings.Contains(v, wantToday) {
		t.Fatalf("the chat does not show %q and %q:\n%s", wantOld, wantToday, ansi.Strip(m.View()))
	}
	lastYear := msg(1, "alice", "me", "from last year")
	lastYear.Time = now.AddDate(-1, 0, -3)
	if got, want := stamp(lastYear.Time, now), lastYear.Time.Local().Format("2006-01-02 15:04"); got != want {
		t.Fatalf("a message of last year is stamped %q, want %q", got, want)
	}
}

// /help shows the commands and clears the input line, as every command
// that ran does: it stayed there, so the next command typed was
// appended to it ("/help/group Team", which only showed the help
// again). A word that is no command stays, to be corrected, and the
// status names it.
func TestHelpClearsTheInputLine(t *testing.T) {
	fc := &fakeClient{}
	now := t0
	m := testModel(fc, &now)
	typeLine(m, "/help")
	if m.st.status != helpText || m.input.Value() != "" {
		t.Fatalf("after /help: status %q, input %q; want the commands and an empty line", m.st.status, m.input.Value())
	}
	typeLine(m, "/open alice")
	if m.st.open != "alice" {
		t.Fatalf("/open alice typed after /help: open conversation %q, input %q", m.st.open, m.input.Value())
	}
	typeLine(m, "/opne bob")
	if m.input.Value() != "/opne bob" || !strings.Contains(m.st.status, `unknown command "/opne"`) || !strings.Contains(m.st.status, helpText) {
		t.Fatalf("after /opne bob: status %q, input %q; want the word named, the commands, and the line kept to correct", m.st.status, m.input.Value())
	}
}

// A message that was not sent because the server did not answer in time
// (the node away for over sendTimeout) says so in words and can be sent
// again with /retry, under its own CID, so that one the server did
// store after all is not stored twice. The line said "not sent:
// edgechat: publish to user/alice/newMessage not confirmed after 0
// attempt(s): context deadline exceeded" and the only way on was to
// type the message again, as a new one.
func TestAMessageNotSentInTimeIsSentAgainWithRetry(t *testing.T) {
	fc := &fakeClient{sendErr: fmt.Errorf("edgechat: publish to user/alice/newMessage not confirmed after 0 attempt(s): %w", context.DeadlineExceeded)}
	now := t0
	m := testModel(fc, &now)
	typeLine(m, "/open alice")
	typeLine(m, "hello while away")
	c := m.st.conv("alice")
	if len(c.entries) != 1 || c.entries[0].failed == "" {
		t.Fatalf("entries after a send that timed out: %+v", c.entries)
	}
	line := ansi.Strip(renderEntryAt(c.entries[0], "me", now))
	if strings.Contains(line, "publish to") || strings.Contains(line, "deadline") || !strings.Contains(line, "/retry") {
		t.Fatalf("the failed line reads %q; want words a user reads and /retry", line)
	}
	fc.mu.Lock()
	fc.sendErr = nil
	fc.mu.Unlock()
	typeLine(m, "/retry")
	fc.mu.Lock()
	sent := slices.Clone(fc.sent)
	fc.mu.Unlock()
	if len(sent) != 2 || sent[1].CID != sent[0].CID || sent[1].Body != "hello while away" {
		t.Fatalf("sent %+v; want the message twice under one CID", sent)
	}
	if len(c.entries) != 1 || c.entries[0].failed != "" || c.entries[0].pending || c.entries[0].ID == "" || m.input.Value() != "" {
		t.Fatalf("after /retry: entries %+v, input %q; want the one message, stored", c.entries, m.input.Value())
	}
	typeLine(m, "/retry")
	if len(fc.sent) != 2 || !strings.Contains(m.st.status, "nothing") {
		t.Fatalf("a second /retry: %d sends, status %q", len(fc.sent), m.st.status)
	}
}

// The conversation list shows the newest message of each conversation
// as its preview, not a message of mine that was not sent: a failed
// line stays at the bottom of the chat (to be sent again), and the
// preview showed it for good, whatever came after.
func TestTheListPreviewIsNotAMessageThatWasNotSent(t *testing.T) {
	fc := &fakeClient{sendErr: context.DeadlineExceeded}
	now := t0
	m := testModel(fc, &now)
	typeLine(m, "/open alice")
	typeLine(m, "unsent")
	in := msg(7, "alice", "me", "newer")
	m.Update(incomingMsg(in))
	preview := func() string {
		for _, it := range m.list.Items() {
			if c := it.(convItem); c.peer == "alice" {
				return c.last
			}
		}
		return "(no alice in the list)"
	}
	if p := preview(); p != "newer" {
		t.Fatalf("alice's preview %q after her message came; want %q", p, "newer")
	}
	fc.mu.Lock()
	fc.sendErr = nil
	fc.mu.Unlock()
	typeLine(m, "sent")
	if p := preview(); p != "sent" {
		t.Fatalf("alice's preview %q after my message was sent; want it", p)
	}
}

// While the client is offline ("reconnecting…") it shows nobody's
// presence, since no change would reach it: it went on showing "● bob
// online" in the chat's header and the list for as long as its own
// connection was down, while bob may have gone. The last heard shows
// again once the connection is back.
func TestPresenceIsNotShownWhileOffline(t *testing.T) {
	fc := &fakeClient{}
	now := t0
	m := testModel(fc, &now)
	m.Update(connMsg{up: true})
	typeLine(m, "/open alice")
	m.Update(presenceMsg{uid: "alice", status: edgechat.StatusOnline})
	if v := ansi.Strip(m.View()); !strings.Contains(v, "alice online") {
		t.Fatalf("online: the screen does not say alice is online:\n%s", v)
	}
	m.Update(connMsg{up: false})
	if v := ansi.Strip(m.View()); strings.Contains(v, "online") || strings.Contains(v, "●") || !strings.Contains(v, "reconnecting") {
		t.Fatalf("offline: the screen still shows alice's presence:\n%s", v)
	}
	m.Update(connMsg{up: true})
	if v := ansi.Strip(m.View()); !strings.Contains(v, "alice online") {
		t.Fatalf("back online: alice's last heard presence is gone:\n%s", v)
	}
}

// A message the server refuses says the server's words, not the MQTT
// packet's: by hand, /open ghost (no such user) and a message read "(not
// sent: publish refused (reason 0x90): topic name invalid: no such
// user)".
func TestARefusedMessageSaysWhyInWords(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&edgechat.PublishError{Reason: 0x90, Text: "topic name invalid: no such user"}, "(not sent: no such user)"},
		{&edgechat.PublishError{Reason: 0x87, Text: "not authorized: bob does not accept your messages"}, "(not sent: bob does not accept your messages)"},
		{&edgechat.PublishError{Reason: 0x99}, "(not sent: the server refused it (0x99))"},
	} {
		fc := &fakeClient{sendErr: tc.err}
		now := t0
		m := testModel(fc, &now)
		typeLine(m, "/open ghost")
		typeLine(m, "hello ghost")
		c := m.st.conv("ghost")
		if line := ansi.Strip(renderEntryAt(c.entries[0], "me", now)); !strings.HasSuffix(line, tc.want) {
			t.Errorf("refused with %v: the line reads %q; want it to end %q", tc.err, line, tc.want)
		}
	}
}
