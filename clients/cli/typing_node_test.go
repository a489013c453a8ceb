package cli

import (
	"fmt"
	"io"
	"testing"
	"time"

	edgechat "github.com/edgechat/edgechat/clients/go"
	"github.com/edgechat/edgechat/node/nodetest"
)

// A line that reaches the client in one read (typed by a text expander,
// dictation or a script, pasted into a terminal without bracketed
// paste, typed over a slow link) is sent as it was written. Bubbletea
// hands such a burst over word by word, and the input line took a word
// that spells one of its keys for that key: "up", "down" and "tab"
// vanished, "left", "right", "home" and "end" moved the cursor (the
// rest of the line then went in elsewhere), "delete" and "backspace"
// deleted a character. By hand in tmux: 'sent while the node was down'
// went out as 'sent while the node was'.
func TestALineTypedInOneBurstIsSentAsWritten(t *testing.T) {
	n := nodetest.StartNode(t)
	annTok := n.NewUser(t, "ann")
	got := &inbox{}
	dialSDK(t, n, n.NewUser(t, "bob"), got)
	term := startTerminal(t, Config{Server: n.HTTPURL, Token: annTok})
	term.waitShown("edgechat — ann")
	if err := term.typeLine("/open bob"); err != nil {
		t.Fatal(err)
	}
	term.waitShown("○ bob")
	line := "go up then down, turn left and right, home at the end: delete tab backspace"
	if _, err := io.WriteString(term.typing, line+"\r"); err != nil { // one write: one read
		t.Fatal(err)
	}
	var bodies []string
	nodetest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		bodies = nil
		for _, m := range got.find(func(m edgechat.Message) bool { return m.From == "ann" }) {
			bodies = append(bodies, m.Body)
		}
		if len(bodies) == 0 {
			return fmt.Errorf("bob got nothing from ann")
		}
		return nil
	})
	if len(bodies) != 1 || bodies[0] != line {
		t.Fatalf("bob got %q, want %q", bodies, line)
	}
}
