// Package cli is edgechat's terminal chat client: direct conversations
// and groups with unread counts (and presence for direct ones) on the
// left, the open chat on the right (PgUp pages back through history),
// an input line at the bottom (/open NAME and /group NAME open chats,
// /attach sends a file with a progress bar, /open-media saves one). It
// keeps its sync cursor in its local state (localstate.go): a start
// shows what came in while it was not running, once. It is a bubbletea
// program over the Go SDK; the state changes live in plain methods
// (state.go) that are tested without a terminal.
package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	edgechat "github.com/edgechat/edgechat/clients/go"
)

// Config says where and who to chat as.
type Config struct {
	// Server is the node's HTTP base URL (http:// or https://); the
	// WebSocket URL is derived from it (Server + "/mqtt").
	Server string
	// User is the user name; it must match the token's user when Token is set.
	User string
	// Token is an access token; when empty, Password is asked for.
	Token string
	// Password prompts for the password (main supplies one reading the
	// terminal without echo).
	Password func() (string, error)
	// Logger receives the SDK's log (nil: discarded, so that it does not
	// draw over the screen).
	Logger *slog.Logger
	// OIDC, when set, signs in through the server's identity provider of
	// that name (OIDCLogin: the kept session, else the device flow)
	// instead of a password; SessionFile keeps its refresh token.
	OIDC        string
	SessionFile string
	// Device names this device: the MQTT client ID's device part and, at
	// a sign-in (password or device flow), the session's name in the session list (empty:
	// the SDK's go- and random hex, and an unnamed session).
	Device string
	// Downloads is where /open-media saves files; empty means
	// $EDGECHAT_DOWNLOADS, then the current directory.
	Downloads string
	// StateDir is where the client keeps its local state (DefaultStateDir
	// for edgechat chat): the sync cursor per user, server and device,
	// so that a start shows what came in while the client was not
	// running, once. Empty: nothing is kept, and a start shows only the
	// last minute's messages live (history and unread counts as always).
	StateDir string
}

// ErrConfig is returned for a configuration that cannot work.
var ErrConfig = errors.New("cli: bad configuration")

// ErrSessionInUse is returned when another run of the client is signed
// in with the kept session (--oidc): two runs on one session would sign
// each other out.
var ErrSessionInUse = errors.New("cli: another edgechat chat is signed in with this session; quit it first")

// ErrDeviceInUse is returned when another run of the client is signed
// in as the same user on the same server with the same --device: both
// would be one MQTT client ID, each connection taking the other's over.
var ErrDeviceInUse = errors.New("cli: another edgechat chat runs as this user on this server with this --device; quit it first, or give this one another --device")

