package users

import (
	"encoding/base64"
	"net/http"
	"testing"
)

// A cursor the server did not make is refused (400 bad_request, as
// protocol.md says of a malformed cursor), not read as a place in the
// list: "zzz" is valid base64url, so each list took it as a key and
// answered 200 with an empty page (contacts, blocks, groups), or the
// first page again (search), and a client that mangled its cursor was
// told the list had ended.
func TestAListCursorTheServerDidNotMakeIsRefused(t *testing.T) {
	e := newEnv(t)
	e.users("alice", "bob", "carol")
	for _, uid := range []string{"bob", "carol"} {
		if r := e.do("POST", "/user/me/contacts", `{"uid":"`+uid+`"}`, "alice"); r.Code != http.StatusCreated {
			t.Fatalf("add contact %s: %d %s", uid, r.Code, r.Body)
		}
	}
	if r := e.do("POST", "/user/me/blocks", `{"uid":"carol"}`, "alice"); r.Code != http.StatusCreated {
		t.Fatalf("block: %d %s", r.Code, r.Body)
	}
	r := e.do("POST", "/user/groups", `{"name":"T","members":["bob","carol"]}`, "alice")
	if r.Code != http.StatusCreated {
		t.Fatalf("create group: %d %s", r.Code, r.Body)
	}
	var g struct{ GroupID string }
	r.decode(t, &g)

	garbage := []string{
		"zzz", // base64url of "\xcf\x3c"
		base64.RawURLEncoding.EncodeToString([]byte("no/such key")),
		base64.RawURLEncoding.EncodeToString([]byte("x\x00bob")),
	}
	lists := []string{"/user/me/contacts", "/user/me/blocks", "/user/groups", "/user/groups/" + g.GroupID + "/members", "/user/search?q=b"}
	for _, list := range lists {
		sep := "?"
		if list == "/user/search?q=b" {
			sep = "&"
		}
		for _, c := range garbage {
			r := e.do("GET", list+sep+"cursor="+c, "", "alice")
			if r.Code != http.StatusBadRequest || r.errCode() != "bad_request" {
				t.Errorf("GET %s%scursor=%s: %d %s, want 400 bad_request", list, sep, c, r.Code, r.Body)
			}
		}
	}

	// The cursors the server makes still page every list.
	for _, list := range []string{"/user/me/contacts", "/user/groups/" + g.GroupID + "/members", "/user/search?q=b"} {
		sep := "?"
		if list == "/user/search?q=b" {
			sep = "&"
		}
		seen, cursor := 0, ""
		for page := 0; ; page++ {
			url := list + sep + "limit=1"
			if cursor != "" {
				url += "&cursor=" + cursor
			}
			r := e.do("GET", url, "", "alice")
			if r.Code != http.StatusOK {
				t.Fatalf("GET %s: %d %s", url, r.Code, r.Body)
			}
			var v struct {
				NextCursor string
				Contacts   []any
				Members    []any
				Users      []any
			}
			r.decode(t, &v)
			seen += len(v.Contacts) + len(v.Members) + len(v.Users)
			if v.NextCursor == "" || page > 5 {
				break
			}
			cursor = v.NextCursor
		}
		if want := map[string]int{"/user/me/contacts": 2, "/user/search?q=b": 1}[list]; want == 0 && seen != 3 || want != 0 && seen != want {
			t.Errorf("paging %s one at a time saw %d entries", list, seen)
		}
	}
}
