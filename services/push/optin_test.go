package push

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
)

func TestValidGroup(t *testing.T) {
	for gid, ok := range map[string]bool{"g": true, "k3v9x0q2m7a1b4c8": true, "Team_1-a": true, strings.Repeat("g", 64): true,
		"": false, strings.Repeat("g", 65): false, "a/b": false, "g.1": false, "g 1": false, "group:g": false, "g+": false} {
		if err := ValidGroup(gid); (err == nil) != ok || (err != nil && !errors.Is(err, ErrInvalidGroup)) {
			t.Errorf("ValidGroup(%q) = %v", gid, err)
		}
	}
}

func TestOptIns(t *testing.T) {
	e := newEnv(t)
	f := e.prop.NewFollower(t)
	if _, err := New(Deps{DB: f.DB(), Proposer: e.prop, FSM: f}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	first := e.clock.Now()
	for _, in := range [][2]string{{"carol", "team"}, {"alice", "team"}, {"bob", "team"}, {"alice", "other"}, {"dave", "team-2"}} {
		o, err := e.svc.OptIn(ctx, in[0], in[1])
		if err != nil || o.Group != in[1] || !o.OptedInAt.Equal(first) {
			t.Fatalf("OptIn(%s, %s) = %+v, %v", in[0], in[1], o, err)
		}
	}
	// "team" does not list the opt-ins of "team-2", whose keys share its prefix.
	if got, err := e.svc.GroupOptIns("team"); err != nil || !slices.Equal(got, []string{"alice", "bob", "carol"}) {
		t.Fatalf("GroupOptIns(team) = %q, %v", got, err)
	}
	if got, _ := e.svc.GroupOptIns("nobody"); got != nil {
		t.Fatalf("GroupOptIns(nobody) = %q", got)
	}
	if got, _ := e.svc.GroupOptIns("team/"); got != nil {
		t.Fatalf("an invalid group ID scanned %q", got)
	}
	for _, tc := range []struct {
		uid, gid string
		want     bool
	}{{"alice", "team", true}, {"alice", "other", true}, {"bob", "other", false}, {"dave", "team", false}} {
		if got, err := e.svc.OptedIn(tc.uid, tc.gid); err != nil || got != tc.want {
			t.Errorf("OptedIn(%s, %s) = %v, %v", tc.uid, tc.gid, got, err)
		}
	}
	// Opting in again keeps the first time, also when the value is read back.
	e.clock.Advance(time.Hour)
	e.prop.LoseValues(true)
	if o, err := e.svc.OptIn(ctx, "alice", "team"); err != nil || !o.OptedInAt.Equal(first) {
		t.Fatalf("again: %+v, %v", o, err)
	}
	e.prop.LoseValues(false)
	if list, _ := e.svc.OptIns("alice"); len(list) != 2 || list[0].Group != "other" || list[1].Group != "team" {
		t.Fatalf("OptIns(alice) = %+v", list)
	}
	if err := e.svc.OptOut(ctx, "alice", "team"); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.OptOut(ctx, "alice", "team"); err != nil {
		t.Fatalf("opting out twice: %v", err)
	}
	if got, _ := e.svc.GroupOptIns("team"); !slices.Equal(got, []string{"bob", "carol"}) {
		t.Fatalf("after opting out: %q", got)
	}
	if _, err := e.svc.OptIn(ctx, "alice", "g.1"); !errors.Is(err, ErrInvalidGroup) {
		t.Fatalf("bad group: %v", err)
	}
	if err := e.svc.OptOut(ctx, "alice", ""); !errors.Is(err, ErrInvalidGroup) {
		t.Fatalf("opt out of a bad group: %v", err)
	}
	// Two keys per opt-in, the same on the follower.
	st := e.state()
	if len(st) != 8 || st["r/push/o/team/bob"] == "" || st["r/push/oi/bob/team"] != st["r/push/o/team/bob"] {
		t.Fatalf("state %v", st)
	}
	if got := fsmtest.Dump(t, f.DB(), "r/push/"); !maps.Equal(got, st) {
		t.Fatalf("follower %v, leader %v", got, st)
	}
}

func TestOptInCap(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for i := 0; i < MaxOptIns; i++ {
		if _, err := e.svc.OptIn(ctx, "alice", fmt.Sprintf("g%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	before := e.state()
	if _, err := e.svc.OptIn(ctx, "alice", "one-more"); !errors.Is(err, ErrTooManyOptIns) {
		t.Fatalf("over the cap: %v", err)
	}
	if r := e.do("PUT", "/user/me/push/groups/one-more", "", "alice"); r.Code != 409 || r.errCode() != CodeTooManyOptIns {
		t.Fatalf("over the cap over HTTP: %d %s", r.Code, r.Body)
	}
	if !maps.Equal(before, e.state()) {
		t.Fatal("a refused opt-in changed the state")
	}
	// Opting in again at the cap is no new opt-in; other users have their own cap.
	if _, err := e.svc.OptIn(ctx, "alice", "g7"); err != nil {
		t.Fatalf("again at the cap: %v", err)
	}
	if _, err := e.svc.OptIn(ctx, "bob", "one-more"); err != nil {
		t.Fatalf("another user: %v", err)
	}
	if err := e.svc.OptOut(ctx, "alice", "g7"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.OptIn(ctx, "alice", "one-more"); err != nil {
		t.Fatalf("after opting out of one: %v", err)
	}
}

// The opt-in handler re-validates: a command that bypassed the
// service's checks changes nothing.
func TestOptInHandlerRevalidates(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.svc.OptIn(ctx, "alice", "team"); err != nil {
		t.Fatal(err)
	}
	before := e.state()
	for _, tc := range []struct {
		payload string
		want    error
	}{
		{`{"uid":"alice","gid":"a/b"}`, ErrInvalidGroup},
		{`{"uid":"alice","gid":""}`, ErrInvalidGroup},
		{`{"uid":"alice","gid":"team/bob"}`, ErrInvalidGroup}, // would write into another key's space
		{`{"uid":"alice","gid":"team","delete":"yes"}`, errBadCommand},
		{`{"uid":"Alice","gid":"team","delete":true}`, errBadCommand},
		{`{"uid":"al","gid":"other"}`, errBadCommand},
		{`{"gid":"other"}`, errBadCommand},
		{`not json`, errBadCommand},
	} {
		if _, err := e.prop.Propose(ctx, 0x55, []byte(tc.payload)); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.payload, err, tc.want)
		}
	}
	if !maps.Equal(before, e.state()) {
		t.Fatalf("refused commands changed the state: %v", e.state())
	}
}

func TestHTTPOptIns(t *testing.T) {
	e := newEnv(t)
	if r := e.do("GET", "/user/me/push/groups", "", "alice"); r.Code != 200 || string(r.Body) != "{\"groups\":[]}\n" {
		t.Fatalf("empty list: %d %q", r.Code, r.Body)
	}
	r := e.do("PUT", "/user/me/push/groups/team", "", "alice")
	var o GroupOptIn
	if r.Code != 200 || json.Unmarshal(r.Body, &o) != nil || o.Group != "team" || !o.OptedInAt.Equal(e.clock.Now()) {
		t.Fatalf("opt in: %d %s", r.Code, r.Body)
	}
	if r := e.do("PUT", "/user/me/push/groups/other", "{}", "alice"); r.Code != 200 {
		t.Fatalf("opt in with {}: %d %s", r.Code, r.Body)
	}
	before := e.state()
	for _, tc := range []struct {
		method, path, body string
		status             int
		code               string
	}{
		{"PUT", "/user/me/push/groups/g.1", "", 400, CodeInvalidGroup},
		{"DELETE", "/user/me/push/groups/g.1", "", 400, CodeInvalidGroup},
		{"PUT", "/user/me/push/groups/" + strings.Repeat("g", 65), "", 400, CodeInvalidGroup},
		{"PUT", "/user/me/push/groups/team", `{"all":true}`, 400, "unknown_field"},
		{"PUT", "/user/me/push/groups/team", `[`, 400, "invalid_json"},
		{"PUT", "/user/me/push/groups/team", `{"x":"` + strings.Repeat(" ", 2000) + `"}`, 413, "payload_too_large"},
		{"PUT", "/user/me/push/groups/team", "", 401, "unauthorized"},
	} {
		user := "alice"
		if tc.status == 401 {
			user = ""
		}
		if r := e.do(tc.method, tc.path, tc.body, user); r.Code != tc.status || r.errCode() != tc.code {
			t.Errorf("%s %s %s: %d %s, want %d %s", tc.method, tc.path, tc.body, r.Code, r.Body, tc.status, tc.code)
		}
	}
	if !maps.Equal(before, e.state()) {
		t.Fatal("refused requests changed the state")
	}
	if r := e.do("GET", "/user/me/push/groups", "", "alice"); r.Code != 200 || !strings.Contains(string(r.Body), `{"groups":[{"group":"other","optedInAt":"2026-03-01T12:00:00Z"},{"group":"team","optedInAt":"2026-03-01T12:00:00Z"}]}`) {
		t.Fatalf("list: %d %s", r.Code, r.Body)
	}
	if r := e.do("DELETE", "/user/me/push/groups/team", "", "alice"); r.Code != 204 {
		t.Fatalf("opt out: %d %s", r.Code, r.Body)
	}
	if r := e.do("DELETE", "/user/me/push/groups/never", "", "alice"); r.Code != 204 {
		t.Fatalf("opt out of a group never opted in to: %d %s", r.Code, r.Body)
	}
	if got, _ := e.svc.GroupOptIns("team"); got != nil {
		t.Fatalf("still opted in: %q", got)
	}
}