// Run logs in, connects and runs the chat screen on in/out until the user
// quits or ctx ends.
func Run(ctx context.Context, cfg Config, in io.Reader, out io.Writer) error {
	if cfg.Server == "" {
		return fmt.Errorf("%w: --server is required", ErrConfig)
	}
	ws, err := edgechat.WebSocketURL(cfg.Server)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	user := strings.ToLower(strings.TrimSpace(cfg.User))
	httpURL := strings.TrimRight(cfg.Server, "/")

	opts := edgechat.Options{URLs: []string{ws}, HTTPURL: httpURL, Logger: cfg.Logger, Device: cfg.Device}
	uid := user // whose state is kept
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	// One run at a time per user, server and --device (beside its state
	// file): two would be one MQTT client ID, each connection taking
	// the other's over, one of them possibly left receiving nothing. It
	// is taken before a password sign-in, which a refused run would
	// leave behind as a session.
	var releaseDevice func()
	// endSignIn ends the session a password sign-in made (nil
	// otherwise), for a run that never connects.
	var endSignIn func()
	defer func() {
		if releaseDevice != nil {
			releaseDevice()
		}
	}()
	lockThisDevice := func(uid string) error {
		if cfg.StateDir == "" || cfg.Device == "" || uid == "" {
			return nil
		}
		path, err := stateFile(cfg.StateDir, httpURL, uid, cfg.Device)
		if err != nil {
			return err
		}
		releaseDevice, err = lockDevice(path)
		return err
	}
	switch {
	case cfg.OIDC != "":
		if cfg.SessionFile != "" {
			release, err := lockSession(cfg.SessionFile)
			if err != nil {
				return err
			}
			defer release()
		}
		tok, err := OIDCLogin{Server: httpURL, Provider: cfg.OIDC, SessionFile: cfg.SessionFile, Device: cfg.Device, Out: out}.Tokens(ctx)
		if err != nil {
			return err
		}
		if user != "" && user != tok.UserID {
			return fmt.Errorf("%w: the provider signed in %q, not %q", ErrConfig, tok.UserID, user)
		}
		uid = tok.UserID
		if err := lockThisDevice(uid); err != nil {
			return err
		}
		path := cfg.SessionFile
		opts.TokenSource = edgechat.RefreshingTokenSource(httpURL, tok, func(t edgechat.Tokens) {
			_ = SaveSession(path, t) // refresh tokens rotate: keep the newest
		})
	case cfg.Token != "":
		sub, err := edgechat.TokenSubject(cfg.Token)
		if err != nil {
			return err
		}
		if user != "" && user != sub {
			return fmt.Errorf("%w: the token belongs to %q, not %q", ErrConfig, sub, user)
		}
		uid = sub
		if err := lockThisDevice(uid); err != nil {
			return err
		}
		opts.Token = cfg.Token
	case user == "":
		return fmt.Errorf("%w: --user is required without --token", ErrConfig)
	case cfg.Password == nil:
		return fmt.Errorf("%w: no token and no way to ask for a password", ErrConfig)
	default:
		if err := lockThisDevice(user); err != nil {
			return err
		}
		pw, err := cfg.Password()
		if err != nil {
			return fmt.Errorf("cli: reading password: %w", err)
		}
		tok, err := edgechat.LoginDevice(ctx, httpURL, user, pw, cfg.Device)
		if err != nil {
			return fmt.Errorf("cli: login: %w", err)
		}
		// The newest tokens (refresh tokens rotate), to end the sign-in
		// should the client never connect.
		var latestMu sync.Mutex
		latest := tok
		opts.TokenSource = edgechat.RefreshingTokenSource(httpURL, tok, func(t edgechat.Tokens) {
			latestMu.Lock()
			latest = t
			latestMu.Unlock()
		})
		endSignIn = func() {
			latestMu.Lock()
			rt := latest.RefreshToken
			latestMu.Unlock()
			logout(context.WithoutCancel(ctx), httpURL, rt)
		}
		if tok.UserID != "" {
			uid = tok.UserID
		}
	}

	var store *cursorStore
	status := ""
	if cfg.StateDir != "" && uid != "" {
		path, err := stateFile(cfg.StateDir, httpURL, uid, cfg.Device)
		if err != nil {
			return err
		}
		store = &cursorStore{path: path, user: uid, server: httpURL}
		if opts.Cursor, err = store.load(); err != nil {
			status = err.Error() + " (starting afresh)"
		}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// What the SDK's callbacks report before the screen is up is kept
	// (early) and handed to the model before it starts; after that it
	// waits in p.Send until the program runs (the callbacks run on the
	// SDK's own goroutine, never on the network one).
	var (
		p       *tea.Program
		earlyMu sync.Mutex
		early   []tea.Msg
		started bool
	)
	ready := make(chan struct{})
	deliver := func(msg tea.Msg) {
		earlyMu.Lock()
		if !started {
			early = append(early, msg)
			earlyMu.Unlock()
			return
		}
		earlyMu.Unlock()
		select {
		case <-ready:
			p.Send(msg)
		case <-ctx.Done():
		}
	}
	opts.OnMessage = func(m edgechat.Message) { deliver(incomingMsg(m)) }
	// Typing to me and in my groups, started and stopped (with
	// OnTypingNotice set the SDK also follows the groups' typing).
	opts.OnTypingNotice = func(tn edgechat.TypingNotice) {
		deliver(typingMsg{from: tn.From, group: tn.Group, stopped: tn.State == edgechat.TypingStopped})
	}
	// A read of mine on another device clears what it read here.
	opts.OnRead = func(rs edgechat.ReadState) { deliver(readMsg(rs)) }
	opts.OnPresence = func(uid string, pr edgechat.Presence) { deliver(presenceMsg{uid: uid, status: pr.Status}) }
	opts.OnConnectionChange = func(up bool) { deliver(connMsg{up: up}) }
	opts.OnSignedOut = func(error) {
		deliver(statusMsg("signed out: this session was ended, the password changed or the account suspended; /quit and sign in again"))
	}
	opts.OnEvent = func(raw []byte) {
		if msg := eventMsg(raw); msg != nil {
			deliver(msg)
		}
	}

	cl, err := dial(ctx, cfg.Server, opts, out)
	if err != nil && opts.Cursor != "" && errors.Is(err, edgechat.ErrBadOptions) {
		// The server refuses the saved cursor (another server's, or a
		// damaged file): start afresh rather than not at all.
		status = "the saved sync cursor was refused; starting afresh"
		opts.Cursor = ""
		earlyMu.Lock()
		early = nil
		earlyMu.Unlock()
		cl, err = dial(ctx, cfg.Server, opts, out)
	}
	if err != nil {
		if endSignIn != nil {
			endSignIn() // nothing keeps its tokens: it would stay in the session list
		}
		return fmt.Errorf("cli: connect to %s: %w", cfg.Server, err)
	}
	defer cl.Close()

	var save func(context.Context) error
	if store != nil {
		save = func(ctx context.Context) error { return store.save(ctx, cl) }
		// Catch up, so that everything the first sync found is in early,
		// and save the cursor past it: it is shown below, and a next
		// start shows only what comes after.
		sctx, scancel := context.WithTimeout(ctx, requestTimeout)
		if err := save(sctx); err != nil && ctx.Err() == nil {
			status = "saving where you were: " + err.Error()
		}
		scancel()
	}
	earlyMu.Lock()
	got := early
	early, started = nil, true
	earlyMu.Unlock()

	m := newModel(ctx, cl)
	m.st.online = cl.Connected()
	m.saveCursor = save
	var arrived []edgechat.Message
	var events []tea.Msg
	for _, msg := range got {
		if im, ok := msg.(incomingMsg); ok {
			arrived = append(arrived, edgechat.Message(im))
		} else {
			events = append(events, msg)
		}
	}
	m.st.arrive(arrived, opts.Cursor != "")
	for _, msg := range events {
		m.Update(msg) // what they would start is started by Init anyway
	}
	if status != "" {
		m.st.status = status
		m.layout() // a status of more than a line takes room from the panes
	}
	m.downloads = downloadsDir(cfg.Downloads, os.Getenv(downloadsEnv))
	p = tea.NewProgram(m, tea.WithContext(ctx), tea.WithInput(in), tea.WithOutput(out), tea.WithAltScreen())
	close(ready)
	_, err = p.Run()
	// Signed in with the password for this run: nothing keeps the
	// session's tokens, so leaving ends it, or every start would leave
	// one more in the session list.
	passwordSignIn := cfg.OIDC == "" && cfg.Token == ""
	switch {
	case err == nil, errors.Is(err, tea.ErrInterrupted):
		if passwordSignIn {
			endThisSession(ctx, cl)
		}
		return nil
	case errors.Is(err, tea.ErrProgramKilled) && !errors.Is(err, tea.ErrProgramPanic):
		// ctx ended: the caller is shutting down (edgechat chat: a
		// SIGTERM, or a SIGHUP as its terminal closed). The session
		// ends all the same, within endThisSession's few seconds.
		if passwordSignIn {
			endThisSession(context.WithoutCancel(ctx), cl)
		}
		return nil
	}
	return fmt.Errorf("cli: %w", err)
}

// downloadsDir picks where /open-media saves: the configured directory,
// else the environment's, else the current one.
func downloadsDir(configured, env string) string {
	for _, d := range []string{configured, env} {
		if d = strings.TrimSpace(d); d != "" {
			return d
		}
	}
	return "."
}

// logout ends the session of a refresh token (POST /auth/logout; best
// effort, a few seconds at most), for a sign-in whose client never
// connected.
func logout(ctx context.Context, httpURL, refreshToken string) {
	if refreshToken == "" {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	body, _ := json.Marshal(map[string]string{"refreshToken": refreshToken})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, httpURL+"/auth/logout", bytes.NewReader(body))
	if err != nil {
		return
	}
	req.Header.Set("Content-Type", "application/json")
	if resp, err := http.DefaultClient.Do(req); err == nil {
		_ = resp.Body.Close()
	}
}

// endThisSession signs the client's own session out (best effort, a few
// seconds at most: the user is leaving).
func endThisSession(ctx context.Context, cl *edgechat.Client) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	list, err := cl.Sessions(ctx)
	if err != nil {
		return
	}
	for _, s := range list {
		if s.Current {
			_ = cl.EndSession(ctx, s.ID)
			return
		}
	}
}

