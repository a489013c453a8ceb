package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/charmbracelet/bubbles/cursor"
	tea "github.com/charmbracelet/bubbletea"

	edgechat "github.com/edgechat/edgechat/clients/go"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/testutil"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// msg builds a stored message whose ID encodes t0 + n seconds.
func msg(n int, from, to, body string) edgechat.Message {
	id := snowflake.Make(uint64(t0.Add(time.Duration(n)*time.Second).Sub(snowflake.Epoch).Milliseconds()), 1, 0).String()
	return edgechat.Message{ID: id, From: from, To: to, CID: fmt.Sprintf("c%d", n), Type: "text", Body: body, Time: edgechat.IDTime(id)}
}

func bodies(c *conv) []string {
	var out []string
	for _, e := range c.entries {
		out = append(out, e.Body)
	}
	return out
}

func TestIncomingUpdatesUnreadAndOrder(t *testing.T) {
	s := newState("me")
	s.receive(msg(1, "alice", "me", "a1"))
	s.receive(msg(2, "bob", "me", "b1"))
	s.receive(msg(3, "alice", "me", "a2"))
	if a := s.conv("alice"); a == nil || a.unread != 2 {
		t.Fatalf("alice unread %+v", a)
	}
	if s.convs[0].peer != "alice" || s.convs[1].peer != "bob" {
		t.Fatalf("order %s, %s; want latest activity first", s.convs[0].peer, s.convs[1].peer)
	}
	// The same message again (live and sync overlap) changes nothing.
	if _, mark := s.receive(msg(3, "alice", "me", "a2")); mark || s.conv("alice").unread != 2 || len(s.conv("alice").entries) != 2 {
		t.Fatal("duplicate counted")
	}
	// Opening clears unread; a new message in the open chat asks for a read receipt instead.
	s.openConv("alice")
	if s.conv("alice").unread != 0 || s.totalUnread() != 1 {
		t.Fatalf("after open: alice %d, total %d", s.conv("alice").unread, s.totalUnread())
	}
	peer, mark := s.receive(msg(4, "alice", "me", "a3"))
	if peer != "alice" || !mark || s.conv("alice").unread != 0 {
		t.Fatalf("open chat message: peer %q mark %v unread %d", peer, mark, s.conv("alice").unread)
	}
	if s.newestFromPeer("alice") != msg(4, "", "", "").ID {
		t.Fatal("read receipt would not cover the newest message")
	}
	// My own message from another device is not unread.
	s.receive(msg(5, "me", "bob", "from my phone"))
	if s.conv("bob").unread != 1 {
		t.Fatalf("bob unread %d", s.conv("bob").unread)
	}
}

func TestSendIsOptimisticAndReconciledByCID(t *testing.T) {
	s := newState("me")
	s.openConv("bob")
	s.addPending("bob", "c-x", "hello", t0)
	s.addPending("bob", "c-y", "second", t0)
	c := s.conv("bob")
	if len(c.entries) != 2 || !c.entries[0].pending {
		t.Fatalf("entries %+v", c.entries)
	}
	// A message from bob arrives meanwhile: it goes before my pending ones.
	s.receive(msg(1, "bob", "me", "hi"))
	if got := bodies(c); !slices.Equal(got, []string{"hi", "hello", "second"}) {
		t.Fatalf("order %v", got)
	}
	// The echo of the first arrives before Send returns.
	echo := msg(2, "me", "bob", "hello")
	echo.CID = "c-x"
	s.receive(echo)
	// Then Send returns the same stored message: nothing changes.
	s.sent("bob", echo)
	if got := bodies(c); !slices.Equal(got, []string{"hi", "hello", "second"}) {
		t.Fatalf("after reconcile %v", got)
	}
	if c.entries[1].pending || c.entries[1].ID != echo.ID || !c.entries[2].pending {
		t.Fatalf("entries %+v", c.entries)
	}
	// The second one fails.
	s.sendFailed("bob", "c-y", errors.New("refused"))
	if c.entries[2].failed != "refused" || c.entries[2].pending {
		t.Fatalf("failed entry %+v", c.entries[2])
	}
	if c.unread != 0 {
		t.Fatal("my own messages counted as unread")
	}
}

