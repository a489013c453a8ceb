package edgechat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
)

// syncOver serves /chat/sync over the fake's store of user with full
// pages (the fake's own pages are 2 messages), counting requests, and
// /chat/sync/end as the server does (positions here are indexes).
func syncOver(f *fakeServer, user string, calls *atomic.Int32) http.HandlerFunc {
	return syncOverAt(f, user, calls, 0)
}

// syncOverAt is syncOver for a server whose clock is ahead of this
// machine's by ahead: its Date header, and the within of /chat/sync/end
// counted back from its now.
func syncOverAt(f *fakeServer, user string, calls *atomic.Int32, ahead time.Duration) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if calls != nil && strings.HasPrefix(r.URL.Path, "/chat/sync") {
			calls.Add(1)
		}
		serverNow := time.Now().Add(ahead)
		w.Header().Set("Date", serverNow.UTC().Format(http.TimeFormat))
		all := f.stored(user)
		if r.URL.Path == "/chat/sync/end" {
			from := len(all)
			if v := r.URL.Query().Get("within"); v != "" {
				secs, _ := strconv.Atoi(v)
				stop := serverNow.Add(-time.Duration(secs)*time.Second - 5*time.Second)
				for from > 0 && !all[from-1].Time.Before(stop) {
					from--
				}
			}
			_ = json.NewEncoder(w).Encode(map[string]any{"cursor": strconv.Itoa(from)})
			return
		}
		since, _ := strconv.Atoi(r.URL.Query().Get("since"))
		limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		since = min(since, len(all))
		end := min(since+limit, len(all))
		_ = json.NewEncoder(w).Encode(map[string]any{"messages": all[since:end], "cursor": strconv.Itoa(end), "hasMore": end < len(all)})
	}
}

// Dial's first catch-up does not page through a long history to find
// its end: it asks where the last minute starts (GET /chat/sync/end)
// and syncs from there, also when the server's clock is ahead.
func TestDialsFirstSyncStartsAtTheLastMinute(t *testing.T) {
	for _, ahead := range []time.Duration{0, time.Hour} {
		t.Run(fmt.Sprint("server ahead ", ahead), func(t *testing.T) {
			f := newFakeServer(t)
			serverNow := time.Now().Add(ahead)
			for i := range 3000 {
				f.storeAt("carol", "bob", fmt.Sprint("old ", i), serverNow.Add(-2*time.Hour))
			}
			// Stamped half an hour ago by a server an hour ahead: after
			// Dial by this machine's clock, so delivered.
			fresh := f.storeAt("carol", "bob", "a moment ago", serverNow.Add(-time.Second-ahead/2))
			var calls atomic.Int32
			api := httptest.NewServer(syncOverAt(f, "bob", &calls, ahead))
			defer api.Close()
			br := newRecorder()
			bob := dialFake(t, f, "bob", br, func(o *Options) { o.HTTPURL = api.URL })
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := bob.flush(ctx); err != nil {
				t.Fatal(err)
			}
			if br.count(fresh.ID) != 1 || br.total() != 1 {
				t.Fatalf("delivered the fresh message %d times (want 1), %d in all (want 1)", br.count(fresh.ID), br.total())
			}
			if bob.Cursor() != "3001" {
				t.Fatalf("cursor %s, want 3001", bob.Cursor())
			}
			// One end (two with the clock apart) and one page, not seven.
			if n := calls.Load(); n > 3 {
				t.Fatalf("%d requests to find the end of 3,001 messages", n)
			}
		})
	}
}

