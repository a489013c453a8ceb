package users

import (
	"maps"
	"net/http"
	"slices"
	"testing"
)

type profileList struct {
	Contacts   []Profile `json:"contacts"`
	Blocks     []Profile `json:"blocks"`
	Users      []Profile `json:"users"`
	NextCursor string    `json:"nextCursor"`
}

func ids(ps []Profile) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.UserID)
	}
	return out
}

func TestContactsAddRemoveList(t *testing.T) {
	e := newEnv(t)
	e.users("alice", "bob:Bobby", "carol", "dave", "erin")

	for _, u := range []string{"bob", "carol", "dave", "erin"} {
		r := e.do(http.MethodPost, "/user/me/contacts", `{"uid":"`+u+`"}`, "alice")
		if r.Code != http.StatusCreated || r.profile(t).UserID != u {
			t.Fatalf("add %s: %d %s", u, r.Code, r.Body)
		}
	}
	if r := e.do(http.MethodPost, "/user/me/contacts", `{"uid":"bob"}`, "alice"); r.Code != http.StatusCreated {
		t.Fatalf("re-add is idempotent: %d", r.Code)
	}
	if !e.svc.IsContact("alice", "bob") || e.svc.IsContact("bob", "alice") {
		t.Fatal("IsContact is directional")
	}

	before := e.state()
	for _, c := range []struct {
		body   string
		status int
		code   string
	}{
		{`{"uid":"alice"}`, 400, CodeSelf},
		{`{"uid":"nobody"}`, 404, "not_found"},
		{`{"uid":"Not Valid"}`, 404, "not_found"},
		{`{"uid":"bob","x":1}`, 400, "unknown_field"},
		{`{"uid":5}`, 400, "validation_failed"},
	} {
		if r := e.do(http.MethodPost, "/user/me/contacts", c.body, "alice"); r.Code != c.status || r.errCode() != c.code {
			t.Errorf("%s: %d %s, want %d %s", c.body, r.Code, r.Body, c.status, c.code)
		}
	}
	if !maps.Equal(before, e.state()) {
		t.Fatal("refused requests changed state")
	}

	// Paging with limit 3: bob carol dave | erin.
	var page profileList
	e.do(http.MethodGet, "/user/me/contacts?limit=3", "", "alice").decode(t, &page)
	if got := ids(page.Contacts); !slices.Equal(got, []string{"bob", "carol", "dave"}) || page.NextCursor == "" {
		t.Fatalf("page 1: %v %q", got, page.NextCursor)
	}
	if page.Contacts[0].DisplayName != "Bobby" {
		t.Fatalf("contacts carry profiles: %+v", page.Contacts[0])
	}
	var page2 profileList
	e.do(http.MethodGet, "/user/me/contacts?limit=3&cursor="+page.NextCursor, "", "alice").decode(t, &page2)
	if got := ids(page2.Contacts); !slices.Equal(got, []string{"erin"}) || page2.NextCursor != "" {
		t.Fatalf("page 2: %v %q", got, page2.NextCursor)
	}
	for _, q := range []string{"limit=0", "limit=201", "limit=x", "cursor=!!"} {
		if r := e.do(http.MethodGet, "/user/me/contacts?"+q, "", "alice"); r.Code != 400 {
			t.Errorf("%s: %d", q, r.Code)
		}
	}

	if r := e.do(http.MethodDelete, "/user/me/contacts/carol", "", "alice"); r.Code != http.StatusNoContent {
		t.Fatalf("delete: %d", r.Code)
	}
	if r := e.do(http.MethodDelete, "/user/me/contacts/carol", "", "alice"); r.Code != http.StatusNoContent {
		t.Fatalf("delete again: %d", r.Code)
	}
	if e.svc.IsContact("alice", "carol") {
		t.Fatal("carol still a contact (stale cache?)")
	}
	e.do(http.MethodGet, "/user/me/contacts", "", "alice").decode(t, &page)
	if got := ids(page.Contacts); !slices.Equal(got, []string{"bob", "dave", "erin"}) {
		t.Fatalf("after delete: %v", got)
	}
	// An empty list is [] not null.
	if r := e.do(http.MethodGet, "/user/me/contacts", "", "bob"); r.Code != 200 || string(r.Body) != "{\"contacts\":[]}\n" {
		t.Fatalf("empty: %s", r.Body)
	}
}

func TestBlocks(t *testing.T) {
	e := newEnv(t)
	e.users("alice", "bob", "carol")
	if r := e.do(http.MethodPost, "/user/me/contacts", `{"uid":"bob"}`, "alice"); r.Code != 201 {
		t.Fatal(r.Code)
	}
	if e.svc.IsBlocked("alice", "bob") {
		t.Fatal("blocked before blocking")
	}
	if r := e.do(http.MethodPost, "/user/me/blocks", `{"uid":"bob"}`, "alice"); r.Code != 201 {
		t.Fatalf("block: %d %s", r.Code, r.Body)
	}
	// Right after the commit: no stale cached "not blocked".
	if !e.svc.IsBlocked("alice", "bob") || e.svc.IsBlocked("bob", "alice") {
		t.Fatal("IsBlocked wrong after block")
	}
	// Blocking keeps the contact entry.
	if !e.svc.IsContact("alice", "bob") {
		t.Fatal("block removed the contact")
	}
	for _, c := range []struct {
		body   string
		status int
	}{{`{"uid":"alice"}`, 400}, {`{"uid":"zed"}`, 404}} {
		if r := e.do(http.MethodPost, "/user/me/blocks", c.body, "alice"); r.Code != c.status {
			t.Errorf("%s: %d", c.body, r.Code)
		}
	}
	e.do(http.MethodPost, "/user/me/blocks", `{"uid":"carol"}`, "alice")
	var page profileList
	e.do(http.MethodGet, "/user/me/blocks", "", "alice").decode(t, &page)
	if got := ids(page.Blocks); !slices.Equal(got, []string{"bob", "carol"}) {
		t.Fatalf("blocks: %v", got)
	}
	if r := e.do(http.MethodDelete, "/user/me/blocks/bob", "", "alice"); r.Code != 204 {
		t.Fatal(r.Code)
	}
	if e.svc.IsBlocked("alice", "bob") || !e.svc.IsBlocked("alice", "carol") {
		t.Fatal("unblock")
	}
	// Bad names are simply not blocked.
	if e.svc.IsBlocked("alice", "../x") || e.svc.IsBlocked("", "bob") {
		t.Fatal("invalid names")
	}
}

func TestRelationHandlerRefusals(t *testing.T) {
	e := newEnv(t)
	e.users("alice")
	before := e.state()
	for _, payload := range []string{`{`, `{"owner":"alice","uid":"alice","add":true}`,
		`{"owner":"alice","uid":"ghost","add":true}`, `{"owner":"A","uid":"alice","add":true}`} {
		for _, typ := range []byte{0x21, 0x22} {
			if _, err := e.prop.Propose(t.Context(), typ, []byte(payload)); err == nil {
				t.Errorf("%#x %s accepted", typ, payload)
			}
		}
	}
	if !maps.Equal(before, e.state()) {
		t.Fatal("refused commands wrote state")
	}
}