func TestPagingPrependsOlderHistory(t *testing.T) {
	s := newState("me")
	s.openConv("alice")
	// First page: newest first, as the server returns it.
	added := s.prependHistory("alice", []edgechat.Message{msg(10, "alice", "me", "10"), msg(9, "me", "alice", "9")}, true)
	if added != 2 || s.oldestID("alice") != msg(9, "", "", "").ID {
		t.Fatalf("added %d, oldest %s", added, s.oldestID("alice"))
	}
	s.receive(msg(11, "alice", "me", "11"))
	// Older page, overlapping by one message.
	s.prependHistory("alice", []edgechat.Message{msg(9, "me", "alice", "9"), msg(8, "alice", "me", "8"), msg(7, "alice", "me", "7")}, false)
	c := s.conv("alice")
	if got := bodies(c); !slices.Equal(got, []string{"7", "8", "9", "10", "11"}) {
		t.Fatalf("history %v", got)
	}
	if c.hasMore || !c.loaded {
		t.Fatalf("hasMore %v loaded %v", c.hasMore, c.loaded)
	}
}

func TestConversationsMerge(t *testing.T) {
	s := newState("me")
	s.setConversations([]edgechat.Conversation{
		{Peer: "bob", LastMessage: msg(1, "bob", "me", "old"), Unread: 1},
		{Peer: "alice", LastMessage: msg(5, "alice", "me", "new"), Unread: 3},
		{Group: "g1", LastMessage: msg(6, "x", "", "group")},
	})
	// Groups are listed with the direct conversations, by activity.
	if len(s.convs) != 3 || s.convs[0].peer != groupKey("g1") || s.convs[1].peer != "alice" || s.conv("alice").unread != 3 {
		t.Fatalf("convs %+v", s.convs)
	}
}

func TestTypingExpires(t *testing.T) {
	s := newState("me")
	s.setTyping("bob", "", false, t0)
	if !s.isTyping("bob", t0.Add(time.Second)) || s.isTyping("bob", t0.Add(typingShown+time.Second)) {
		t.Fatal("typing window wrong")
	}
	s.receive(msg(1, "bob", "me", "done typing"))
	if s.isTyping("bob", t0) {
		t.Fatal("a message from bob should clear his typing notice")
	}
}

// fakeClient records what the model asked of the SDK.
type fakeClient struct {
	mu      sync.Mutex
	sent    []edgechat.Message
	read    []string
	history []string // "peer before"
	typing  int
	sendErr error
	pages   map[string][]edgechat.Message // before -> page

	watches          []string
	forbidFirstWatch bool

	uploads   []fakeUpload      // see media_test.go
	uploadErr error             // what UploadMedia fails with, if set
	files     map[string][]byte // media ID -> content DownloadMedia serves

	sessions    []edgechat.Session // see sessions_test.go
	sessionsErr error

	groups     []edgechat.Group              // see groups_test.go
	groupPages map[string][]edgechat.Message // before -> page of GroupHistory
	ended      []string
}

func (f *fakeClient) UserID() string { return "me" }
func (f *fakeClient) SendMessage(_ context.Context, m edgechat.Message) (edgechat.Message, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent = append(f.sent, m)
	if f.sendErr != nil {
		return edgechat.Message{}, f.sendErr
	}
	out := msg(100+len(f.sent), "me", m.To, m.Body)
	out.CID, out.Type, out.Media = m.CID, m.Type, m.Media
	return out, nil
}
func (f *fakeClient) History(_ context.Context, with, before string, _ int) ([]edgechat.Message, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.history = append(f.history, with+" "+before)
	return f.pages[before], before == "", nil
}
func (f *fakeClient) Conversations(context.Context) ([]edgechat.Conversation, error) {
	return []edgechat.Conversation{{Peer: "alice", LastMessage: msg(3, "alice", "me", "x"), Unread: 2}}, nil
}
func (f *fakeClient) MarkRead(_ context.Context, peer, upTo string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.read = append(f.read, peer+" "+upTo)
	return nil
}
func (f *fakeClient) Typing(context.Context, string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.typing++
	return nil
}
func (f *fakeClient) WatchPresence(_ context.Context, uid string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.watches = append(f.watches, uid)
	if len(f.watches) == 1 && f.forbidFirstWatch {
		return fmt.Errorf("%w: presence of %s", edgechat.ErrForbidden, uid)
	}
	return nil
}
func (f *fakeClient) Presence(context.Context, string) (edgechat.Presence, error) {
	return edgechat.Presence{Status: edgechat.StatusOnline}, nil
}

