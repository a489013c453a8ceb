package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/list"
	"github.com/charmbracelet/bubbles/textinput"
	"github.com/charmbracelet/bubbles/viewport"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"

	edgechat "github.com/edgechat/edgechat/clients/go"
)

// chatClient is what the terminal client needs of the SDK; tests fake it.
type chatClient interface {
	UserID() string
	SendMessage(ctx context.Context, m edgechat.Message) (edgechat.Message, error)
	History(ctx context.Context, with, before string, limit int) ([]edgechat.Message, bool, error)
	GroupHistory(ctx context.Context, gid, before string, limit int) ([]edgechat.Message, bool, error)
	Conversations(ctx context.Context) ([]edgechat.Conversation, error)
	Groups(ctx context.Context) ([]edgechat.Group, error)
	MarkRead(ctx context.Context, peer, upTo string) error
	MarkGroupRead(ctx context.Context, gid, upTo string) error
	Typing(ctx context.Context, to string) error
	WatchPresence(ctx context.Context, uid string) error
	Presence(ctx context.Context, uid string) (edgechat.Presence, error)
	UploadMedia(ctx context.Context, r io.Reader, size int64, name, contentType string, progress func(sent, total int64)) (edgechat.MediaInfo, error)
	DownloadMedia(ctx context.Context, id string, w io.Writer, preview bool) (int64, error)
	Sessions(ctx context.Context) ([]edgechat.Session, error)
	EndSession(ctx context.Context, id string) error
}

var _ chatClient = (*edgechat.Client)(nil)

// Messages of the bubbletea program.
type (
	incomingMsg edgechat.Message
	typingMsg   struct {
		from, group string // group "": typing to me
		stopped     bool
	}
	readMsg     edgechat.ReadState // a read of mine, on any device
	presenceMsg struct{ uid, status string }
	connMsg     struct{ up bool }
	convsMsg    struct {
		list []edgechat.Conversation
		err  error
	}
	groupsMsg struct {
		list []edgechat.Group
		err  error
	}
	// groupsChangedMsg: a group of mine was created, renamed or changed
	// members (user/{me}/events).
	groupsChangedMsg struct{}
	// undeliverableMsg: a message of mine to another region was refused
	// there for good (the "undeliverable" event).
	undeliverableMsg struct{ id, to, group, reason string }
	// saveDueMsg: time to save the sync cursor; savedMsg: it was saved
	// (or not: err).
	saveDueMsg struct{}
	savedMsg   struct{ err error }
	historyMsg struct {
		peer    string
		before  string
		page    []edgechat.Message
		hasMore bool
		err     error
	}
	sentMsg struct {
		peer, cid string
		msg       edgechat.Message
		err       error
	}
	statusMsg   string
	tickMsg     time.Time
	watchFailed struct {
		peer string
		err  error
	}
)

const (
	historyPage    = 50
	requestTimeout = 15 * time.Second
	sendTimeout    = 2 * time.Minute
	typingEvery    = 2 * time.Second
	leftPaneWidth  = 28
	// minListWidth: a terminal that leaves the list less than this
	// beside the chat shows one pane at a time (Tab switches).
	minListWidth = 16
	// continuationIndent starts the second and later lines of a
	// message, below its sender.
	continuationIndent = "      "
	minChatWidth       = 20
	inputPlaceholder   = "type a message, /open NAME or /group NAME to chat, /attach PATH to send a file, /help, Tab to switch panes"
	// saveEvery: after messages came in, the sync cursor is saved this
	// much later (one save covers all that came meanwhile), so that a
	// client that is killed does not show them again at its next start.
	saveEvery = 5 * time.Second
	// quitSaveTimeout bounds saving the cursor when the user quits.
	quitSaveTimeout = 5 * time.Second
	helpText        = "commands: /open NAME, /group NAME|ID, /away (what came while away), /attach PATH [caption], /open-media [N], /retry (send again what was not sent), /sessions, /signout N, /quit"
)

var (
	stMine    = lipgloss.NewStyle().Foreground(lipgloss.Color("12"))
	stPeer    = lipgloss.NewStyle().Foreground(lipgloss.Color("10"))
	stDim     = lipgloss.NewStyle().Foreground(lipgloss.Color("8"))
	stErr     = lipgloss.NewStyle().Foreground(lipgloss.Color("9"))
	stHeader  = lipgloss.NewStyle().Bold(true)
	stPane    = lipgloss.NewStyle().Border(lipgloss.RoundedBorder()).BorderForeground(lipgloss.Color("8"))
	stFocused = stPane.BorderForeground(lipgloss.Color("12"))
)

