package archive

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// The conversation list pages: a list longer than limit answers
// nextCursor with hasMore, and the pages from it hold every conversation
// once, in the list's order. It answered hasMore with no way to read
// past the first 1,000 (limit's maximum), so a client never saw the rest.
func TestHTTPConversationsPages(t *testing.T) {
	e := newEnv(t, withGroups())
	e.groups.add("team", "alice", "bob")
	srv := e.server(t)
	e.send(t, "alice", "bob", "a1")
	e.sendGroup(t, "alice", "team", "t1")
	e.send(t, "carol", "bob", "c1")
	e.send(t, "bob", "dave", "d1")
	e.send(t, "erin", "bob", "e1")
	type page struct {
		Conversations []struct{ Peer, Group string }
		HasMore       bool
		NextCursor    string
	}
	name := func(p, g string) string {
		if g != "" {
			return "group:" + g
		}
		return "user:" + p
	}
	var all page
	if r := get(t, srv, "bob", "/chat/conversations", &all); r.Status != http.StatusOK || all.HasMore || all.NextCursor != "" {
		t.Fatalf("the whole list: %d %s", r.Status, r.Body)
	}
	var want []string
	for _, c := range all.Conversations {
		want = append(want, name(c.Peer, c.Group))
	}
	if len(want) != 5 {
		t.Fatalf("the whole list: %v", want)
	}
	for _, limit := range []string{"1", "2"} {
		var got []string
		cursor := ""
		for range 10 {
			q := url.Values{"limit": {limit}}
			if cursor != "" {
				q.Set("cursor", cursor)
			}
			var p page
			if r := get(t, srv, "bob", "/chat/conversations?"+q.Encode(), &p); r.Status != http.StatusOK {
				t.Fatalf("limit %s cursor %q: %d %s", limit, cursor, r.Status, r.Body)
			}
			for _, c := range p.Conversations {
				got = append(got, name(c.Peer, c.Group))
			}
			if p.HasMore != (p.NextCursor != "") {
				t.Fatalf("limit %s: hasMore %v with nextCursor %q", limit, p.HasMore, p.NextCursor)
			}
			if !p.HasMore {
				break
			}
			cursor = p.NextCursor
		}
		if !slices.Equal(got, want) {
			t.Fatalf("paged by %s: %v, want %v", limit, got, want)
		}
	}
	for _, bad := range []string{"x", "12", "12.x", "12.d", "-1.dbob"} {
		if r := get(t, srv, "bob", "/chat/conversations?cursor="+url.QueryEscape(bad), nil); r.Status != http.StatusBadRequest {
			t.Errorf("cursor %q: %d %s, want 400", bad, r.Status, r.Body)
		}
	}
}

// An empty cursor is the list's start, as an empty since of /chat/sync
// and an empty cursor of the users service's lists (GET
// /user/groups?cursor=&limit=): a client that sends the cursor it holds
// on every request, empty before the first page, gets the first page.
// It was refused as malformed (400).
func TestHTTPConversationsEmptyCursorIsTheStart(t *testing.T) {
	e := newEnv(t)
	srv := e.server(t)
	e.send(t, "alice", "bob", "a1")
	e.send(t, "carol", "bob", "c1")
	var p convList
	if r := get(t, srv, "bob", "/chat/conversations?limit=1&cursor=", &p); r.Status != http.StatusOK {
		t.Fatalf("an empty cursor: %d %s, want 200 and the first page", r.Status, r.Body)
	}
	if len(p.Conversations) != 1 || p.Conversations[0].Peer != "carol" || !p.HasMore {
		t.Fatalf("an empty cursor: %+v, want carol's conversation first and hasMore", p)
	}
}

// An empty before or limit is as none, as an empty cursor (sync's
// since, the conversation list's cursor) and the users service's lists'
// limit are: a client that sends the parameters it holds on every
// request (before= on the newest page) gets the default, not 400.
// (An empty within of /chat/sync/end stays refused: without it the
// answer is another one, the stream's end.)
func TestHTTPEmptyParametersAreAsNone(t *testing.T) {
	e := newEnv(t)
	srv := e.server(t)
	e.send(t, "alice", "bob", "a1")
	e.send(t, "alice", "bob", "a2")
	for _, path := range []string{
		"/chat/history?with=alice&before=&limit=",
		"/chat/history?with=alice&before=",
		"/chat/sync?since=&limit=",
		"/chat/conversations?cursor=&limit=",
	} {
		var p page
		if r := get(t, srv, "bob", path, &p); r.Status != http.StatusOK {
			t.Errorf("GET %s: %d %s, want 200 as without the empty parameters", path, r.Status, r.Body)
			continue
		}
		if strings.HasPrefix(path, "/chat/history") || strings.HasPrefix(path, "/chat/sync?") {
			if len(p.Messages) != 2 || p.HasMore {
				t.Errorf("GET %s: %d messages, hasMore %v; want both, the default limit", path, len(p.Messages), p.HasMore)
			}
		}
	}
}