// run executes a command and feeds every message it yields back into the
// model, the way the bubbletea loop would (batches included).
func run(m *model, cmd tea.Cmd) {
	if cmd == nil {
		return
	}
	out := cmd()
	switch v := out.(type) {
	case nil:
	case tea.BatchMsg:
		for _, c := range v {
			run(m, c)
		}
	case tickMsg:
		// don't loop on the clock
	default:
		if _, isBlink := v.(interface{ ID() int }); isBlink {
			return
		}
		_, next := m.Update(v)
		run(m, next)
	}
}

func typeLine(m *model, line string) {
	for _, r := range line {
		_, cmd := m.Update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{r}})
		run(m, cmd)
	}
	_, cmd := m.Update(tea.KeyMsg{Type: tea.KeyEnter})
	run(m, cmd)
}

// testModel is a model with a static cursor (no blink timers) and a
// clock that only moves when the test says.
func testModel(fc *fakeClient, now *time.Time) *model {
	m := newModel(context.Background(), fc)
	m.input.Cursor.SetMode(cursor.CursorStatic)
	m.now = func() time.Time { return *now }
	m.Update(tea.WindowSizeMsg{Width: 100, Height: 30})
	return m
}

func TestModelOpenSendAndPage(t *testing.T) {
	fc := &fakeClient{pages: map[string][]edgechat.Message{
		"": {msg(3, "alice", "me", "three"), msg(2, "me", "alice", "two")},
	}}
	fc.pages[msg(2, "", "", "").ID] = []edgechat.Message{msg(1, "alice", "me", "one")}
	now := t0
	m := testModel(fc, &now)
	run(m, m.loadConversations())
	if c := m.st.conv("alice"); c == nil || c.unread != 2 {
		t.Fatalf("conversations not loaded: %+v", m.st.convs)
	}

	typeLine(m, "/open alice")
	c := m.st.conv("alice")
	if m.st.open != "alice" || c.unread != 0 || !slices.Equal(bodies(c), []string{"two", "three"}) {
		t.Fatalf("open: %q unread %d %v", m.st.open, c.unread, bodies(c))
	}
	if !slices.Equal(fc.read, []string{"alice " + msg(3, "", "", "").ID}) {
		t.Fatalf("read receipts %v", fc.read)
	}

	typeLine(m, "hello alice")
	if len(fc.sent) != 1 || fc.sent[0].To != "alice" || fc.sent[0].CID == "" || fc.sent[0].Body != "hello alice" {
		t.Fatalf("sent %+v", fc.sent)
	}
	if got := bodies(c); !slices.Equal(got, []string{"two", "three", "hello alice"}) || c.entries[2].pending || c.entries[2].ID == "" {
		t.Fatalf("after send %+v", c.entries)
	}
	if fc.typing != 1 {
		t.Fatalf("typing notices %d, want 1 (throttled)", fc.typing)
	}
	if m.input.Value() != "" {
		t.Fatalf("input not cleared: %q", m.input.Value())
	}

	// PgUp at the top pages back from the oldest shown message.
	m.vp.GotoTop()
	_, cmd := m.Update(tea.KeyMsg{Type: tea.KeyPgUp})
	run(m, cmd)
	if got := bodies(c); !slices.Equal(got, []string{"one", "two", "three", "hello alice"}) || c.hasMore {
		t.Fatalf("after paging %v hasMore %v", got, c.hasMore)
	}
	if !slices.Contains(fc.history, "alice "+msg(2, "", "", "").ID) {
		t.Fatalf("history calls %v", fc.history)
	}
	// A live message in the open chat is shown and marked read.
	_, cmd = m.Update(incomingMsg(msg(200, "alice", "me", "live")))
	run(m, cmd)
	if c.unread != 0 || fc.read[len(fc.read)-1] != "alice "+msg(200, "", "", "").ID {
		t.Fatalf("unread %d receipts %v", c.unread, fc.read)
	}
	if v := m.View(); !strings.Contains(v, "live") || !strings.Contains(v, "alice") {
		t.Fatalf("view lacks the message:\n%s", v)
	}
}