// convItem is a conversation in the left pane.
type convItem struct {
	width    int    // cells of the list's lines (the pane's width less the list's indent)
	peer     string // the conversation's key
	title    string // already safe to print
	group    bool
	unread   int
	presence string
	last     string
}

func (i convItem) FilterValue() string { return i.peer }

// Title is the conversation's line in the list: the peer's presence and
// ID, or "# " and the group's name, and the unread count. The title is
// cut so that the count always shows (the list would cut it with the
// end of a long name).
func (i convItem) Title() string {
	prefix := presenceDot(i.presence) + " "
	if i.group {
		prefix = "" // the title is "# name"
	}
	suffix := ""
	if i.unread > 0 {
		suffix = fmt.Sprintf(" (%d)", i.unread)
	}
	room := i.width - ansi.StringWidth(prefix) - ansi.StringWidth(suffix)
	return prefix + ansi.Truncate(i.title, max(room, 1), "…") + suffix
}
func (i convItem) Description() string { return i.last }

func presenceDot(status string) string {
	switch status {
	case edgechat.StatusOnline:
		return lipgloss.NewStyle().Foreground(lipgloss.Color("10")).Render("●")
	case edgechat.StatusInactive:
		return lipgloss.NewStyle().Foreground(lipgloss.Color("11")).Render("●")
	default:
		return stDim.Render("○")
	}
}

type model struct {
	ctx   context.Context
	cl    chatClient
	st    *state
	now   func() time.Time
	list  list.Model
	vp    viewport.Model
	input textinput.Model

	width, height int
	listWidth     int // the conversation list's pane; 0: one pane at a time (a narrow terminal)
	focusList     bool
	lastTyping    time.Time
	markedRead    map[string]string // peer -> upTo last sent
	watching      map[string]bool
	loadingOlder  bool
	// saveCursor saves the SDK's sync cursor after a catch-up (nil: no
	// local state is kept). saving: a save is scheduled or running;
	// unsaved: messages came in since it began. quitting: saving before
	// the program ends (a second Esc or Ctrl+C quits at once).
	saveCursor      func(context.Context) error
	saving, unsaved bool
	quitting        bool
	groupsLoaded    bool               // the groups list has come at least once
	downloads       string             // directory /open-media saves into
	sessions        []edgechat.Session // the last /sessions list, numbered from 1
}

func newModel(ctx context.Context, cl chatClient) *model {
	in := textinput.New()
	in.Placeholder = inputPlaceholder
	in.Prompt = "> "
	// One character more than a body may have bytes: a longer paste is
	// cut there, still over the limit, and submit refuses it with a word
	// instead of sending what was left.
	in.CharLimit = edgechat.MaxBodyBytes + 1
	in.Focus()
	d := list.NewDefaultDelegate()
	l := list.New(nil, d, leftPaneWidth, 10)
	l.Title = "Conversations"
	l.SetShowHelp(false)
	l.SetFilteringEnabled(false)
	l.SetShowStatusBar(false)
	l.DisableQuitKeybindings()
	m := &model{
		ctx: ctx, cl: cl, st: newState(cl.UserID()), now: time.Now,
		list: l, vp: viewport.New(40, 10), input: in,
		markedRead: map[string]string{}, watching: map[string]bool{}, downloads: ".",
	}
	// A terminal tells its size at once; output that is not a terminal
	// (a pipe, a log) gets 80x24 rather than "loading…" for ever.
	m.width, m.height = 80, 24
	m.layout()
	return m
}

func (m *model) Init() tea.Cmd {
	return tea.Batch(textinput.Blink, m.loadConversations(), m.loadGroups(), tick())
}

func tick() tea.Cmd {
	return tea.Tick(time.Second, func(t time.Time) tea.Msg { return tickMsg(t) })
}

