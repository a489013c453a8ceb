package edgechat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
)

// publishGroup delivers m live on its group's topic, as the server does
// once it committed it.
func (f *fakeServer) publishGroup(m Message) {
	b, _ := json.Marshal(m)
	_ = f.srv.Publish("group/"+m.Group+"/newMessage", b, false, 1)
}

// waitSubscribedThenSynced waits until filter was subscribed and a sync
// of user followed that subscription (subscribe first, then sync).
func (f *fakeServer) waitSubscribedThenSynced(t *testing.T, filter, user string) {
	t.Helper()
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		f.mu.Lock()
		defer f.mu.Unlock()
		i := slices.Index(f.trace, "sub:"+filter)
		if i < 0 {
			return fmt.Errorf("%s not subscribed (trace %v)", filter, f.trace)
		}
		if !slices.Contains(f.trace[i+1:], "sync:"+user) {
			return fmt.Errorf("no sync after subscribing %s (trace %v)", filter, f.trace)
		}
		return nil
	})
}

// The groups a user is in when the client connects are subscribed to
// (then synced): their messages arrive live.
func TestGroupMessagesArriveLive(t *testing.T) {
	f := newFakeServer(t)
	f.set(func(f *fakeServer) { f.groups = map[string][]string{"bob": {"g1", "g2@eu"}} })
	br := newRecorder()
	dialFake(t, f, "bob", br, nil)
	f.waitSubscribedThenSynced(t, "group/g1/newMessage", "bob")
	f.waitSubscribedThenSynced(t, "group/g2@eu/newMessage", "bob")
	for _, gid := range []string{"g1", "g2@eu"} {
		m := Message{ID: f.gen.Next().String(), From: "carol", Group: gid, CID: NewCID(), Type: "text", Body: "hi " + gid}
		f.publishGroup(m)
		br.waitCount(t, m.ID, 1)
	}
}

// A group the user joins while connected (group.created or
// group.member_added naming them on user/{me}/events) is subscribed to,
// then synced; an event about someone else changes nothing.
func TestJoiningAGroupSubscribesThenSyncs(t *testing.T) {
	f := newFakeServer(t)
	br := newRecorder()
	dialFake(t, f, "bob", br, nil)
	event := func(typ string, data map[string]any) {
		b, _ := json.Marshal(map[string]any{"type": typ, "data": data})
		_ = f.srv.Publish("user/bob/events", b, false, 1)
	}
	event("group.member_added", map[string]any{"gid": "other", "uid": "carol", "by": "alice"})
	event("group.member_added", map[string]any{"gid": "g3", "uids": []string{"carol", "bob"}, "by": "alice"})
	event("group.created", map[string]any{"gid": "g4", "by": "alice", "name": "team"})
	f.waitSubscribedThenSynced(t, "group/g3/newMessage", "bob")
	f.waitSubscribedThenSynced(t, "group/g4/newMessage", "bob")
	for _, gid := range []string{"g3", "g4"} {
		m := Message{ID: f.gen.Next().String(), From: "alice", Group: gid, CID: NewCID(), Type: "text", Body: "welcome"}
		f.publishGroup(m)
		br.waitCount(t, m.ID, 1)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.subAsked["group/other/newMessage"] != 0 {
		t.Fatal("subscribed to a group someone else joined")
	}
}

// MarkGroupRead posts {group, upTo} to /chat/read; an answer that may
// change (503: the node cannot commit now) is asked again, a refusal
// (404: not a member) is returned at once.
func TestMarkGroupReadAsksAgainOnlyWhileTheServerCannotCommit(t *testing.T) {
	f := newFakeServer(t)
	var mu sync.Mutex
	var bodies []string
	answers := []int{http.StatusServiceUnavailable, http.StatusNoContent, http.StatusNotFound}
	f.set(func(f *fakeServer) {
		f.routes = map[string]http.HandlerFunc{"/chat/read": func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			mu.Lock()
			bodies = append(bodies, r.Method+" "+string(b))
			status := answers[0]
			answers = answers[1:]
			mu.Unlock()
			w.WriteHeader(status)
			if status != http.StatusNoContent {
				_, _ = fmt.Fprintf(w, `{"error":{"code":%q,"message":"x"}}`, map[int]string{503: "unavailable", 404: "not_found"}[status])
			}
		}}
	})
	bob := dialFake(t, f, "bob", nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id := f.gen.Next().String()
	if err := bob.MarkGroupRead(ctx, "g1", id); err != nil {
		t.Fatalf("after one 503: %v", err)
	}
	if err := bob.MarkGroupRead(ctx, "g2", id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("not a member: %v, want ErrNotFound", err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := fmt.Sprintf(`POST {"group":"g1","upTo":%q}`, id)
	if len(bodies) != 3 || bodies[0] != want || bodies[1] != want {
		t.Fatalf("requests %q, want the first twice then one for g2", bodies)
	}
}