// A client connected for longer than the dedupe window (10,000 IDs)
// and then reconnected hands each message to OnMessage once: the
// catch-up after the reconnection replays only what came since the
// client's last background sync, which the dedupe still remembers.
func TestLongSessionThenReconnectDeliversEachMessageOnce(t *testing.T) {
	f := newFakeServer(t)
	var syncs atomic.Int32
	api := httptest.NewServer(syncOver(f, "bob", &syncs))
	defer api.Close()
	br := newRecorder()
	var ups atomic.Int32
	bob := dialFake(t, f, "bob", br, func(o *Options) {
		o.HTTPURL = api.URL
		o.OnConnectionChange = func(up bool) {
			if up {
				ups.Add(1)
			}
		}
	})
	const n = dedupeCapacity + 100
	var ids []string
	for i := 0; i < n; {
		for j := 0; j < 200 && i < n; j, i = j+1, i+1 {
			m := f.store("carol", "bob", fmt.Sprint(i))
			ids = append(ids, m.ID)
			b, _ := json.Marshal(m)
			_ = f.srv.Publish("user/bob/newMessage", b, false, 1)
		}
		testutil.CheckFor(t, 20*time.Second, 5*time.Millisecond, func() error {
			if got := br.total(); got != i {
				return fmt.Errorf("%d of %d delivered live", got, i)
			}
			return nil
		})
	}
	upsBefore := ups.Load()
	f.cutAll() // a network blip
	// The catch-up after the reconnection ends with the cursor at the
	// end of the store; then everything it queued is dispatched.
	testutil.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if ups.Load() == upsBefore {
			return fmt.Errorf("not reconnected")
		}
		if cur := bob.Cursor(); cur != strconv.Itoa(n) {
			return fmt.Errorf("cursor %s, want %d", cur, n)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bob.flush(ctx); err != nil {
		t.Fatal(err)
	}
	wrong := 0
	var first string
	for _, id := range ids {
		if k := br.count(id); k != 1 {
			if wrong == 0 {
				first = fmt.Sprintf("%s seen %d times", id, k)
			}
			wrong++
		}
	}
	if wrong > 0 {
		t.Fatalf("after one reconnection %d of %d messages did not reach OnMessage exactly once (first: %s); sync requests: %d", wrong, n, first, syncs.Load())
	}
}

// A message committed while the connection drops during Dial's first
// catch-up (after the SUBACK, so not live; before the cursor reaches the
// end, so not in the next catch-up either) is still delivered, once;
// history from long before Dial is not.
func TestDropDuringDialsFirstSyncLosesNothing(t *testing.T) {
	f := newFakeServer(t)
	old := f.storeAt("carol", "bob", "an hour before Dial", time.Now().Add(-time.Hour))
	recent := f.store("carol", "bob", "just before Dial") // within the minute: delivered (documented)
	entered, release := make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	all := syncOver(f, "bob", nil)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("since") == "" && first.CompareAndSwap(false, true) {
			close(entered)
			<-release // a long history being paged through
		}
		all(w, r)
	}))
	defer api.Close()
	br := newRecorder()
	var ups atomic.Int32
	dialed := make(chan *Client, 1)
	go func() {
		dialed <- dialFake(t, f, "bob", br, func(o *Options) {
			o.HTTPURL = api.URL
			o.OnConnectionChange = func(up bool) {
				if up {
					ups.Add(1)
				}
			}
		})
	}()
	testutil.Receive(t, entered, 10*time.Second) // bob is subscribed; the first sync runs
	// Committed now, not live (the fake server delivers nothing live),
	// and then the network blips. Stored before the cut, not after it: a
	// client that reconnected and synced within the few milliseconds
	// between the two (a loaded machine) would have missed it only
	// because the fake never delivers it live (a real server does, to
	// the new subscription).
	missed := f.store("carol", "bob", "sent during the blip")
	f.cutAll()
	close(release)
	bob := testutil.Receive(t, dialed, 10*time.Second)
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if ups.Load() < 2 {
			return fmt.Errorf("not reconnected")
		}
		if n := br.count(missed.ID); n != 1 {
			return fmt.Errorf("message committed during a drop in Dial's first sync delivered %d times, want 1", n)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bob.flush(ctx); err != nil {
		t.Fatal(err)
	}
	if br.count(old.ID) != 0 || br.count(recent.ID) != 1 || br.count(missed.ID) != 1 {
		t.Fatalf("delivered: hour-old %d times (want 0), seconds-old %d (want 1), missed %d (want 1)", br.count(old.ID), br.count(recent.ID), br.count(missed.ID))
	}
}

// The first catch-up's window goes by the server's clock when it is
// behind this machine's: a message the server stamped a moment ago is
// delivered even if this machine's clock is an hour ahead.
func TestDialsFirstSyncGoesByTheEarlierClock(t *testing.T) {
	f := newFakeServer(t)
	serverNow := time.Now().Add(-time.Hour) // this machine is an hour ahead
	old := f.storeAt("carol", "bob", "long before", serverNow.Add(-time.Hour))
	fresh := f.storeAt("carol", "bob", "a moment ago", serverNow.Add(-time.Second))
	api := httptest.NewServer(syncOverAt(f, "bob", nil, -time.Hour))
	defer api.Close()
	br := newRecorder()
	bob := dialFake(t, f, "bob", br, func(o *Options) { o.HTTPURL = api.URL })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bob.flush(ctx); err != nil {
		t.Fatal(err)
	}
	if br.count(fresh.ID) != 1 || br.count(old.ID) != 0 {
		t.Fatalf("delivered: a moment ago (server clock) %d times, want 1; an hour before that %d, want 0", br.count(fresh.ID), br.count(old.ID))
	}
}