func (m *model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	var cmds []tea.Cmd
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
		m.layout()
	case tea.KeyMsg:
		if cmd, done := m.key(msg); done {
			return m, cmd
		} else if cmd != nil {
			cmds = append(cmds, cmd)
		}
	case incomingMsg:
		cmds = append(cmds, m.onIncoming(edgechat.Message(msg)))
	case typingMsg:
		m.st.setTyping(msg.from, msg.group, msg.stopped, m.now())
	case readMsg:
		m.st.readElsewhere(edgechat.ReadState(msg))
	case presenceMsg:
		m.st.setPresence(msg.uid, msg.status)
	case connMsg:
		m.st.online = msg.up
		if msg.up {
			// Unread counts and groups may have moved while away.
			cmds = append(cmds, m.loadConversations(), m.loadGroups())
		}
	case groupsMsg:
		if msg.err != nil {
			m.st.status = "groups: " + msg.err.Error()
		} else {
			m.st.setGroups(msg.list)
			m.groupsLoaded = true
		}
	case groupsChangedMsg:
		cmds = append(cmds, m.loadGroups())
	case undeliverableMsg:
		key := msg.to
		if msg.group != "" {
			key = groupKey(msg.group)
		}
		m.st.undeliverable(key, msg.id, msg.reason)
	case saveDueMsg:
		cmds = append(cmds, m.save())
	case savedMsg:
		m.saving = false
		if msg.err != nil && !errors.Is(msg.err, context.Canceled) {
			m.st.status = "saving where you were: " + msg.err.Error()
		}
		if m.unsaved {
			cmds = append(cmds, m.scheduleSave())
		}
	case convsMsg:
		if msg.err != nil {
			m.st.status = "conversations: " + msg.err.Error()
		} else {
			m.st.setConversations(msg.list)
			for _, c := range msg.list {
				cmds = append(cmds, m.watch(c.Peer))
			}
		}
	case historyMsg:
		cmds = append(cmds, m.onHistory(msg))
	case sentMsg:
		if msg.err != nil {
			m.st.sendFailed(msg.peer, msg.cid, msg.err)
		} else {
			m.st.sent(msg.peer, msg.msg)
			cmds = append(cmds, m.watch(msg.peer))
		}
	case uploadProgressMsg:
		m.st.uploadProgress(msg.up.peer, msg.up.cid, msg.sent, msg.total)
		cmds = append(cmds, msg.up.next())
	case statusMsg:
		m.st.status = string(msg)
	case sessionsMsg:
		m.onSessions(msg)
	case sessionEndedMsg:
		m.onSessionEnded(msg)
	case watchFailed:
		// Presence becomes visible once we have a conversation; try again
		// after the next message in it.
		m.watching[msg.peer] = false
		if !errors.Is(msg.err, edgechat.ErrForbidden) {
			m.st.status = "presence: " + msg.err.Error()
		}
	case tickMsg:
		cmds = append(cmds, tick()) // re-render so typing notices expire
	}
	m.refresh()
	return m, tea.Batch(cmds...)
}

// key handles a key press; done means the program should stop.
func (m *model) key(k tea.KeyMsg) (tea.Cmd, bool) {
	switch k.Type {
	case tea.KeyCtrlC, tea.KeyEsc:
		return m.quit(), true
	case tea.KeyTab:
		m.focusList = !m.focusList
		if m.focusList {
			m.input.Blur()
		} else {
			return m.input.Focus(), false
		}
		return nil, false
	case tea.KeyCtrlN:
		m.focusList = false
		m.input.SetValue("/open ")
		m.input.CursorEnd()
		return m.input.Focus(), false
	case tea.KeyPgUp:
		if m.vp.AtTop() {
			return m.loadOlder(), false
		}
		m.vp.PageUp()
		return nil, false
	case tea.KeyPgDown:
		m.vp.PageDown()
		return nil, false
	}
	if m.focusList {
		if k.Type == tea.KeyEnter {
			if it, ok := m.list.SelectedItem().(convItem); ok {
				return m.open(it.peer), false
			}
			return nil, false
		}
		var cmd tea.Cmd
		m.list, cmd = m.list.Update(k)
		return cmd, false
	}
	if k.Type == tea.KeyEnter {
		return m.submit(m.input.Value()), false
	}
	var cmds []tea.Cmd
	for _, k := range typedKeys(k) {
		var cmd tea.Cmd
		m.input, cmd = m.input.Update(k)
		cmds = append(cmds, cmd)
	}
	return tea.Batch(append(cmds, m.maybeTyping())...), false
}

// typedKeys splits the characters that came in one read (bubbletea
// hands them over a word at a time) into one key each: the input line
// takes a key whose name a word spells ("up", "left", "home",
// "delete"...) for that key, so a line typed by a text expander or a
// script, or pasted without bracketed paste, lost those words or had
// them move the cursor. A bracketed paste is safe as it is.
func typedKeys(k tea.KeyMsg) []tea.KeyMsg {
	if k.Type != tea.KeyRunes || len(k.Runes) < 2 || k.Paste {
		return []tea.KeyMsg{k}
	}
	keys := make([]tea.KeyMsg, len(k.Runes))
	for i, r := range k.Runes {
		keys[i] = tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{r}, Alt: k.Alt}
	}
	return keys
}

