package cli

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	edgechat "github.com/edgechat/edgechat/clients/go"
)

// /sessions lists where the user is signed in, numbered; /signout N ends
// session N of that list (a lost phone), as the web client's Sessions
// panel does (GET /auth/sessions, DELETE /auth/sessions/{id}).

type sessionsMsg struct {
	list []edgechat.Session
	err  error
}

type sessionEndedMsg struct {
	label string
	err   error
}

func (m *model) listSessions() tea.Cmd {
	m.input.Reset()
	m.st.status = "listing sessions…"
	cl, ctx := m.cl, m.ctx
	return func() tea.Msg {
		sctx, cancel := context.WithTimeout(ctx, requestTimeout)
		defer cancel()
		list, err := cl.Sessions(sctx)
		return sessionsMsg{list: list, err: err}
	}
}

// endSession ends session N of the last /sessions list.
func (m *model) endSession(args string) tea.Cmd {
	n, err := strconv.Atoi(strings.TrimSpace(args))
	if err != nil || n < 1 {
		m.st.status = "usage: /signout N (N from /sessions)"
		return nil
	}
	if n > len(m.sessions) {
		m.st.status = fmt.Sprintf("no session #%d: /sessions lists them", n)
		return nil
	}
	s := m.sessions[n-1]
	if s.Current {
		m.st.status = "that is this session: /quit leaves it (and ends it after a password sign-in)"
		return nil
	}
	m.input.Reset()
	label := sessionLabel(s)
	cl, ctx := m.cl, m.ctx
	return func() tea.Msg {
		sctx, cancel := context.WithTimeout(ctx, requestTimeout)
		defer cancel()
		return sessionEndedMsg{label: label, err: cl.EndSession(sctx, s.ID)}
	}
}

func (m *model) onSessions(msg sessionsMsg) {
	if msg.err != nil {
		m.st.status = "sessions: " + msg.err.Error()
		return
	}
	m.sessions = msg.list
	m.st.status = formatSessions(msg.list, m.now())
}

func (m *model) onSessionEnded(msg sessionEndedMsg) {
	if msg.err != nil {
		m.st.status = "signing " + msg.label + " out: " + msg.err.Error()
		return
	}
	m.sessions = nil // the numbers changed
	m.st.status = msg.label + " is signed out"
}

// sessionLabel names a session as its user would: the device it named
// at sign-in, else its User-Agent, else its ID.
func sessionLabel(s edgechat.Session) string {
	switch {
	case s.Device != "":
		return s.Device
	case s.Agent != "":
		if r := []rune(s.Agent); len(r) > 24 {
			return string(r[:24]) + "…"
		}
		return s.Agent
	}
	return "session " + s.ID
}

// formatSessions is the status line of a /sessions answer.
func formatSessions(list []edgechat.Session, now time.Time) string {
	if len(list) == 0 {
		return "no sessions"
	}
	parts := make([]string, len(list))
	for i, s := range list {
		p := fmt.Sprintf("%d %s", i+1, sessionLabel(s))
		if s.Current {
			p += " (this one)"
		} else {
			p += " · " + ago(now.Sub(s.LastUsedAt))
		}
		parts[i] = p
	}
	return "sessions: " + strings.Join(parts, ", ") + " — /signout N ends one"
}

// ago is a rough age: "just now", "5 min ago", "3 h ago", "2 d ago".
func ago(d time.Duration) string {
	switch {
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return fmt.Sprintf("%d min ago", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h ago", int(d/time.Hour))
	}
	return fmt.Sprintf("%d d ago", int(d/(24*time.Hour)))
}