// A sync page may be empty and not the last (the server skipped what the
// user may no longer read): the client pages on while the cursor moves,
// and stops, rather than loop, when it does not.
func TestSyncPagesPastAnEmptyPage(t *testing.T) {
	f := newFakeServer(t)
	m := f.store("carol", "bob", "after an empty page")
	var stuck atomic.Int32
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		page := map[string]any{"messages": []Message{}, "cursor": "5", "hasMore": true}
		switch r.URL.Query().Get("since") {
		case "5":
			page = map[string]any{"messages": []Message{m}, "cursor": "6", "hasMore": false}
		case "6":
			stuck.Add(1) // a server that claims more without moving on
			page = map[string]any{"messages": []Message{}, "cursor": "6", "hasMore": true}
		}
		_ = json.NewEncoder(w).Encode(page)
	}))
	defer api.Close()
	br := newRecorder()
	bob := dialFake(t, f, "bob", br, func(o *Options) { o.HTTPURL = api.URL; o.SyncFromStart = true })
	br.waitCount(t, m.ID, 1)
	if bob.Cursor() != "6" {
		t.Fatalf("cursor %q, want 6", bob.Cursor())
	}
	bob.requestSync() // from 6: hasMore, but the cursor stays
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if stuck.Load() == 0 {
			return fmt.Errorf("no sync from 6 yet")
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bob.flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := stuck.Load(); n != 1 {
		t.Fatalf("asked %d times from a cursor that does not move, want 1", n)
	}
}

// A machine whose clock is more than a week behind the server's (a
// device that lost its date) still dials: the window the first sync
// would need (a minute before Dial by the earlier clock, widened by the
// server's lead) is longer than GET /chat/sync/end allows (within is at
// most a week), so the client syncs from the beginning, as with a server
// without that call, and delivers what is younger than a minute before
// Dial by its own clock. Before, it asked for the longer window, was
// refused (400) and retried for good: Dial never returned.
func TestDialsFirstSyncWithAClockMoreThanAWeekBehind(t *testing.T) {
	f := newFakeServer(t)
	const ahead = 8 * 24 * time.Hour // the server's clock is 8 days ahead of this machine's
	serverNow := time.Now().Add(ahead)
	old := f.storeAt("carol", "bob", "a month ago", serverNow.Add(-30*24*time.Hour))
	fresh := f.storeAt("carol", "bob", "a moment ago", serverNow.Add(-time.Second))
	serve := syncOverAt(f, "bob", nil, ahead)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v := r.URL.Query().Get("within"); r.URL.Path == "/chat/sync/end" && v != "" {
			if n, err := strconv.Atoi(v); err != nil || n < 1 || n > 604800 {
				w.WriteHeader(http.StatusBadRequest) // as the server refuses it
				_, _ = w.Write([]byte(`{"error":{"code":"validation_failed","message":"within must be a number of seconds from 1 to 604800"}}`))
				return
			}
		}
		serve(w, r)
	}))
	defer api.Close()
	br := newRecorder()
	bob := dialFake(t, f, "bob", br, func(o *Options) { o.HTTPURL = api.URL })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bob.flush(ctx); err != nil {
		t.Fatal(err)
	}
	if br.count(fresh.ID) != 1 || br.count(old.ID) != 0 {
		t.Fatalf("delivered: a moment ago %d times, want 1; a month ago %d, want 0", br.count(fresh.ID), br.count(old.ID))
	}
}

// A client resumed from a saved cursor (Options.Cursor) delivers every
// message after it, also those created long before Dial (the app was
// away for an hour), and nothing before it; it asks for no end of the
// stream.
func TestResumeFromCursorDeliversWhatCameAfterItHoweverOld(t *testing.T) {
	f := newFakeServer(t)
	had := f.storeAt("carol", "bob", "read before the app stopped", time.Now().Add(-2*time.Hour))
	away := f.storeAt("carol", "bob", "sent an hour ago, while away", time.Now().Add(-time.Hour))
	recent := f.store("carol", "bob", "sent just now")
	var calls atomic.Int32
	serve := syncOver(f, "bob", nil)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/chat/sync/end" {
			calls.Add(1)
		}
		serve(w, r)
	}))
	defer api.Close()
	br := newRecorder()
	bob := dialFake(t, f, "bob", br, func(o *Options) { o.HTTPURL = api.URL; o.Cursor = "1" })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bob.flush(ctx); err != nil {
		t.Fatal(err)
	}
	if br.count(had.ID) != 0 || br.count(away.ID) != 1 || br.count(recent.ID) != 1 || br.total() != 2 {
		t.Fatalf("delivered: before the cursor %d times (want 0), an hour old after it %d (want 1), recent %d (want 1); %d in all",
			br.count(had.ID), br.count(away.ID), br.count(recent.ID), br.total())
	}
	if bob.Cursor() != "3" || calls.Load() != 0 {
		t.Fatalf("cursor %s (want 3), %d requests for the end of the stream (want 0)", bob.Cursor(), calls.Load())
	}
}