// submit runs the input line: a command or a message to the open chat.
func (m *model) submit(line string) tea.Cmd {
	line = strings.TrimSpace(line)
	if line == "" {
		return nil
	}
	if name, ok := strings.CutPrefix(line, "/open "); ok || line == "/open" {
		if g, isGroup := strings.CutPrefix(strings.TrimSpace(name), groupMark); isGroup {
			return m.openGroup(g) // "/open #team"
		}
		name = strings.ToLower(strings.TrimSpace(name))
		if !edgechat.ValidUserID(name) {
			m.st.status = fmt.Sprintf("%q is not a user name", name)
			return nil
		}
		m.input.Reset()
		return m.open(name)
	}
	if line == "/quit" {
		return m.quit()
	}
	if name, ok := strings.CutPrefix(line, "/group"); ok && (name == "" || name[0] == ' ') {
		return m.openGroup(name)
	}
	if line == "/away" {
		m.input.Reset()
		m.st.open = ""
		m.st.status = ""
		if !m.st.resumed {
			m.st.status = "nothing kept from before this start: the first start shows no away list"
		}
		return nil
	}
	if args, ok := strings.CutPrefix(line, "/attach"); ok && (args == "" || args[0] == ' ') {
		return m.attach(args)
	}
	if args, ok := strings.CutPrefix(line, "/open-media"); ok && (args == "" || args[0] == ' ') {
		return m.openMedia(args)
	}
	if line == "/sessions" {
		return m.listSessions()
	}
	if args, ok := strings.CutPrefix(line, "/signout"); ok && (args == "" || args[0] == ' ') {
		return m.endSession(args)
	}
	if line == "/retry" {
		return m.retry()
	}
	if line == "/help" {
		m.input.Reset()
		m.st.status = helpText
		return nil
	}
	if strings.HasPrefix(line, "/") {
		// Kept on the input line, to be corrected.
		word, _, _ := strings.Cut(line, " ")
		m.st.status = fmt.Sprintf("unknown command %q: %s", safeText(word, false), helpText)
		return nil
	}
	if m.st.open == "" {
		m.st.status = "open a conversation first: /open NAME, /group NAME or Ctrl+N"
		return nil
	}
	if len(line) > edgechat.MaxBodyBytes {
		m.st.status = fmt.Sprintf("the message is over %d bytes: shorten it", edgechat.MaxBodyBytes)
		return nil
	}
	m.input.Reset()
	return m.send(m.st.open, line)
}

// retry sends the open conversation's messages that were not sent again,
// each under its CID: the server answers one it stored after all with
// that copy rather than storing it twice.
func (m *model) retry() tea.Cmd {
	m.input.Reset()
	if m.st.open == "" {
		m.st.status = "open a conversation first: /retry sends its messages that were not sent"
		return nil
	}
	again := m.st.retry(m.st.open)
	if len(again) == 0 {
		m.st.status = "nothing to send again in this conversation"
		return nil
	}
	m.st.status = ""
	cmds := make([]tea.Cmd, len(again))
	for i, e := range again {
		cmds[i] = m.sendAs(m.st.open, e.CID, e.Body)
	}
	m.refresh()
	return tea.Sequence(cmds...)
}

// send shows the message at once and sends it in the background; the
// stored copy replaces it, matched by CID.
func (m *model) send(peer, body string) tea.Cmd {
	cid := edgechat.NewCID()
	m.st.addPending(peer, cid, body, m.now())
	return m.sendAs(peer, cid, body)
}

// sendAs sends a message under cid in the background.
func (m *model) sendAs(peer, cid, body string) tea.Cmd {
	cl, ctx := m.cl, m.ctx
	return func() tea.Msg {
		sctx, cancel := context.WithTimeout(ctx, sendTimeout)
		defer cancel()
		got, err := cl.SendMessage(sctx, addressed(peer, edgechat.Message{Type: "text", Body: body, CID: cid}))
		return sentMsg{peer: peer, cid: cid, msg: got, err: err}
	}
}

// open switches to a conversation: history on first open, presence, and
// read receipt.
func (m *model) open(peer string) tea.Cmd {
	need := m.st.openConv(peer)
	m.focusList = false
	focus := m.input.Focus()
	m.st.status = ""
	cmds := []tea.Cmd{focus, m.watch(peer), m.presenceNow(peer), m.markRead()}
	if need {
		cmds = append(cmds, m.history(peer, ""))
	}
	m.refresh()
	m.vp.GotoBottom()
	return tea.Batch(cmds...)
}

func (m *model) onIncoming(msg edgechat.Message) tea.Cmd {
	atBottom := m.vp.AtBottom()
	peer, markRead := m.st.receive(msg)
	m.refresh()
	if peer == m.st.open && atBottom {
		m.vp.GotoBottom()
	}
	cmds := []tea.Cmd{m.scheduleSave()}
	if m.st.conv(peer) != nil && !m.watching[peer] {
		cmds = append(cmds, m.watch(peer))
	}
	if markRead {
		cmds = append(cmds, m.markRead())
	}
	return tea.Batch(cmds...)
}

