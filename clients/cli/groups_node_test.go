package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	edgechat "github.com/edgechat/edgechat/clients/go"
	"github.com/edgechat/edgechat/node/nodetest"
)

// terminal is one run of the terminal client (Run) against a real node:
// keys typed into a pipe, the screen written to a buffer.
type terminal struct {
	t      *testing.T
	typing *io.PipeWriter
	screen *screenBuffer
	done   chan error
	cancel context.CancelFunc
}

func startTerminal(t *testing.T, cfg Config) *terminal {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	keys, typing := io.Pipe()
	term := &terminal{t: t, typing: typing, screen: &screenBuffer{}, done: make(chan error, 1), cancel: cancel}
	go func() {
		term.done <- Run(ctx, cfg, keys, term.screen)
		keys.Close()
	}()
	t.Cleanup(func() {
		typing.Close()
		cancel()
		<-term.done
	})
	return term
}

// typeLine types a line and Enter, after Ctrl+U (clears what a refused
// command left on the input line).
func (tm *terminal) typeLine(line string) error {
	_, err := io.WriteString(tm.typing, "\x15"+line+"\r")
	return err
}

var ansiSeq = regexp.MustCompile(`\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78]`)

// text is everything the client has written to the screen, without the
// terminal's control sequences.
func (tm *terminal) text() string { return ansiSeq.ReplaceAllString(tm.screen.String(), "") }

// waitShown waits until the screen has shown s.
func (tm *terminal) waitShown(s string) {
	tm.t.Helper()
	nodetest.CheckFor(tm.t, 30*time.Second, 50*time.Millisecond, func() error {
		if !strings.Contains(tm.text(), s) {
			return fmt.Errorf("the screen has not shown %q", s)
		}
		return nil
	})
}

// quit types /quit and waits for Run to return.
func (tm *terminal) quit() {
	tm.t.Helper()
	if err := tm.typeLine("/quit"); err != nil {
		tm.t.Fatal(err)
	}
	select {
	case err := <-tm.done:
		tm.done <- err // for the cleanup
		if err != nil {
			tm.t.Fatalf("Run: %v", err)
		}
	case <-time.After(time.Minute):
		tm.t.Fatal("the terminal client did not quit")
	}
}

func postJSON(t *testing.T, url, tok string, body, out any) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("POST %s: %s", url, resp.Status)
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatal(err)
		}
	}
}

func newGroup(t *testing.T, n *nodetest.Node, ownerTok, name string, members ...string) string {
	t.Helper()
	var g struct {
		ID string `json:"groupId"`
	}
	postJSON(t, n.HTTPURL+"/user/groups", ownerTok, map[string]any{"name": name, "members": members}, &g)
	if g.ID == "" {
		t.Fatal("no group ID")
	}
	return g.ID
}

// screenBuffer is what the client wrote, safe to read while it writes.
type screenBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *screenBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *screenBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// inbox collects what an SDK client receives.
type inbox struct {
	mu   sync.Mutex
	msgs []edgechat.Message
}

func (b *inbox) add(m edgechat.Message) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.msgs = append(b.msgs, m)
}

func (b *inbox) find(pred func(edgechat.Message) bool) []edgechat.Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []edgechat.Message
	for _, m := range b.msgs {
		if pred(m) {
			out = append(out, m)
		}
	}
	return out
}

