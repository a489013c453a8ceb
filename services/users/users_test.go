package users

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/wire"
)

func TestCreateProfileAndRead(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if err := e.svc.CreateProfile(ctx, "alice", "  Alice A. "); err != nil {
		t.Fatal(err)
	}
	p, err := e.svc.Profile("alice")
	if err != nil || p.UserID != "alice" || p.DisplayName != "Alice A." || !p.CreatedAt.Equal(e.clock.Now()) {
		t.Fatalf("profile: %+v %v", p, err)
	}
	// Creating again keeps the existing profile (a retried registration).
	e.clock.Advance(time.Minute)
	if err := e.svc.CreateProfile(ctx, "alice", "Someone Else"); err != nil {
		t.Fatal(err)
	}
	if p2, _ := e.svc.Profile("alice"); p2 != p {
		t.Fatalf("profile overwritten: %+v", p2)
	}
	if err := e.svc.CreateProfile(ctx, "bob", ""); err != nil {
		t.Fatal(err)
	}
	if p, _ := e.svc.Profile("bob"); p.DisplayName != "bob" {
		t.Fatalf("default display name: %+v", p)
	}
	if _, err := e.svc.Profile("nobody"); !errors.Is(err, wire.ErrNotFound) {
		t.Fatalf("missing: %v", err)
	}
	if err := e.svc.CreateProfile(ctx, "Bad Name", "x"); !errors.Is(err, ErrInvalidUserID) {
		t.Fatalf("bad uid: %v", err)
	}
	if err := e.svc.CreateProfile(ctx, "carol", strings.Repeat("x", 65)); !errors.Is(err, ErrInvalidDisplayName) {
		t.Fatalf("long name: %v", err)
	}
	if _, err := e.svc.Profile("carol"); !errors.Is(err, wire.ErrNotFound) {
		t.Fatal("carol created despite the refusal")
	}
}

func TestGetProfilesHTTP(t *testing.T) {
	e := newEnv(t)
	if err := e.svc.CreateProfile(context.Background(), "alice", "Alice"); err != nil {
		t.Fatal(err)
	}
	r := e.do(http.MethodGet, "/user/me", "", "alice")
	if r.Code != 200 || r.profile(t).DisplayName != "Alice" || r.Header.Get("ETag") == "" {
		t.Fatalf("me: %d %s %v", r.Code, r.Body, r.Header)
	}
	r2 := e.do(http.MethodGet, "/user/alice", "", "bob")
	if r2.Code != 200 || r2.profile(t).UserID != "alice" || r2.Header.Get("ETag") != r.Header.Get("ETag") {
		t.Fatalf("by uid: %d %s", r2.Code, r2.Body)
	}
	for _, path := range []string{"/user/nobody", "/user/Not%20Valid", "/user/%2e%2e"} {
		if r := e.do(http.MethodGet, path, "", "bob"); r.Code != 404 || r.errCode() != "not_found" {
			t.Errorf("%s: %d %s", path, r.Code, r.Body)
		}
	}
	// bob is authenticated but has no profile yet.
	if r := e.do(http.MethodGet, "/user/me", "", "bob"); r.Code != 404 {
		t.Fatalf("bob me: %d", r.Code)
	}
	// No principal: refused even if the gateway were misconfigured.
	for _, c := range []struct{ m, p, b string }{{"GET", "/user/me", ""}, {"GET", "/user/alice", ""}, {"PATCH", "/user/me", `{"about":"x"}`}} {
		if r := e.do(c.m, c.p, c.b, ""); r.Code != 401 || r.errCode() != "unauthorized" {
			t.Errorf("%s %s without principal: %d", c.m, c.p, r.Code)
		}
	}
}

func TestETagNotModified(t *testing.T) {
	e := newEnv(t)
	if err := e.svc.CreateProfile(context.Background(), "alice", "Alice"); err != nil {
		t.Fatal(err)
	}
	etag := e.do(http.MethodGet, "/user/me", "", "alice").Header.Get("ETag")
	for _, inm := range []string{etag, "W/" + etag, `"other", ` + etag, "*"} {
		r := e.do(http.MethodGet, "/user/me", "", "alice", "If-None-Match", inm)
		if r.Code != http.StatusNotModified || len(r.Body) != 0 || r.Header.Get("ETag") != etag {
			t.Fatalf("If-None-Match %s: %d %q", inm, r.Code, r.Body)
		}
	}
	if r := e.do(http.MethodGet, "/user/me", "", "alice", "If-None-Match", `"stale"`); r.Code != 200 {
		t.Fatalf("stale etag: %d", r.Code)
	}
	// A change gives a new ETag and the old one no longer matches.
	e.clock.Advance(time.Second)
	r := e.do(http.MethodPatch, "/user/me", `{"about":"hi"}`, "alice")
	if r.Code != 200 || r.Header.Get("ETag") == etag {
		t.Fatalf("patch: %d %v", r.Code, r.Header)
	}
	r = e.do(http.MethodGet, "/user/me", "", "alice", "If-None-Match", etag)
	if r.Code != 200 || r.profile(t).About != "hi" {
		t.Fatalf("after change: %d %s", r.Code, r.Body)
	}
}