func (m *model) onHistory(h historyMsg) tea.Cmd {
	if h.before != "" || h.peer == m.st.open {
		// The older page loadOlder asked for, whichever chat is open
		// now: one answered after a switch must not leave PgUp waiting
		// for ever.
		m.loadingOlder = false
	}
	if h.err != nil {
		m.st.status = "history: " + h.err.Error()
		return nil
	}
	before := m.vp.TotalLineCount()
	m.st.prependHistory(h.peer, h.page, h.hasMore)
	if h.peer != m.st.open {
		return nil
	}
	m.refresh()
	if h.before == "" {
		m.vp.GotoBottom()
		return m.markRead()
	}
	// Keep the line that was at the top where it was.
	m.vp.SetYOffset(m.vp.TotalLineCount() - before)
	return nil
}

func (m *model) loadOlder() tea.Cmd {
	peer := m.st.open
	c := m.st.conv(peer)
	if c == nil || !c.hasMore || m.loadingOlder {
		return nil
	}
	m.loadingOlder = true
	return m.history(peer, m.st.oldestID(peer))
}

func (m *model) history(peer, before string) tea.Cmd {
	cl, ctx := m.cl, m.ctx
	return func() tea.Msg {
		hctx, cancel := context.WithTimeout(ctx, requestTimeout)
		defer cancel()
		var page []edgechat.Message
		var more bool
		var err error
		if gid, ok := groupOf(peer); ok {
			page, more, err = cl.GroupHistory(hctx, gid, before, historyPage)
		} else {
			page, more, err = cl.History(hctx, peer, before, historyPage)
		}
		return historyMsg{peer: peer, before: before, page: page, hasMore: more, err: err}
	}
}

func (m *model) loadConversations() tea.Cmd {
	cl, ctx := m.cl, m.ctx
	return func() tea.Msg {
		cctx, cancel := context.WithTimeout(ctx, requestTimeout)
		defer cancel()
		list, err := cl.Conversations(cctx)
		return convsMsg{list: list, err: err}
	}
}

// markRead sends a read receipt for the open conversation when there is
// something newer than the last one sent.
func (m *model) markRead() tea.Cmd {
	peer := m.st.open
	upTo := m.st.newestFromPeer(peer)
	if peer == "" || upTo == "" || m.markedRead[peer] == upTo {
		return nil
	}
	m.markedRead[peer] = upTo
	cl, ctx := m.cl, m.ctx
	return func() tea.Msg {
		rctx, cancel := context.WithTimeout(ctx, requestTimeout)
		defer cancel()
		var err error
		if gid, ok := groupOf(peer); ok {
			err = cl.MarkGroupRead(rctx, gid, upTo)
		} else {
			err = cl.MarkRead(rctx, peer, upTo)
		}
		if err != nil {
			return statusMsg("read receipt: " + err.Error())
		}
		return nil
	}
}

// watch subscribes to a peer's presence once: the retained presence
// message of the subscription tells its current value. It asks no GET
// /presence: the list's every peer at once took the user's read budget,
// shared by all their devices (see presenceNow).
func (m *model) watch(peer string) tea.Cmd {
	if _, group := groupOf(peer); group || peer == "" || m.watching[peer] {
		return nil
	}
	m.watching[peer] = true
	cl, ctx := m.cl, m.ctx
	return func() tea.Msg {
		wctx, cancel := context.WithTimeout(ctx, requestTimeout)
		defer cancel()
		if err := cl.WatchPresence(wctx, peer); err != nil {
			return watchFailed{peer: peer, err: err}
		}
		return nil
	}
}

// shownPresence is a peer's presence as the screen shows it: none while
// this client is offline ("reconnecting…"), when what it last heard may
// no longer hold and no change would reach it. The last heard is kept:
// it shows again once the connection is back, where changes arrive.
func (m *model) shownPresence(peer string) string {
	if !m.st.online {
		return ""
	}
	return m.st.presence[peer]
}

// presenceNow asks the presence of the open direct chat's peer while
// none has come (one request, for the chat the user looks at).
func (m *model) presenceNow(peer string) tea.Cmd {
	if _, group := groupOf(peer); group || peer == "" || m.st.presence[peer] != "" {
		return nil
	}
	cl, ctx := m.cl, m.ctx
	return func() tea.Msg {
		pctx, cancel := context.WithTimeout(ctx, requestTimeout)
		defer cancel()
		p, err := cl.Presence(pctx, peer)
		if err != nil {
			return nil // the retained presence message will come anyway
		}
		return presenceMsg{uid: peer, status: p.Status}
	}
}

