package users

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
)

func (e *env) searchAll(q string, limit string) []string {
	e.t.Helper()
	var all []string
	cursor := ""
	for range 50 {
		path := "/user/search?q=" + url.QueryEscape(q) + "&limit=" + limit
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		r := e.do(http.MethodGet, path, "", "alice")
		if r.Code != 200 {
			e.t.Fatalf("search %q: %d %s", q, r.Code, r.Body)
		}
		var page profileList
		r.decode(e.t, &page)
		all = append(all, ids(page.Users)...)
		if page.NextCursor == "" {
			return all
		}
		cursor = page.NextCursor
	}
	e.t.Fatal("search did not end")
	return nil
}

func TestSearch(t *testing.T) {
	e := newEnv(t)
	e.users("alice:Alice", "albert:Bert", "alfred:Zed", "bob:Alan Smith", "carol:alpha Centauri",
		"dave:Dave", "aloha:Al")

	// User IDs first (in ID order), then the display-name matches not
	// already listed, in name order: "al" (aloha, listed), "alan smith"
	// (bob), "alice" (listed), "alpha centauri" (carol).
	want := []string{"albert", "alfred", "alice", "aloha", "bob", "carol"}
	for _, limit := range []string{"1", "2", "4", "50"} {
		if got := e.searchAll("AL", limit); !slices.Equal(got, want) {
			t.Fatalf("limit %s: %v, want %v", limit, got, want)
		}
	}
	if got := e.searchAll("Ber", "10"); !slices.Equal(got, []string{"albert"}) {
		t.Fatalf("by name: %v", got)
	}
	if got := e.searchAll("zzz", "10"); len(got) != 0 {
		t.Fatalf("no match: %v", got)
	}
	// Unicode names fold case too.
	e.users("emile:Émile")
	if got := e.searchAll("éMI", "10"); !slices.Equal(got, []string{"emile"}) {
		t.Fatalf("unicode: %v", got)
	}

	// A rename moves the index entry in the same commit.
	if r := e.do(http.MethodPatch, "/user/me", `{"displayName":"Quentin"}`, "dave"); r.Code != 200 {
		t.Fatal(r.Code)
	}
	if got := e.searchAll("quen", "10"); !slices.Equal(got, []string{"dave"}) {
		t.Fatalf("new name: %v", got)
	}
	if got := e.searchAll("Dave", "10"); !slices.Equal(got, []string{"dave"}) { // still by user ID
		t.Fatalf("old name by uid: %v", got)
	}
	e.do(http.MethodPatch, "/user/me", `{"displayName":"Zoe"}`, "bob")
	if got := e.searchAll("alan", "10"); len(got) != 0 {
		t.Fatalf("stale name index: %v", got)
	}

	for _, q := range []string{"q=", "q=%20%20", "q=" + strings.Repeat("a", 65),
		"q=a%00b", "q=al&limit=51", "q=al&limit=0", "q=al&cursor=!!"} {
		r := e.do(http.MethodGet, "/user/search?"+q, "", "alice")
		if r.Code != 400 {
			t.Errorf("%s: %d %s", q, r.Code, r.Body)
		}
	}
	if r := e.do(http.MethodGet, "/user/search?q=", "", "alice"); r.errCode() != CodeInvalidQuery {
		t.Errorf("code: %s", r.Body)
	}
	if r := e.do(http.MethodGet, "/user/search?q=al", "", ""); r.Code != 401 {
		t.Errorf("anonymous: %d", r.Code)
	}
}

// A deleted account (in its grace period) is an unknown user: search no
// longer finds it, by user ID or display name, and pages stay whole.
func TestSearchSkipsDeletedAccounts(t *testing.T) {
	e := newEnv(t)
	e.users("bob1", "bob2:Bobby", "bob3", "carl:Bob Carl", "dan:Bob Dan")
	e.svc.SetAccounts(deletedAccounts{"bob2": true, "carl": true})
	var got []string
	cursor := ""
	for page := 0; page < 10; page++ {
		found, next, err := e.svc.Search("bob", cursor, 1)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range found {
			got = append(got, p.UserID)
		}
		if next == "" {
			break
		}
		if len(found) == 0 {
			t.Errorf("an empty page with a next cursor at %q", cursor)
		}
		cursor = next
	}
	if want := []string{"bob1", "bob3", "dan"}; !slices.Equal(got, want) {
		t.Errorf("search bob: %v, want %v (bob2 and carl are deleted)", got, want)
	}
	if found, _, _ := e.svc.Search("Bobby", "", 10); len(found) != 0 {
		t.Errorf("search Bobby: %+v", found)
	}
}