// connectingNote is how long dial waits for the first connection before
// it says that it waits (a variable for the tests).
var connectingNote = time.Second

// dial connects as edgechat.Dial does. The screen starts once it has:
// until then the terminal showed nothing at all, for as long as the
// server did not answer (a wrong --server, a node that is down), so it
// says on out that it waits, once connectingNote has gone by.
func dial(ctx context.Context, server string, opts edgechat.Options, out io.Writer) (*edgechat.Client, error) {
	var mu sync.Mutex
	done := false
	t := time.AfterFunc(connectingNote, func() {
		mu.Lock()
		defer mu.Unlock()
		if !done {
			fmt.Fprintf(out, "connecting to %s... (no answer yet; Ctrl+C gives up)\r\n", server)
		}
	})
	defer func() {
		t.Stop()
		mu.Lock()
		done = true
		mu.Unlock()
	}()
	return edgechat.Dial(ctx, opts)
}

// eventMsg is what the screen takes of an event of user/{me}/events, or
// nil.
func eventMsg(raw []byte) tea.Msg {
	var ev struct {
		Type   string `json:"type"`
		ID     string `json:"id"`
		To     string `json:"to"`
		Group  string `json:"group"`
		Reason string `json:"reason"`
	}
	if json.Unmarshal(raw, &ev) != nil {
		return nil
	}
	switch {
	case strings.HasPrefix(ev.Type, "group."):
		return groupsChangedMsg{} // a group of mine was created or changed: list them again
	case ev.Type == "undeliverable" && ev.ID != "" && (ev.To != "" || ev.Group != ""):
		// A message of mine another region refused for good (regions.md).
		return undeliverableMsg{id: ev.ID, to: ev.To, group: ev.Group, reason: ev.Reason}
	}
	return nil
}