// maybeTyping tells the open conversation's peer that I am typing, at
// most every typingEvery.
func (m *model) maybeTyping() tea.Cmd {
	peer := m.st.open
	v := m.input.Value()
	if _, group := groupOf(peer); group || peer == "" || v == "" || strings.HasPrefix(v, "/") || m.now().Sub(m.lastTyping) < typingEvery {
		return nil
	}
	m.lastTyping = m.now()
	cl, ctx := m.cl, m.ctx
	return func() tea.Msg {
		_ = cl.Typing(ctx, peer) // best effort
		return nil
	}
}

func (m *model) layout() {
	h := max(m.height-3-len(m.statusLines()), 3) // borders, the input line and the status
	// The list gives way to the chat on a narrow terminal, and below
	// minListWidth goes (Tab shows it instead of the chat).
	m.listWidth = min(leftPaneWidth, m.width-minChatWidth-6)
	if m.listWidth < minListWidth {
		m.listWidth = 0
		m.list.SetSize(max(m.width-4, minListWidth), h)
		m.vp.Width = max(m.width-4, minChatWidth)
	} else {
		m.list.SetSize(m.listWidth, h)
		m.vp.Width = max(m.width-m.listWidth-6, minChatWidth)
	}
	m.vp.Height = max(h-1, 1) // header line
	m.input.Width = max(m.width-4, 10)
}

// refresh rebuilds the list items and the chat text from the state.
func (m *model) refresh() {
	// The status may have grown or shrunk a line: the panes give way.
	// A chat shown to its end stays so as lines come in (mine on their
	// way: the pane stood still and they went in below its bottom).
	oldHeight, atBottom := m.vp.Height, m.vp.AtBottom()
	m.layout()
	defer func() {
		if atBottom && (m.vp.Height != oldHeight || m.st.open != "") {
			m.vp.GotoBottom()
		}
	}()
	items := make([]list.Item, 0, len(m.st.convs))
	sel := 0
	for i, c := range m.st.convs {
		lm := c.last
		// The newest line, mine on its way included; not one of mine
		// that was not sent, which stays at the bottom to be sent again.
		for i := len(c.entries) - 1; i >= 0; i-- {
			if c.entries[i].failed == "" {
				lm = c.entries[i].Message
				break
			}
		}
		last := messageText(lm)
		_, group := groupOf(c.peer)
		if group && lm.From != "" {
			last = m.senderName(lm.From) + ": " + last // who said it
		}
		items = append(items, convItem{width: m.list.Width() - 2, peer: c.peer, title: m.st.title(c.peer), group: group, unread: c.unread, presence: m.shownPresence(c.peer), last: oneLine(last, m.list.Width()-6)})
		if c.peer == m.st.open {
			sel = i
		}
	}
	m.list.SetItems(items)
	if !m.focusList {
		m.list.Select(sel)
	}
	m.vp.SetContent(wrapLines(m.renderChat(), m.vp.Width))
}

// wrapLines wraps the lines of s that are wider than width (the chat
// pane, which would otherwise cut them: the end of a long message could
// not be read), indenting the wrapped parts as a body's own lines are.
func wrapLines(s string, width int) string {
	lines := strings.Split(s, "\n")
	out := make([]string, 0, len(lines))
	for _, line := range lines {
		if ansi.StringWidth(line) <= width {
			out = append(out, line)
			continue
		}
		parts := strings.Split(ansi.Wrap(line, max(width-len(continuationIndent), 1), ""), "\n")
		out = append(out, parts[0])
		for _, p := range parts[1:] {
			out = append(out, continuationIndent+p)
		}
	}
	return strings.Join(out, "\n")
}

func oneLine(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if r := []rune(s); len(r) > n {
		return string(r[:max(n-1, 0)]) + "…"
	}
	return s
}

func (m *model) renderChat() string {
	c := m.st.conv(m.st.open)
	if c == nil {
		if m.st.resumed {
			return m.renderAway()
		}
		return stDim.Render("No conversation open. Ctrl+N or /open NAME starts one,") + "\n" + stDim.Render("/group NAME opens a group of yours.")
	}
	var b strings.Builder
	if c.hasMore && c.loaded {
		b.WriteString(stDim.Render("── PgUp for older messages ──") + "\n")
	}
	for _, e := range c.entries {
		b.WriteString(renderEntryAt(e, m.st.me, m.now()) + "\n")
	}
	return b.String()
}

func renderEntry(e entry, me string) string { return renderEntryAt(e, me, time.Now()) }

