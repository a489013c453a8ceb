package admin

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/wire"
)

func newTestService(t *testing.T, now *time.Time, msgs *uint64, granted map[string]bool) *Service {
	t.Helper()
	s, err := New(Deps{
		Accounts:    func() (int, error) { return 7, nil },
		Groups:      func() (int, int, error) { return 2, 1, nil },
		Node:        "n1",
		Connections: func() int { return 5 },
		Messages:    func() uint64 { return *msgs },
		SetAdmin: func(_ context.Context, uid string, admin bool) error {
			if uid == "ghost" {
				return wire.ErrNotFound
			}
			granted[uid] = admin
			return nil
		},
		Now: func() time.Time { return *now },
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func route(s *Service, method, pattern string) http.HandlerFunc {
	for _, r := range s.Routes() {
		if r.Method == method && r.Pattern == pattern {
			if !r.Admin {
				panic("admin route without Admin flag: " + pattern)
			}
			return r.Handler
		}
	}
	panic("no route " + pattern)
}

func TestStatsCountsAndMessageRate(t *testing.T) {
	now := time.Unix(1000, 0)
	msgs := uint64(100)
	s := newTestService(t, &now, &msgs, map[string]bool{})
	now = now.Add(2 * time.Second)
	msgs = 160
	rec := httptest.NewRecorder()
	route(s, "GET", "/admin/stats")(rec, httptest.NewRequest("GET", "/admin/stats", nil))
	var st Stats
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	if st.Users != 7 || st.Groups != 2 || st.MirroredGroups != 1 || st.Node != "n1" || !st.Since.Equal(time.Unix(1000, 0)) ||
		st.Connections != 5 || st.MessagesStored != 160 || st.MessagesPerSec != 30 {
		t.Fatalf("stats %+v", st)
	}
}

func TestGrantAdmin(t *testing.T) {
	now := time.Unix(0, 0)
	msgs := uint64(0)
	granted := map[string]bool{}
	s := newTestService(t, &now, &msgs, granted)
	h := route(s, "PUT", "/admin/users/{uid}/admin")
	do := func(uid, body string) int {
		req := httptest.NewRequest("PUT", "/admin/users/"+uid+"/admin", strings.NewReader(body))
		req.SetPathValue("uid", uid)
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h(rec, req)
		return rec.Code
	}
	if c := do("bob", `{"admin":true}`); c != 200 || !granted["bob"] {
		t.Fatalf("grant: %d %v", c, granted)
	}
	for body, want := range map[string]int{`{}`: 400, `{"admin":"yes"}`: 400, `{"admin":true,"x":1}`: 400, `nope`: 400} {
		if c := do("carol", body); c != want {
			t.Errorf("body %s: %d want %d", body, c, want)
		}
	}
	if _, ok := granted["carol"]; ok {
		t.Fatal("refused request changed state")
	}
	if c := do("ghost", `{"admin":true}`); c != 404 {
		t.Fatalf("unknown user: %d", c)
	}
	if c := do("Bad/Name", `{"admin":true}`); c != 400 {
		t.Fatalf("bad uid: %d", c)
	}
	if _, err := New(Deps{}); !errors.Is(err, ErrMissingDep) {
		t.Fatal("New without deps accepted")
	}
}
