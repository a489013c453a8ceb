package cli

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A conversation I read on another device (my phone) loses its unread
// count in the terminal client too: the server tells every device of
// mine (conversation.read, the SDK's OnRead), and the client kept
// showing "bob (2)" until it next listed the conversations (a
// reconnection). And someone typing in a group I have open shows in its
// header ("bob typing…"), as a direct peer's typing does: the client
// followed only direct typing (OnTyping), never a group's.
func TestTerminalClientFollowsReadsElsewhereAndGroupTyping(t *testing.T) {
	n := nodetest.StartNode(t)
	annTok, bobTok := n.NewUser(t, "ann"), n.NewUser(t, "bob")
	n.NewUser(t, "carol")
	gid := newGroup(t, n, bobTok, "Team", "ann", "carol")
	bob := dialSDK(t, n, bobTok, nil)
	phone := dialSDK(t, n, annTok, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	term := startTerminal(t, Config{Server: n.HTTPURL, Token: annTok})
	term.waitShown("edgechat — ann")
	if _, err := bob.Send(ctx, "ann", "one"); err != nil {
		t.Fatal(err)
	}
	last, err := bob.Send(ctx, "ann", "two")
	if err != nil {
		t.Fatal(err)
	}
	term.waitShown("bob (2)")
	shown := len(term.text())
	if err := phone.MarkRead(ctx, "bob", last.ID); err != nil {
		t.Fatal(err)
	}
	// The list's line of bob is drawn again, without the count.
	bobLine := regexp.MustCompile(`[●○] bob( \(\d+\))?`)
	nodetest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		lines := bobLine.FindAllString(term.text()[shown:], -1)
		if len(lines) == 0 || strings.Contains(lines[len(lines)-1], "(") {
			return fmt.Errorf("bob's line in the list since the read on the phone: %q, want it without an unread count", lines)
		}
		return nil
	})

	if err := term.typeLine("/group team"); err != nil {
		t.Fatal(err)
	}
	term.waitShown("# Team · 3 members")
	// A notice may come before the client follows the group's typing:
	// bob goes on typing, as an app does while its user types.
	nodetest.CheckFor(t, 30*time.Second, 200*time.Millisecond, func() error {
		if err := bob.TypingGroup(ctx, gid); err != nil {
			return err
		}
		if !strings.Contains(term.text(), "bob typing…") {
			return fmt.Errorf("the group's header has not shown %q", "bob typing…")
		}
		return nil
	})
}