// stamp is when a message was sent as its line shows it: the time for
// one of today (now's day), with the day for an older one, and the
// year for one of another year.
func stamp(at, now time.Time) string {
	at, now = at.Local(), now.Local()
	switch {
	case at.YearDay() == now.YearDay() && at.Year() == now.Year():
		return at.Format("15:04")
	case at.Year() == now.Year():
		return at.Format("Jan 2 15:04")
	}
	return at.Format("2006-01-02 15:04")
}

// undeliverableText says why another region refused a message for good
// (docs/regions.md, Undeliverable messages).
func undeliverableText(m edgechat.Message) string {
	to := m.To
	if m.Group != "" {
		to = "the group"
	}
	region := "that region"
	if _, r, ok := strings.Cut(m.To, "@"); ok && m.Group == "" {
		region = r
	}
	switch m.Reason {
	case "no_such_user":
		return "no such user in " + region
	case "forbidden":
		return to + " does not accept your messages"
	case "invalid":
		return region + " does not accept this message"
	case "expired":
		return region + " could not be reached for too long"
	case "":
		return region + " refused it"
	}
	return region + " refused it: " + m.Reason
}

// renderEntryAt is a message's line, stamped as seen at now.
func renderEntryAt(e entry, me string, now time.Time) string {
	ts := "--:--"
	if !e.Time.IsZero() {
		ts = stamp(e.Time, now)
	}
	who := stPeer.Render(safeText(e.From, false))
	if e.From == me {
		who = stMine.Render("me")
	}
	// A body's own lines are indented: one starting "12:00 me:" must not
	// pass for a message of mine.
	text := strings.ReplaceAll(messageText(e.Message), "\n", "\n"+continuationIndent)
	line := stDim.Render(ts) + " " + who + ": " + text
	switch {
	case e.failed != "":
		line += " " + stErr.Render("(not sent: "+safeText(e.failed, false)+")")
	case e.Status == "undeliverable":
		line += " " + stErr.Render("(not delivered: "+safeText(undeliverableText(e.Message), false)+")")
	case e.uploading && e.sent < e.total:
		line += " " + stDim.Render(progressBar(e.sent, e.total, progressWidth))
	case e.uploading:
		line += " " + stDim.Render("processing…")
	case e.pending:
		line += " " + stDim.Render("…")
	}
	return line
}

func (m *model) View() string {
	if m.width == 0 {
		return "loading…"
	}
	left, right := stPane, stPane
	if m.focusList {
		left = stFocused
	} else {
		right = stFocused
	}
	header := "edgechat — " + m.st.me
	if gid, group := groupOf(m.st.open); group {
		header = stHeader.Render(m.st.title(m.st.open))
		if g, ok := m.st.groups[gid]; ok && g.members > 0 {
			header += " " + stDim.Render(fmt.Sprintf("· %d members", g.members))
		} else if !ok && m.st.formerGroup(gid) {
			header += " " + stErr.Render("· you are no longer a member")
		}
		if who := m.st.typists(m.st.open, m.now()); len(who) > 0 {
			if len(who) > 3 {
				who = append(who[:3], fmt.Sprintf("%d more", len(who)-3))
			}
			header += " " + stDim.Render(safeText(strings.Join(who, ", "), false)+" typing…")
		}
	} else if m.st.open != "" {
		header = presenceDot(m.shownPresence(m.st.open)) + " " + stHeader.Render(safeText(m.st.open, false))
		if s := m.shownPresence(m.st.open); s != "" {
			header += " " + stDim.Render(safeText(s, false))
		}
		if m.st.isTyping(m.st.open, m.now()) {
			header += " " + stDim.Render("typing…")
		}
	}
	// One line: a wrapped header would make the screen taller than the
	// terminal, which then loses its top line.
	header = ansi.Truncate(header, m.vp.Width, "…")
	chat := header + "\n" + m.vp.View()
	var panes string
	switch {
	case m.listWidth > 0:
		panes = lipgloss.JoinHorizontal(lipgloss.Top, left.Width(m.listWidth).Render(m.list.View()), right.Width(m.vp.Width).Render(chat))
	case m.focusList: // one pane at a time: the list while Tab has it
		panes = left.Width(m.list.Width()).Render(m.list.View())
	default:
		panes = right.Width(m.vp.Width).Render(chat)
	}
	return panes + "\n" + m.input.View() + "\n" + stErr.Render(strings.Join(m.statusLines(), "\n"))
}

// maxStatusLines bounds the status at the bottom of the screen (the help,
// a /sessions list, an error), wrapped to the terminal's width: the
// renderer would cut a longer line.
const maxStatusLines = 4