func TestPatchMe(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if err := e.svc.CreateProfile(ctx, "alice", "Alice"); err != nil {
		t.Fatal(err)
	}
	created := e.clock.Now()
	e.clock.Advance(time.Hour)
	r := e.do(http.MethodPatch, "/user/me", `{"about":"likes tea\nand cake"}`, "alice")
	p := r.profile(t)
	if r.Code != 200 || p.DisplayName != "Alice" || p.About != "likes tea\nand cake" ||
		!p.CreatedAt.Equal(created) || !p.UpdatedAt.Equal(e.clock.Now()) {
		t.Fatalf("patch about: %d %+v", r.Code, p)
	}
	r = e.do(http.MethodPatch, "/user/me", `{"displayName":" Alice B ","about":""}`, "alice")
	if p := r.profile(t); r.Code != 200 || p.DisplayName != "Alice B" || p.About != "" {
		t.Fatalf("patch name: %d %+v", r.Code, p)
	}
	if p, _ := e.svc.Profile("alice"); p.DisplayName != "Alice B" {
		t.Fatalf("stored: %+v", p)
	}

	before, _ := e.svc.Profile("alice")
	bad := []struct {
		name, body string
		status     int
		code       string
	}{
		{"about too long", `{"about":"` + strings.Repeat("é", 281) + `"}`, 400, CodeInvalidAbout},
		{"about control", `{"about":"a\u0000b"}`, 400, CodeInvalidAbout},
		{"empty name", `{"displayName":""}`, 400, CodeInvalidDisplayName},
		{"long name", `{"displayName":"` + strings.Repeat("n", 65) + `"}`, 400, CodeInvalidDisplayName},
		{"newline in name", `{"displayName":"a\nb"}`, 400, CodeInvalidDisplayName},
		{"unknown field", `{"displayName":"x","userId":"bob"}`, 400, "unknown_field"},
		{"wrong type", `{"about":42}`, 400, "validation_failed"},
		{"null body", `nul`, 400, "invalid_json"},
		{"oversized", `{"about":"` + strings.Repeat("a", 5000) + `"}`, 413, "payload_too_large"},
		{"script avatar", `{"avatar":"javascript:alert(1)"}`, 400, CodeInvalidAvatar},
		{"relative avatar", `{"avatar":"/me.png"}`, 400, CodeInvalidAvatar},
	}
	for _, c := range bad {
		r := e.do(http.MethodPatch, "/user/me", c.body, "alice")
		if r.Code != c.status || r.errCode() != c.code {
			t.Errorf("%s: %d %s, want %d %s", c.name, r.Code, r.Body, c.status, c.code)
		}
	}
	if after, _ := e.svc.Profile("alice"); after != before {
		t.Fatalf("refused patches changed the profile: %+v", after)
	}
	// An avatar URL, then none.
	r = e.do(http.MethodPatch, "/user/me", `{"avatar":"https://img.example/a.png"}`, "alice")
	if p := r.profile(t); r.Code != 200 || p.Avatar != "https://img.example/a.png" || p.DisplayName != "Alice B" {
		t.Fatalf("patch avatar: %d %+v", r.Code, p)
	}
	if p := e.do(http.MethodPatch, "/user/me", `{"avatar":""}`, "alice").profile(t); p.Avatar != "" {
		t.Fatalf("avatar removed: %+v", p)
	}
	if err := e.svc.CreateProfileWithAvatar(ctx, "fed", "Fed", "https://img.example/f.png"); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.CreateProfileWithAvatar(ctx, "fed2", "Fed", "data:image/png;base64,AAAA"); err != nil {
		t.Fatal(err)
	}
	if p, _ := e.svc.Profile("fed"); p.Avatar != "https://img.example/f.png" {
		t.Fatalf("created with an avatar: %+v", p)
	}
	if p, _ := e.svc.Profile("fed2"); p.Avatar != "" {
		t.Fatalf("an invalid avatar was kept: %+v", p)
	}
	// 280 characters exactly is fine.
	if r := e.do(http.MethodPatch, "/user/me", `{"about":"`+strings.Repeat("é", 280)+`"}`, "alice"); r.Code != 200 {
		t.Fatalf("280 chars: %d %s", r.Code, r.Body)
	}
}

func TestPatchCreatesMissingProfile(t *testing.T) {
	e := newEnv(t)
	e.prop.LoseValues(true) // also covers reading back when the value is lost
	r := e.do(http.MethodPatch, "/user/me", `{"about":"federated"}`, "fed.user")
	p := r.profile(t)
	if r.Code != 200 || p.UserID != "fed.user" || p.DisplayName != "fed.user" || p.About != "federated" {
		t.Fatalf("upsert: %d %+v", r.Code, p)
	}
}

func TestUnavailable(t *testing.T) {
	e := newEnv(t)
	e.prop.SetErr(fsmtest.ErrDown)
	r := e.do(http.MethodPatch, "/user/me", `{"about":"x"}`, "alice")
	if r.Code != 503 || r.errCode() != "unavailable" || r.Header.Get("Retry-After") == "" {
		t.Fatalf("%d %s", r.Code, r.Body)
	}
	if err := e.svc.CreateProfile(context.Background(), "alice", "A"); !errors.Is(err, wire.ErrUnavailable) {
		t.Fatalf("create: %v", err)
	}
}

// TestHandlerRefusesWithoutWriting sends bad commands straight through
// the log: each is refused and nothing under r/user/ is written.
func TestHandlerRefusesWithoutWriting(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	long := strings.Repeat("x", 300)
	for _, payload := range []string{
		`{`, `{"uid":"A B","create":true}`, `{"uid":"bob"}`,
		`{"uid":"bob","upsert":true,"about":"` + long + `"}`,
		`{"uid":"bob","create":true,"displayName":""}`,
	} {
		if _, err := e.prop.Propose(ctx, wire.CmdProfilePut, []byte(payload)); err == nil {
			t.Errorf("%s accepted", payload)
		}
	}
	n := 0
	_ = e.db.View(func(tx *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte("r/user/")
		it := tx.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	if n != 0 {
		t.Fatalf("%d keys written by refused commands", n)
	}
}
