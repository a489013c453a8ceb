package auth

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// An admin lists the accounts page by page in user-ID order (a deleted
// one left out), or only the suspended ones; bad parameters are a 400.
func TestAdminListsAccounts(t *testing.T) {
	e := newEnv(t)
	for _, u := range []string{"carol", "alice", "bob", "bobby", "dave"} {
		e.register(u, "password1")
	}
	ctx := context.Background()
	if err := e.svc.SetSuspended(ctx, "bobby", true); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.DeleteAccountByAdmin(ctx, "dave"); err != nil {
		t.Fatal(err)
	}
	type page struct {
		Users      []AccountInfo
		NextCursor string
	}
	get := func(query string) page {
		t.Helper()
		r := e.as("root", http.MethodGet, "/admin/users"+query, "")
		var p page
		if r.Code != http.StatusOK || json.Unmarshal(r.Body, &p) != nil {
			t.Fatalf("GET /admin/users%s: %d %s", query, r.Code, r.Body)
		}
		return p
	}
	var ids []string
	cursor := ""
	for i := 0; ; i++ {
		q := "?limit=2"
		if cursor != "" {
			q += "&cursor=" + cursor
		}
		p := get(q)
		for _, u := range p.Users {
			ids = append(ids, u.UserID)
		}
		if p.NextCursor == "" {
			break
		}
		if i > 5 {
			t.Fatal("paging does not end")
		}
		cursor = p.NextCursor
	}
	if got := strings.Join(ids, ","); got != "alice,bob,bobby,carol" {
		t.Fatalf("accounts %s, want alice,bob,bobby,carol (dave deleted)", got)
	}
	all := get("")
	// carol registered first: the admin.
	if len(all.Users) != 4 || !all.Users[3].Admin || all.Users[0].Admin || !all.Users[2].Suspended || all.Users[1].Suspended || !all.Users[0].Password || all.Users[0].CreatedAt.IsZero() {
		t.Fatalf("accounts %+v: want carol the admin, bobby suspended, passwords and creation times", all.Users)
	}
	if s := get("?suspended=true"); len(s.Users) != 1 || s.Users[0].UserID != "bobby" {
		t.Fatalf("suspended accounts %+v", s.Users)
	}
	for _, q := range []string{"?limit=0", "?limit=5000", "?limit=x", "?cursor=Not!A.Name", "?suspended=maybe"} {
		if r := e.as("root", http.MethodGet, "/admin/users"+q, ""); r.Code != http.StatusBadRequest {
			t.Fatalf("GET /admin/users%s: %d %s", q, r.Code, r.Body)
		}
	}
}
