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

// Conversations lists every conversation the server lists, up to its
// page limit (1000): a user with 250 conversations gets all 250. Before,
// the client asked for the server's default page (200) and dropped its
// hasMore: the 50 least recent conversations were silently missing.
func TestConversationsListsMoreThanTheDefaultPage(t *testing.T) {
	f := newFakeServer(t)
	f.set(func(f *fakeServer) {
		f.routes = map[string]http.HandlerFunc{"/chat/conversations": conversationsOver(250)}
	})
	bob := dialFake(t, f, "bob", nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	convs, err := bob.Conversations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(convs) != 250 || convs[0].Peer != "user0000" || convs[249].Peer != "user0249" {
		t.Fatalf("got %d conversations, want 250", len(convs))
	}
}

// Conversations pages past the server's page limit (1000) with the
// list's nextCursor: a user with 2,500 conversations gets them all.
// Before, the least recent 1,500 were left out (logged only).
func TestConversationsPagesPastTheLimit(t *testing.T) {
	f := newFakeServer(t)
	f.set(func(f *fakeServer) {
		f.routes = map[string]http.HandlerFunc{"/chat/conversations": conversationsOver(2500)}
	})
	bob := dialFake(t, f, "bob", nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	convs, err := bob.Conversations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(convs) != 2500 || convs[0].Peer != "user0000" || convs[2499].Peer != "user2499" {
		t.Fatalf("got %d conversations, want 2500", len(convs))
	}
}
