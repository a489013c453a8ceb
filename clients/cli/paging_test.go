package cli

import (
	"slices"
	"testing"

	tea "github.com/charmbracelet/bubbletea"

	edgechat "github.com/edgechat/edgechat/clients/go"
)

// PgUp still pages back after a chat was switched while an older page
// was loading: the page's answer for the chat left behind used to leave
// the client "loading" for ever, and PgUp did nothing in any chat.
func TestPagingWorksAfterSwitchingChatsWhileAPageLoads(t *testing.T) {
	fc := &fakeClient{pages: map[string][]edgechat.Message{
		"": {msg(3, "alice", "me", "three"), msg(2, "alice", "me", "two")},
	}}
	now := t0
	m := testModel(fc, &now)
	typeLine(m, "/open bob") // its first page loaded
	typeLine(m, "/open alice")
	m.vp.GotoTop()
	_, older := m.Update(tea.KeyMsg{Type: tea.KeyPgUp}) // alice's older page, still on its way
	if older == nil {
		t.Fatal("PgUp at the top of alice's chat loads nothing")
	}
	typeLine(m, "/open bob") // loaded already: no page is asked for
	run(m, older)            // alice's page answers while bob's chat is open
	m.vp.GotoTop()
	_, cmd := m.Update(tea.KeyMsg{Type: tea.KeyPgUp})
	run(m, cmd)
	if want := "bob " + msg(2, "", "", "").ID; !slices.Contains(fc.history, want) {
		t.Fatalf("PgUp in bob's chat did not page back: history calls %v, want %q", fc.history, want)
	}
}