func TestModelRejectsBadInput(t *testing.T) {
	fc := &fakeClient{}
	now := t0
	m := testModel(fc, &now)
	typeLine(m, "hello")
	if len(fc.sent) != 0 || !strings.Contains(m.st.status, "open a conversation") || m.input.Value() != "hello" {
		t.Fatalf("sent %v status %q input %q (kept for the user)", fc.sent, m.st.status, m.input.Value())
	}
	m.input.Reset()
	typeLine(m, "/open Not A User!")
	if m.st.open != "" || !strings.Contains(m.st.status, "not a user name") {
		t.Fatalf("open %q status %q", m.st.open, m.st.status)
	}
	m.input.Reset()
	fc.sendErr = errors.New("refused")
	typeLine(m, "/open bob")
	typeLine(m, "are you there")
	c := m.st.conv("bob")
	if len(c.entries) != 1 || c.entries[0].failed == "" {
		t.Fatalf("failed send not shown: %+v", c.entries)
	}
	_, cmd := m.Update(tea.KeyMsg{Type: tea.KeyCtrlN})
	run(m, cmd)
	if m.input.Value() != "/open " {
		t.Fatalf("Ctrl+N input %q", m.input.Value())
	}
	if _, cmd := m.Update(tea.KeyMsg{Type: tea.KeyEsc}); cmd == nil {
		t.Fatal("Esc does not quit")
	} else if _, ok := cmd().(tea.QuitMsg); !ok {
		t.Fatal("Esc does not quit")
	}
}

func TestRunConfigErrors(t *testing.T) {
	ctx := context.Background()
	for name, cfg := range map[string]Config{
		"no server":   {User: "alice", Token: "x"},
		"bad server":  {Server: "ftp://h", User: "alice"},
		"no user":     {Server: "http://127.0.0.1:1"},
		"no password": {Server: "http://127.0.0.1:1", User: "alice"},
	} {
		if err := Run(ctx, cfg, strings.NewReader(""), &strings.Builder{}); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v", name, err)
		}
	}
	tok := "e30." + "eyJzdWIiOiJib2IifQ" + ".x" // sub bob
	if err := Run(ctx, Config{Server: "http://127.0.0.1:1", User: "alice", Token: tok}, strings.NewReader(""), &strings.Builder{}); !errors.Is(err, ErrConfig) {
		t.Errorf("token for another user: %v", err)
	}
}

// Presence of a new contact is refused until a conversation exists; the
// model must try again after the first message instead of giving up.
func TestModelRewatchesPresenceAfterFirstMessage(t *testing.T) {
	fc := &fakeClient{forbidFirstWatch: true}
	now := t0
	m := testModel(fc, &now)
	typeLine(m, "/open dave")
	if m.watching["dave"] || m.st.status != "" {
		t.Fatalf("after refusal: watching %v status %q", m.watching["dave"], m.st.status)
	}
	typeLine(m, "hi dave")
	if !slices.Equal(fc.watches, []string{"dave", "dave"}) || m.st.presence["dave"] != edgechat.StatusOnline {
		t.Fatalf("watches %v presence %q", fc.watches, m.st.presence["dave"])
	}
}

// lockedBuffer is a strings.Builder safe for a writer and a reader in
// two goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Started with --token against a server that does not answer (a wrong
// --server, a node that is down), the client says on the terminal that
// it is connecting, and when the user gives up, why the attempts
// failed: the terminal stayed blank for as long as the user waited, and
// Ctrl+C said only "context canceled".
func TestRunSaysItWaitsForAServerThatDoesNotAnswer(t *testing.T) {
	defer func(d time.Duration) { connectingNote = d }(connectingNote)
	connectingNote = 100 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there now
	var out lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Server: server, User: "alice", Token: "e30.eyJzdWIiOiJhbGljZSJ9.x"}, strings.NewReader(""), &out)
	}()
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(out.String(), "connecting to "+server) {
			return fmt.Errorf("the terminal shows %q", out.String())
		}
		return nil
	})
	cancel() // Ctrl+C
	if err := <-done; err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("Run: %v; want why the connection attempts failed", err)
	}
}
