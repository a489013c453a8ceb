// Package cli is edgechat's terminal chat client: conversations with
// unread counts and presence on the left, the open chat on the right
// (PgUp pages back through history), an input line at the bottom
// (/attach sends a file with a progress bar, /open-media saves one). It is
// a bubbletea program over the Go SDK; the state changes live in plain
// methods (state.go) that are tested without a terminal.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

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
}

// ErrConfig is returned for a configuration that cannot work.
var ErrConfig = errors.New("cli: bad configuration")

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
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	switch {
	case cfg.OIDC != "":
		tok, err := OIDCLogin{Server: httpURL, Provider: cfg.OIDC, SessionFile: cfg.SessionFile, Device: cfg.Device, Out: out}.Tokens(ctx)
		if err != nil {
			return err
		}
		if user != "" && user != tok.UserID {
			return fmt.Errorf("%w: the provider signed in %q, not %q", ErrConfig, tok.UserID, user)
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
		opts.Token = cfg.Token
	case user == "":
		return fmt.Errorf("%w: --user is required without --token", ErrConfig)
	case cfg.Password == nil:
		return fmt.Errorf("%w: no token and no way to ask for a password", ErrConfig)
	default:
		pw, err := cfg.Password()
		if err != nil {
			return fmt.Errorf("cli: reading password: %w", err)
		}
		tok, err := edgechat.LoginDevice(ctx, httpURL, user, pw, cfg.Device)
		if err != nil {
			return fmt.Errorf("cli: login: %w", err)
		}
		opts.TokenSource = edgechat.RefreshingTokenSource(httpURL, tok, nil)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The SDK's callbacks run before the program starts; they wait in
	// p.Send until it does (they run on the SDK's own goroutine, never
	// on the network one).
	var p *tea.Program
	send := func(msg tea.Msg) {
		if p != nil {
			p.Send(msg)
		}
	}
	ready := make(chan struct{})
	forward := func(msg tea.Msg) {
		select {
		case <-ready:
			send(msg)
		case <-ctx.Done():
		}
	}
	opts.OnMessage = func(m edgechat.Message) { forward(incomingMsg(m)) }
	opts.OnTyping = func(from string) { forward(typingMsg{from: from}) }
	opts.OnPresence = func(uid string, pr edgechat.Presence) { forward(presenceMsg{uid: uid, status: pr.Status}) }
	opts.OnConnectionChange = func(up bool) { forward(connMsg{up: up}) }
	opts.OnSignedOut = func(error) {
		forward(statusMsg("signed out: this session was ended, the password changed or the account suspended; /quit and sign in again"))
	}

	cl, err := edgechat.Dial(ctx, opts)
	if err != nil {
		return fmt.Errorf("cli: connect to %s: %w", cfg.Server, err)
	}
	defer cl.Close()

	m := newModel(ctx, cl)
	m.st.online = true
	m.downloads = downloadsDir(cfg.Downloads, os.Getenv(downloadsEnv))
	p = tea.NewProgram(m, tea.WithContext(ctx), tea.WithInput(in), tea.WithOutput(out), tea.WithAltScreen())
	close(ready)
	_, err = p.Run()
	switch {
	case err == nil, errors.Is(err, tea.ErrInterrupted):
		return nil
	case errors.Is(err, tea.ErrProgramKilled) && !errors.Is(err, tea.ErrProgramPanic):
		return nil // ctx ended: the caller is shutting down
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
