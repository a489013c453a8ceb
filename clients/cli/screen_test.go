package cli

import (
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/ansi"

	edgechat "github.com/edgechat/edgechat/clients/go"
)

// On an 80x24 terminal the screen is at most 24 lines of 80 cells, and
// what it says is on it: a group's header with a long name, the help
// text and a /sessions list, which are longer than a line. The header
// used to wrap onto a second line, making the screen a line taller
// than the terminal (the renderer then drops its top line: the panes'
// top borders), and the status line was cut at the terminal's width (the
// renderer cuts wider lines), so most of the help and of the session
// list, whose numbers /signout takes, could not be read.
func TestTheScreenFitsTheTerminalAndSaysItAll(t *testing.T) {
	now := t0
	m := testModel(&fakeClient{}, &now)
	m.Update(tea.WindowSizeMsg{Width: 80, Height: 24})
	m.st.setGroups([]edgechat.Group{{ID: "g1", Name: "Product team weekly sync, Berlin office", MemberCount: 12}})
	m.st.online = true
	typeLine(m, "/group g1")

	fits := func(what string) string {
		t.Helper()
		view := ansi.Strip(m.View())
		lines := strings.Split(view, "\n")
		if len(lines) > 24 {
			t.Errorf("%s: %d lines on a 24-line terminal:\n%s", what, len(lines), view)
		}
		for _, l := range lines {
			if w := ansi.StringWidth(l); w > 80 {
				t.Errorf("%s: a line of %d cells on an 80-column terminal (cut by the renderer): %q", what, w, l)
			}
		}
		if !strings.HasPrefix(lines[0], "╭") {
			t.Errorf("%s: the screen does not start with the panes' top border:\n%s", what, view)
		}
		return strings.Join(strings.Fields(view), " ")
	}
	fits("group header")

	typeLine(m, "/help")
	if v := fits("help"); !strings.Contains(v, "/signout N, /quit") {
		t.Errorf("the help's end is not on the screen:\n%s", v)
	}

	var list []edgechat.Session
	for _, d := range []string{"laptop", "phone", "tablet", "work-desktop", "old-phone"} {
		list = append(list, edgechat.Session{ID: d, Device: d, LastUsedAt: now.Add(-time.Hour)})
	}
	m.Update(sessionsMsg{list: list})
	if v := fits("sessions"); !strings.Contains(v, "5 old-phone") || !strings.Contains(v, "/signout N ends one") {
		t.Errorf("the session list is not all on the screen:\n%s", v)
	}
}

// On a narrow terminal (a phone's, 40 to 50 columns) the chat can be
// read: the panes took 52 columns whatever the terminal's width (the
// list 28, the chat at least 20), the renderer cut each line at the
// terminal's edge, and of the chat pane 10 columns were left at 40
// ("│12:00 ali"): no message could be read. Now the list gives way, and
// below the width of both it is shown instead of the chat while Tab has
// it focused.
func TestTheChatCanBeReadOnANarrowTerminal(t *testing.T) {
	for _, width := range []int{40, 50} {
		now := t0
		m := testModel(&fakeClient{}, &now)
		m.Update(tea.WindowSizeMsg{Width: width, Height: 14})
		m.st.online = true
		typeLine(m, "/open alice")
		m.Update(incomingMsg(msg(5, "alice", "me", "a message long enough to wrap in the pane")))
		check := func(what string, want ...string) {
			t.Helper()
			view := ansi.Strip(m.View())
			for _, l := range strings.Split(view, "\n") {
				if w := ansi.StringWidth(l); w > width {
					t.Errorf("%d columns, %s: a line of %d cells (cut by the renderer): %q", width, what, w, l)
				}
			}
			flat := strings.Join(strings.Fields(strings.NewReplacer("│", " ", "┃", " ").Replace(view)), " ")
			for _, w := range want {
				if !strings.Contains(flat, w) {
					t.Errorf("%d columns, %s: %q is not on the screen:\n%s", width, what, w, view)
				}
			}
		}
		check("the chat", "alice: a message long enough to wrap in the pane")
		m.Update(tea.KeyMsg{Type: tea.KeyTab})
		check("the list (Tab)", "alice")
	}
}