// statusLines is the status, safe to print, wrapped to the terminal's
// width (at most maxStatusLines, the last cut with "…").
func (m *model) statusLines() []string {
	status := safeText(m.st.status, false) // errors carry servers' messages, sessions their agents
	if !m.st.online {
		status = strings.TrimSpace("reconnecting… " + status)
	}
	w := max(m.width, minChatWidth)
	lines := strings.Split(ansi.Wrap(status, w, ""), "\n")
	if len(lines) > maxStatusLines {
		lines = lines[:maxStatusLines]
		lines[maxStatusLines-1] = ansi.Truncate(lines[maxStatusLines-1], w-1, "") + "…"
	}
	return lines
}

// quit ends the program, first saving the sync cursor (after a catch-up)
// so that the next start shows only what comes after what was shown
// here. Offline, the last saved cursor stays: the next start may show
// again what came since, never less.
func (m *model) quit() tea.Cmd {
	if m.saveCursor == nil || m.quitting || !m.st.online {
		return tea.Quit
	}
	m.quitting = true
	m.st.status = "saving where you were… (Esc again quits at once)"
	save, ctx := m.saveCursor, m.ctx
	return func() tea.Msg {
		sctx, cancel := context.WithTimeout(ctx, quitSaveTimeout)
		defer cancel()
		_ = save(sctx)
		return tea.QuitMsg{}
	}
}

// scheduleSave saves the sync cursor saveEvery from now, unless a save
// is already scheduled or running (the one after it covers this call).
func (m *model) scheduleSave() tea.Cmd {
	m.unsaved = true
	if m.saveCursor == nil || m.saving || m.quitting {
		return nil
	}
	m.saving = true
	return tea.Tick(saveEvery, func(time.Time) tea.Msg { return saveDueMsg{} })
}

// save saves the sync cursor in the background.
func (m *model) save() tea.Cmd {
	m.unsaved = false
	save, ctx := m.saveCursor, m.ctx
	if save == nil {
		return nil
	}
	return func() tea.Msg {
		sctx, cancel := context.WithTimeout(ctx, requestTimeout)
		defer cancel()
		return savedMsg{err: save(sctx)}
	}
}

func (m *model) loadGroups() tea.Cmd {
	cl, ctx := m.cl, m.ctx
	return func() tea.Msg {
		gctx, cancel := context.WithTimeout(ctx, requestTimeout)
		defer cancel()
		list, err := cl.Groups(gctx)
		return groupsMsg{list: list, err: err}
	}
}

// openGroup runs "/group NAME": opens one of my groups, by name
// (case-insensitive) or ID.
func (m *model) openGroup(name string) tea.Cmd {
	name = strings.TrimSpace(name)
	if name == "" {
		m.st.status = "usage: /group NAME (one of your groups, by name or ID)"
		return nil
	}
	switch gids := m.st.findGroup(name); {
	case len(gids) == 1:
		m.input.Reset()
		return m.open(groupKey(gids[0]))
	case len(gids) > 1:
		m.st.status = fmt.Sprintf("%d of your groups are named %q: /group ID with one of %s", len(gids), name, strings.Join(gids, ", "))
	case !m.groupsLoaded:
		m.st.status = "your groups are still loading: try again in a moment"
	default:
		m.st.status = fmt.Sprintf("you are in no group named %q", name)
	}
	return nil
}

// senderName is how the author of a message is shown.
func (m *model) senderName(uid string) string {
	if uid == m.st.me {
		return "me"
	}
	return safeText(uid, false)
}

// renderAway is the chat pane while no conversation is open after a
// start from a saved cursor: what came in while the client was not
// running, oldest first, each message once.
func (m *model) renderAway() string {
	hint := stDim.Render("Tab then Enter, /open NAME or /group NAME opens a chat;") + "\n" + stDim.Render("/away comes back here.")
	if len(m.st.away) == 0 {
		return stDim.Render("Nothing new while you were away.") + "\n" + hint
	}
	var b strings.Builder
	noun := "messages"
	if len(m.st.away) == 1 {
		noun = "message"
	}
	b.WriteString(stHeader.Render(fmt.Sprintf("While you were away: %d new %s", len(m.st.away), noun)) + "\n")
	for _, msg := range m.st.away {
		line := renderEntryAt(entry{Message: msg}, m.st.me, m.now())
		switch key := keyOf(msg, m.st.me); {
		case msg.Group != "":
			line = stDim.Render(m.st.title(key)) + " " + line
		case msg.From == m.st.me:
			line = stDim.Render("→ "+safeText(key, false)) + " " + line
		}
		b.WriteString(line + "\n")
	}
	b.WriteString(hint)
	return b.String()
}