func dialSDK(t *testing.T, n *nodetest.Node, tok string, box *inbox) *edgechat.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	opts := edgechat.Options{URLs: []string{n.WSURL}, HTTPURL: n.HTTPURL, Token: tok}
	if box != nil {
		opts.OnMessage = box.add
	}
	cl, err := edgechat.Dial(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// The terminal client lists my groups with my direct conversations:
// /group NAME opens one (its name and member count in the header), a
// line typed there reaches another member as a message of the group
// from me, the other member's message is shown live with their name,
// and reading it in the open group moves my read cursor (its unread
// count is 0). Before, the client left groups out: /group was an
// unknown command and nothing was sent.
func TestTerminalClientChatsInAGroup(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	gid := newGroup(t, n, aliceTok, "team", "bob")
	got := &inbox{}
	alice := dialSDK(t, n, aliceTok, got)
	bobAPI := dialSDK(t, n, n.Token(t, "bob"), nil) // reads bob's unread counts

	term := startTerminal(t, Config{Server: n.HTTPURL, Token: bobTok})
	term.waitShown("# team")
	nodetest.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		if err := term.typeLine("/group team"); err != nil {
			return err
		}
		if !strings.Contains(term.text(), "# team · 2 members") {
			return fmt.Errorf("the group is not open")
		}
		return nil
	})
	const hello = "hello team, from the terminal"
	if err := term.typeLine(hello); err != nil {
		t.Fatal(err)
	}
	nodetest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		ms := got.find(func(m edgechat.Message) bool { return m.Body == hello })
		switch {
		case len(ms) == 0:
			return fmt.Errorf("alice has not received %q", hello)
		case len(ms) > 1 || ms[0].Group != gid || ms[0].From != "bob" || ms[0].To != "":
			return fmt.Errorf("alice received %+v, want one message of group %s from bob", ms, gid)
		}
		return nil
	})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := alice.SendGroup(ctx, gid, "welcome, bob"); err != nil {
		t.Fatal(err)
	}
	term.waitShown("alice: welcome, bob")
	nodetest.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		convs, err := bobAPI.Conversations(ctx)
		if err != nil {
			return err
		}
		for _, c := range convs {
			if c.Group == gid {
				if c.Unread != 0 {
					return fmt.Errorf("bob's unread in the open group: %d", c.Unread)
				}
				return nil
			}
		}
		return fmt.Errorf("the group is not in bob's conversations: %+v", convs)
	})
	term.quit()
}

// The terminal client keeps its sync cursor in its state directory
// (0600): a start shows what came in while it was not running, direct
// and group messages, each once ("While you were away"), and the next
// start shows none of it again, nor what the client showed live before
// it quit. Before, nothing was kept: every start showed only the last
// minute's messages, and a message older than that was never shown as
// new.
func TestTerminalClientShowsWhatCameWhileItWasClosedOnce(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	gid := newGroup(t, n, aliceTok, "team", "bob")
	alice := dialSDK(t, n, aliceTok, nil)
	dir := t.TempDir()
	cfg := Config{Server: n.HTTPURL, Token: bobTok, Device: "laptop", StateDir: dir}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// A first run, with nothing kept yet: a message it shows live.
	first := startTerminal(t, cfg)
	first.waitShown("No conversation open")
	if _, err := alice.Send(ctx, "bob", "before the restart, seen live"); err != nil {
		t.Fatal(err)
	}
	first.waitShown("before the restart")
	first.quit()

	files, _ := filepath.Glob(filepath.Join(dir, "state", "*.json"))
	if len(files) != 1 {
		t.Fatalf("state files %v, want one", files)
	}
	if fi, err := os.Stat(files[0]); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file %s: %v, %v (want 0600)", files[0], fi.Mode(), err)
	}

	// While bob's client is not running.
	const direct, group = "hello from the past, bob", "team news from the past"
	if _, err := alice.Send(ctx, "bob", direct); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendGroup(ctx, gid, group); err != nil {
		t.Fatal(err)
	}

	second := startTerminal(t, cfg)
	second.waitShown("While you were away: 2 new messages")
	second.waitShown("alice: " + direct)
	second.waitShown("alice: " + group)
	if s := second.text(); strings.Contains(s, "before the restart, seen live") {
		t.Fatalf("the second run shows again what the first showed:\n%s", s)
	}
	// A message the second run shows live, not on the away list.
	const live = "while the second run is open"
	if _, err := alice.Send(ctx, "bob", live); err != nil {
		t.Fatal(err)
	}
	second.waitShown("while the second r")
	second.quit()

	third := startTerminal(t, cfg)
	third.waitShown("Nothing new while you were away")
	for _, s := range []string{"alice: " + direct, "alice: " + group, "alice: " + live, "While you were away:"} {
		if strings.Contains(third.text(), s) {
			t.Fatalf("the third run shows %q again:\n%s", s, third.text())
		}
	}
	third.quit()
}