// Live messages do not move the cursor; Sync does, and returns once what
// it found was handed to OnMessage: each message once.
func TestSyncMovesTheCursorPastLiveMessages(t *testing.T) {
	f := newFakeServer(t)
	br := newRecorder()
	bob := dialFake(t, f, "bob", br, nil)
	start := bob.Cursor()
	var live []Message
	for i := range 3 {
		m := f.store("carol", "bob", fmt.Sprint("live ", i))
		f.deliver(m)
		live = append(live, m)
	}
	for _, m := range live {
		br.waitCount(t, m.ID, 1)
	}
	if bob.Cursor() != start {
		t.Fatalf("cursor moved from %s to %s without a sync", start, bob.Cursor())
	}
	missed := f.store("carol", "bob", "committed, never live") // only a sync brings it
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bob.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if bob.Cursor() != "4" {
		t.Fatalf("cursor after Sync %s, want 4", bob.Cursor())
	}
	if br.count(missed.ID) != 1 {
		t.Fatalf("Sync returned before the message it found was delivered (%d times)", br.count(missed.ID))
	}
	for _, m := range live {
		if k := br.count(m.ID); k != 1 {
			t.Fatalf("live message delivered %d times after Sync", k)
		}
	}
	_ = bob.Close()
	if err := bob.Sync(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Sync after Close: %v, want ErrClosed", err)
	}
}

// A message that arrives live while a long catch-up runs (a client
// resuming from an old cursor, or back after a long time away) comes
// again when the catch-up reaches it: it is delivered once, however many
// messages the catch-up hands over before it (here more than the 10,000
// IDs the dedupe remembers).
func TestLiveMessageDuringALongCatchUpIsDeliveredOnce(t *testing.T) {
	f := newFakeServer(t)
	for i := range dedupeCapacity {
		f.storeAt("carol", "bob", fmt.Sprint("while away ", i), time.Now().Add(-time.Hour+time.Duration(i)*time.Millisecond))
	}
	live := f.store("carol", "bob", "committed during the catch-up, delivered live")
	br := newRecorder()
	gotLive := make(chan struct{})
	var once sync.Once
	serve := syncOver(f, "bob", nil)
	var first atomic.Bool
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/chat/sync" && first.CompareAndSwap(false, true) {
			// The catch-up's first request: the newest message comes
			// live (the client is subscribed) and reaches OnMessage
			// before any page is answered.
			f.deliver(live)
			select {
			case <-gotLive:
			case <-r.Context().Done():
			}
		}
		serve(w, r)
	}))
	defer api.Close()
	bob := dialFake(t, f, "bob", br, func(o *Options) {
		o.HTTPURL, o.Cursor = api.URL, "0"
		o.OnMessage = func(m Message) {
			br.onMessage(m)
			if m.ID == live.ID {
				once.Do(func() { close(gotLive) })
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bob.flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n, total := br.count(live.ID), br.total(); n != 1 || total != dedupeCapacity+1 {
		t.Fatalf("the live message was delivered %d times (want 1); %d messages in all (want %d)", n, total, dedupeCapacity+1)
	}
}

// Sync returns the server's refusal of the client's credentials (401:
// the session ended, the token expired) rather than ask again until the
// caller's context ends: only a server that cannot answer for now is
// asked again.
func TestSyncReturnsARefusalOfTheCredentials(t *testing.T) {
	f := newFakeServer(t)
	bob := dialFake(t, f, "bob", nil, nil)
	f.set(func(f *fakeServer) {
		f.routes = map[string]http.HandlerFunc{"/chat/sync": func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":{"code":"unauthorized","message":"session ended"}}`))
		}}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := bob.Sync(ctx); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("Sync with its token refused: %v, want ErrUnauthorized", err)
	}
}
