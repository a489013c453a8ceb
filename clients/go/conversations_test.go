package edgechat

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"
)

// conversationsOver serves GET /chat/conversations as the server does:
// n conversations, most recent first, limit 1–1000 (default 200),
// hasMore and nextCursor when some were left out.
func conversationsOver(n int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		limit := 200
		if v := r.URL.Query().Get("limit"); v != "" {
			l, err := strconv.Atoi(v)
			if err != nil || l < 1 || l > 1000 {
				w.WriteHeader(http.StatusBadRequest)
				_, _ = w.Write([]byte(`{"error":{"code":"validation_failed","message":"limit"}}`))
				return
			}
			limit = l
		}
		from := 0
		if v := r.URL.Query().Get("cursor"); v != "" {
			from, _ = strconv.Atoi(v)
		}
		var out []map[string]any
		for i := from; i < min(n, from+limit); i++ {
			out = append(out, map[string]any{"peer": fmt.Sprintf("user%04d", i), "lastMessage": map[string]any{"id": strconv.Itoa(10000 + n - i)}, "unread": 0})
		}
		page := map[string]any{"conversations": out, "hasMore": n > from+limit}
		if n > from+limit {
			page["nextCursor"] = strconv.Itoa(from + limit)
		}
		_ = json.NewEncoder(w).Encode(page)
	}
}

// Conversations lists every conversation the server lists: a user with
// 250 conversations gets all 250, one with 2,500 all 2,500. Before, the
// client asked for the server's default page (200) and dropped its
// hasMore, so the least recent were silently missing; then it asked for
// the largest page (1000) and left out what lay past it (logged only).
// Now it pages with the list's nextCursor.
func TestConversationsListsEveryPage(t *testing.T) {
	for _, n := range []int{250, 2500} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			f := newFakeServer(t)
			f.set(func(f *fakeServer) {
				f.routes = map[string]http.HandlerFunc{"/chat/conversations": conversationsOver(n)}
			})
			bob := dialFake(t, f, "bob", nil, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			convs, err := bob.Conversations(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(convs) != n || convs[0].Peer != "user0000" || convs[n-1].Peer != fmt.Sprintf("user%04d", n-1) {
				t.Fatalf("got %d conversations, want %d", len(convs), n)
			}
		})
	}
}

// During a rolling upgrade the nodes behind one address answer in turn:
// a page after the first may reach a node older than the list's cursor,
// which refuses the parameter it does not know (400 validation_failed,
// "unknown query parameter"). Conversations keeps what it read (the
// least recent are left out, logged, as from an older server) instead
// of failing: it failed the whole list, where the SDK before paging
// listed the first 1,000.
func TestConversationsPageRefusedByAnOlderNode(t *testing.T) {
	newer := conversationsOver(2500)
	f := newFakeServer(t)
	f.set(func(f *fakeServer) {
		f.routes = map[string]http.HandlerFunc{"/chat/conversations": func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Has("cursor") { // the older node
				w.WriteHeader(http.StatusBadRequest)
				_, _ = w.Write([]byte(`{"error":{"code":"validation_failed","message":"unknown query parameter \"cursor\""}}`))
				return
			}
			newer(w, r)
		}}
	})
	bob := dialFake(t, f, "bob", nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	convs, err := bob.Conversations(ctx)
	if err != nil {
		t.Fatalf("a later page refused by an older node: %v, want the first page", err)
	}
	if len(convs) != 1000 || convs[0].Peer != "user0000" || convs[999].Peer != "user0999" {
		t.Fatalf("got %d conversations, want the first 1000", len(convs))
	}
}
