package cli

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	edgechat "github.com/edgechat/edgechat/clients/go"
)

// The fake's sessions (see fakeClient in state_test.go).
func (f *fakeClient) Sessions(context.Context) ([]edgechat.Session, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sessionsErr != nil {
		return nil, f.sessionsErr
	}
	return append([]edgechat.Session(nil), f.sessions...), nil
}

func (f *fakeClient) EndSession(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, s := range f.sessions {
		if s.ID == id {
			f.ended = append(f.ended, id)
			f.sessions = append(f.sessions[:i], f.sessions[i+1:]...)
			return nil
		}
	}
	return errors.New("edgechat: end session: not_found")
}

func TestModelSessionsAndSignOut(t *testing.T) {
	now := t0
	fc := &fakeClient{sessions: []edgechat.Session{
		{ID: "s-this", Device: "laptop", LastUsedAt: now, Current: true},
		{ID: "s-phone", Device: "phone", LastUsedAt: now.Add(-3 * time.Hour)},
		{ID: "s-web", Agent: "Mozilla/5.0 (X11; Linux x86_64) Chrome", LastUsedAt: now.Add(-50 * time.Hour)},
	}}
	m := testModel(fc, &now)

	typeLine(m, "/signout 2")
	if !strings.Contains(m.st.status, "no session #2") || len(fc.ended) != 0 {
		t.Fatalf("/signout before /sessions: status %q, ended %v", m.st.status, fc.ended)
	}
	m.input.Reset()
	typeLine(m, "/sessions")
	want := "sessions: 1 laptop (this one), 2 phone · 3 h ago, 3 Mozilla/5.0 (X11; Linux … · 2 d ago — /signout N ends one"
	if m.st.status != want {
		t.Fatalf("/sessions status\n got %q\nwant %q", m.st.status, want)
	}
	if v := m.View(); !strings.Contains(v, "2 phone · 3 h ago") {
		t.Fatalf("the view lacks the list:\n%s", v)
	}
	for _, bad := range []struct{ line, says string }{
		{"/signout 1", "that is this session"},
		{"/signout 4", "no session #4"},
		{"/signout x", "usage"},
		{"/signout", "usage"},
	} {
		typeLine(m, bad.line)
		if !strings.Contains(m.st.status, bad.says) || len(fc.ended) != 0 {
			t.Fatalf("%s: status %q, ended %v", bad.line, m.st.status, fc.ended)
		}
		m.input.Reset()
	}
	typeLine(m, "/signout 2")
	if len(fc.ended) != 1 || fc.ended[0] != "s-phone" || m.st.status != "phone is signed out" {
		t.Fatalf("/signout 2: ended %v, status %q", fc.ended, m.st.status)
	}
	// The numbers changed: a second /signout 2 asks for a new list
	// rather than end whatever is second now.
	typeLine(m, "/signout 2")
	if len(fc.ended) != 1 || !strings.Contains(m.st.status, "no session #2") {
		t.Fatalf("/signout 2 again: ended %v, status %q", fc.ended, m.st.status)
	}
	m.input.Reset()
	fc.sessionsErr = errors.New("edgechat: sessions: unavailable")
	typeLine(m, "/sessions")
	if m.st.status != "sessions: edgechat: sessions: unavailable" {
		t.Fatalf("a failed list: status %q", m.st.status)
	}
}
