package cli

import (
	"strings"
	"testing"

	"github.com/charmbracelet/x/ansi"
)

// A message longer than the chat pane is wide is shown whole, wrapped
// onto more lines (indented under its sender), and the messages after it
// stay on the screen: the pane used to cut every line at its width, so
// the end of a long message could not be read at all.
func TestLongMessagesWrapInTheChatPane(t *testing.T) {
	now := t0
	m := testModel(&fakeClient{}, &now) // 100 columns
	long := "START " + strings.Repeat("word ", 40) + "THEEND"
	url := "https://example.com/" + strings.Repeat("x", 150) + "/URLEND"
	m.st.receive(msg(10, "alice", "me", long))
	m.st.receive(msg(11, "alice", "me", url))
	m.st.receive(msg(12, "alice", "me", "latest"))
	m.st.openConv("alice")
	m.refresh()
	m.vp.GotoBottom()
	view := ansi.Strip(m.View())
	for _, want := range []string{"START", "THEEND", "URLEND", "latest"} {
		if !strings.Contains(view, want) {
			t.Errorf("the screen lacks %q:\n%s", want, view)
		}
	}
	for _, line := range strings.Split(view, "\n") {
		if w := ansi.StringWidth(line); w > 100 {
			t.Errorf("a line of %d cells on a 100-column terminal: %q", w, line)
		}
	}
	if !strings.Contains(view, continuationIndent+"word") {
		t.Errorf("the wrapped lines are not indented under the sender:\n%s", view)
	}
}
