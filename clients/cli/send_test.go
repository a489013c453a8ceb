package cli

import (
	"errors"
	"strings"
	"testing"

	tea "github.com/charmbracelet/bubbletea"

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
