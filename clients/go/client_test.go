package edgechat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
)

func TestBrokerURLs(t *testing.T) {
	got, err := brokerURLs([]string{"ws://h:8080", "WSS://h/x/mqtt", "tcp://h", "mqtt://h:1", "mqtts://h", "tls://[::1]"})
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, u := range got {
		s = append(s, u.String())
	}
	want := []string{"ws://h:8080/mqtt", "wss://h/x/mqtt", "tcp://h:1883", "mqtt://h:1", "mqtts://h:8883", "tls://[::1]:8883"}
	if !slices.Equal(s, want) {
		t.Fatalf("got %v, want %v", s, want)
	}
	for _, bad := range [][]string{nil, {"http://h"}, {"ws://"}, {"::"}} {
		if _, err := brokerURLs(bad); !errors.Is(err, ErrBadOptions) {
			t.Errorf("%v: err %v, want ErrBadOptions", bad, err)
		}
	}
}

func TestHTTPURLDerivation(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
	}{
		{[]string{"ws://h:8080/mqtt"}, "http://h:8080"},
		{[]string{"tcp://h:1883", "wss://h/edge/mqtt"}, "https://h/edge"},
		{[]string{"ws://h:1"}, "http://h:1"},
	} {
		urls, err := brokerURLs(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		got, err := httpURLFromBroker(urls)
		if err != nil || got != tc.want {
			t.Errorf("%v: got %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	urls, _ := brokerURLs([]string{"tcp://h"})
	if _, err := httpURLFromBroker(urls); !errors.Is(err, ErrBadOptions) {
		t.Errorf("tcp only: err %v, want ErrBadOptions", err)
	}
	for in, want := range map[string]string{"http://h:8080": "ws://h:8080/mqtt", "https://h/": "wss://h/mqtt", "http://h/x": "ws://h/x/mqtt"} {
		if got, err := WebSocketURL(in); err != nil || got != want {
			t.Errorf("WebSocketURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"ftp://h", "h:8080", "http://"} {
		if _, err := WebSocketURL(bad); !errors.Is(err, ErrBadOptions) {
			t.Errorf("WebSocketURL(%q): err %v, want ErrBadOptions", bad, err)
		}
	}
}

func TestTokenSubject(t *testing.T) {
	if sub, err := TokenSubject(fakeJWT("alice")); err != nil || sub != "alice" {
		t.Fatalf("got %q, %v", sub, err)
	}
	// Some issuers pad the base64; accept it.
	padded := "e30." + "eyJzdWIiOiJib2IifQ==" + ".x"
	if sub, err := TokenSubject(padded); err != nil || sub != "bob" {
		t.Fatalf("padded: got %q, %v", sub, err)
	}
	for _, bad := range []string{"", "a.b", "a.!!!.c", "a." + "bm90IGpzb24" + ".c", "a.e30.c"} {
		if _, err := TokenSubject(bad); !errors.Is(err, ErrBadToken) {
			t.Errorf("%q: err %v, want ErrBadToken", bad, err)
		}
	}
}

func TestIDSet(t *testing.T) {
	s := newIDSet(3)
	for _, id := range []string{"1", "2", "3"} {
		if !s.Add(id) {
			t.Fatalf("%s reported as seen", id)
		}
	}
	if s.Add("2") {
		t.Fatal("duplicate 2 accepted")
	}
	s.Add("4") // evicts the oldest, 1
	if s.Has("1") || !s.Has("2") || !s.Has("4") || s.Len() != 3 {
		t.Fatalf("eviction wrong: has1=%v has2=%v has4=%v len=%d", s.Has("1"), s.Has("2"), s.Has("4"), s.Len())
	}
	if !s.Add("1") {
		t.Fatal("evicted 1 should be new again")
	}
}

func TestMessageJSONAndIDs(t *testing.T) {
	var m Message
	if err := json.Unmarshal([]byte(`{"id":"7211938138472448001","from":"alice","to":"bob","cid":"c1","type":"text","body":"hi"}`), &m); err != nil {
		t.Fatal(err)
	}
	if m.Time.IsZero() || m.Time.Year() < 2024 {
		t.Fatalf("time not filled from the ID: %v", m.Time)
	}
	if m.Peer("alice") != "bob" || m.Peer("bob") != "alice" {
		t.Fatal("Peer wrong")
	}
	if CompareIDs("10", "9") != 1 || CompareIDs("9", "10") != -1 || CompareIDs("", "9") != 1 || CompareIDs("5", "5") != 0 {
		t.Fatal("CompareIDs wrong")
	}
}

func TestLoginAndErrors(t *testing.T) {
	var refreshSeen []string
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]string
		_ = json.NewDecoder(r.Body).Decode(&body)
		switch r.URL.Path {
		case "/auth/login":
			if body["password"] != "pw" {
				w.WriteHeader(401)
				_, _ = w.Write([]byte(`{"error":{"code":"bad_credentials","message":"wrong username or password"}}`))
				return
			}
			_ = json.NewEncoder(w).Encode(map[string]any{"accessToken": fakeJWT("alice"), "refreshToken": "r0", "expiresIn": 1})
		case "/auth/refresh":
			mu.Lock()
			refreshSeen = append(refreshSeen, body["refreshToken"])
			n++
			next := fmt.Sprintf("r%d", n)
			mu.Unlock()
			_ = json.NewEncoder(w).Encode(map[string]any{"accessToken": fakeJWT("alice"), "refreshToken": next, "expiresIn": 1, "userId": "alice"})
		}
	}))
	defer srv.Close()
	ctx := context.Background()

	_, err := Login(ctx, srv.URL, "alice", "nope")
	var ae *APIError
	if !errors.As(err, &ae) || ae.Code != "bad_credentials" || !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("bad password: %v", err)
	}
	tok, err := Login(ctx, srv.URL, "alice", "pw")
	if err != nil || tok.UserID != "alice" || tok.Expiry.IsZero() {
		t.Fatalf("login: %+v, %v", tok, err)
	}
	// With the clock an hour ahead every token has expired: each call
	// must rotate, always with the newest refresh token.
	var saved []Tokens
	r := &refresher{urls: []string{srv.URL}, cur: tok, onRefresh: func(t Tokens) { saved = append(saved, t) },
		now: func() time.Time { return time.Now().Add(time.Hour) }}
	for range 3 {
		if _, err := r.token(ctx); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(refreshSeen, []string{"r0", "r1", "r2"}) || len(saved) != 3 || saved[2].RefreshToken != "r3" {
		t.Fatalf("refresh chain %v, saved %d", refreshSeen, len(saved))
	}
}

func TestRefresherKeepsFreshToken(t *testing.T) {
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { calls++ }))
	defer srv.Close()
	ts := RefreshingTokenSource(srv.URL, Tokens{AccessToken: "a", RefreshToken: "r", ExpiresIn: 3600, Expiry: time.Now().Add(time.Hour)}, nil)
	if tok, err := ts(context.Background()); err != nil || tok != "a" || calls != 0 {
		t.Fatalf("got %q, %v after %d calls; want the cached token", tok, err, calls)
	}
}

func dialFake(t *testing.T, f *fakeServer, user string, rec *recorder, mod func(*Options)) *Client {
	t.Helper()
	o := Options{
		URLs:              []string{f.tcpURL},
		HTTPURL:           f.httpURL,
		Token:             fakeJWT(user),
		HeartbeatInterval: -1,
		EchoWait:          2 * time.Second,
	}
	if rec != nil {
		o.OnMessage = rec.onMessage
		o.OnConnectionChange = rec.onConn
	}
	if mod != nil {
		mod(&o)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, o)
	if err != nil {
		t.Fatalf("dial %s: %v", user, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestDialValidation(t *testing.T) {
	// A bound, for an option that passes unchecked: Dial then tries to
	// connect to h until it ends.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for name, o := range map[string]Options{
		"no urls":      {Token: fakeJWT("alice")},
		"no token":     {URLs: []string{"ws://h/mqtt"}},
		"tcp no http":  {URLs: []string{"tcp://h"}, Token: fakeJWT("alice")},
		"bad device":   {URLs: []string{"ws://h/mqtt"}, Token: fakeJWT("alice"), Device: "a/b"},
		"bad http url": {URLs: []string{"tcp://h"}, HTTPURL: "ftp://x", Token: fakeJWT("alice")},
		// The server refuses a device ID with a control character (0x85),
		// which Dial would report as ErrUnauthorized: sign in again.
		"control character in device": {URLs: []string{"ws://h/mqtt"}, Token: fakeJWT("alice"), Device: "phone\t2"},
		"C1 control in device":        {URLs: []string{"ws://h/mqtt"}, Token: fakeJWT("alice"), Device: "phone\u0085"},
		"bidi control in device":      {URLs: []string{"ws://h/mqtt"}, Token: fakeJWT("alice"), Device: "enohp\u202e"},
	} {
		if _, err := Dial(ctx, o); !errors.Is(err, ErrBadOptions) {
			t.Errorf("%s: err %v, want ErrBadOptions", name, err)
		}
	}
	if _, err := Dial(ctx, Options{URLs: []string{"ws://h/mqtt"}, Token: "garbage"}); !errors.Is(err, ErrBadToken) {
		t.Errorf("garbage token: %v", err)
	}
}

func TestDialRefusedFailsFast(t *testing.T) {
	f := newFakeServer(t)
	f.set(func(f *fakeServer) { f.denyAuth = true })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := Dial(ctx, Options{URLs: []string{f.tcpURL}, HTTPURL: f.httpURL, Token: fakeJWT("alice")})
	if !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("err %v, want ErrUnauthorized", err)
	}
	if ctx.Err() != nil {
		t.Fatal("Dial waited for the context instead of failing fast")
	}
}

func TestSendDeliversOnceWithID(t *testing.T) {
	f := newFakeServer(t)
	ar, br := newRecorder(), newRecorder()
	alice := dialFake(t, f, "alice", ar, nil)
	dialFake(t, f, "bob", br, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := alice.Send(ctx, "bob", "hello")
	if err != nil {
		t.Fatal(err)
	}
	if m.ID == "" || m.From != "alice" || m.To != "bob" || m.Body != "hello" || m.Time.IsZero() {
		t.Fatalf("returned %+v", m)
	}
	br.waitCount(t, m.ID, 1)
	ar.waitCount(t, m.ID, 1) // my own copy, for my other devices and for reconciliation
	if alice.UserID() != "alice" || alice.ClientID()[:6] != "alice/" {
		t.Fatalf("identity %q %q", alice.UserID(), alice.ClientID())
	}
}

func TestSendRejectsBadInput(t *testing.T) {
	f := newFakeServer(t)
	alice := dialFake(t, f, "alice", nil, nil)
	ctx := context.Background()
	for name, m := range map[string]Message{
		"bad recipient": {To: "Bob!", Body: "x"},
		"empty body":    {To: "bob"},
		"huge body":     {To: "bob", Body: string(make([]byte, MaxBodyBytes+1))},
		"bad utf8":      {To: "bob", Body: "\xff"},
		"long cid":      {To: "bob", Body: "x", CID: string(make([]byte, 65))},
	} {
		if _, err := alice.SendMessage(ctx, m); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: err %v", name, err)
		}
	}
	if err := alice.MarkRead(ctx, "bob", "not-an-id"); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("MarkRead bad id: %v", err)
	}
	if n := len(f.stored("bob")); n != 0 {
		t.Fatalf("bad input stored %d messages", n)
	}
}

func TestSendRefusedIsNotRetried(t *testing.T) {
	f := newFakeServer(t)
	f.set(func(f *fakeServer) { f.decide = func(string, int) fakeAction { return fakeAction{refuse: 0x90} } })
	alice := dialFake(t, f, "alice", nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := alice.SendMessage(ctx, Message{To: "nobody", Body: "x", CID: "c-refused"})
	var pe *PublishError
	if !errors.Is(err, ErrUnknownRecipient) || !errors.As(err, &pe) || pe.Reason != 0x90 || m.ID != "" {
		t.Fatalf("got %+v, %v", m, err)
	}
	f.mu.Lock()
	n := f.attempts["c-refused"]
	f.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d attempts, want 1", n)
	}
}

func TestSendRetriesUnavailable(t *testing.T) {
	f := newFakeServer(t)
	f.set(func(f *fakeServer) {
		f.decide = func(_ string, attempt int) fakeAction {
			if attempt <= 2 {
				return fakeAction{refuse: 0x83}
			}
			return fakeAction{}
		}
	})
	br := newRecorder()
	alice := dialFake(t, f, "alice", nil, nil)
	dialFake(t, f, "bob", br, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := alice.SendMessage(ctx, Message{To: "bob", Body: "x", CID: "c-retry"})
	if err != nil || m.ID == "" {
		t.Fatalf("got %+v, %v", m, err)
	}
	f.mu.Lock()
	n := f.attempts["c-retry"]
	f.mu.Unlock()
	if n != 3 {
		t.Fatalf("%d attempts, want 3", n)
	}
	br.waitCount(t, m.ID, 1)
}

// The first attempt is committed but the connection dies before the
// PUBACK: Send must retry with the same cid, the server stores it once,
// and the recipient sees it once.
func TestSendSurvivesDropAfterCommit(t *testing.T) {
	f := newFakeServer(t)
	f.set(func(f *fakeServer) {
		f.decide = func(_ string, attempt int) fakeAction { return fakeAction{dropAfterCommit: attempt == 1} }
	})
	ar, br := newRecorder(), newRecorder()
	alice := dialFake(t, f, "alice", ar, nil)
	dialFake(t, f, "bob", br, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	m, err := alice.SendMessage(ctx, Message{To: "bob", Body: "once", CID: "c-drop"})
	if err != nil {
		t.Fatal(err)
	}
	if got := f.stored("bob"); len(got) != 1 || got[0].CID != "c-drop" {
		t.Fatalf("stored %+v", got)
	}
	id := f.stored("bob")[0].ID
	if m.ID != "" && m.ID != id {
		t.Fatalf("Send returned id %s, stored %s", m.ID, id)
	}
	br.waitCount(t, id, 1)
	ar.waitCount(t, id, 1) // via live echo or catch-up, but once
	f.mu.Lock()
	n := f.attempts["c-drop"]
	f.mu.Unlock()
	if n < 2 {
		t.Fatalf("%d attempts, want a retry", n)
	}
}

// Without the echo, Send still succeeds once acknowledged, with no ID.
func TestSendWithoutEcho(t *testing.T) {
	f := newFakeServer(t)
	f.set(func(f *fakeServer) { f.decide = func(string, int) fakeAction { return fakeAction{noEcho: true} } })
	alice := dialFake(t, f, "alice", nil, func(o *Options) { o.EchoWait = 50 * time.Millisecond })
	m, err := alice.Send(context.Background(), "bob", "quiet")
	if err != nil || m.ID != "" || m.CID == "" || m.Body != "quiet" {
		t.Fatalf("got %+v, %v", m, err)
	}
}

func TestSendWaitsForReconnection(t *testing.T) {
	f := newFakeServer(t)
	br := newRecorder()
	var logbuf testutil.SyncBuffer
	ar := newRecorder()
	alice := dialFake(t, f, "alice", ar, func(o *Options) {
		o.Logger = slog.New(slog.NewTextHandler(&logbuf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	dialFake(t, f, "bob", br, nil)
	f.cutAll()
	defer func() {
		if t.Failed() {
			t.Log(logbuf.String(), ar.bodies(), f.stored("alice"))
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	m, err := alice.Send(ctx, "bob", "after the cut")
	if err != nil {
		t.Fatal(err)
	}
	if got := f.stored("bob"); len(got) != 1 || got[0].CID != m.CID {
		t.Fatalf("stored %+v", got)
	}
	id := f.stored("bob")[0].ID
	br.waitCount(t, id, 1)
	ar.waitCount(t, id, 1)
	if m.ID != id {
		// Allowed by the contract (the echo may come later than EchoWait),
		// but not expected on loopback.
		t.Logf("Send returned before the echo: %+v", m)
	}
}

func TestFakeCatchUpAfterReconnect(t *testing.T) {
	f := newFakeServer(t)
	// History from (more than a minute) before Dial is not replayed.
	old := f.storeAt("carol", "bob", "old", time.Now().Add(-time.Hour))
	br := newRecorder()
	bob := dialFake(t, f, "bob", br, nil)
	if bob.Cursor() != "1" {
		t.Fatalf("cursor after Dial %q, want 1", bob.Cursor())
	}
	// A live message, then a drop, then messages stored while down.
	alice := dialFake(t, f, "alice", nil, nil)
	live, err := alice.Send(context.Background(), "bob", "live")
	if err != nil {
		t.Fatal(err)
	}
	br.waitCount(t, live.ID, 1)

	f.set(func(f *fakeServer) { f.paused = true })
	f.cutAll()
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		br.mu.Lock()
		defer br.mu.Unlock()
		if !slices.Contains(br.conn, false) {
			return errors.New("no disconnect seen")
		}
		return nil
	})
	var missed []Message
	for i := range 5 {
		missed = append(missed, f.store("carol", "bob", fmt.Sprintf("missed %d", i)))
	}
	f.set(func(f *fakeServer) { f.paused = false })
	for _, m := range missed {
		br.waitCount(t, m.ID, 1)
	}
	// The live one is in the sync pages too (cursor 1 predates it): still once.
	if br.count(live.ID) != 1 || br.count(old.ID) != 0 {
		t.Fatalf("live seen %d, old seen %d", br.count(live.ID), br.count(old.ID))
	}
	want := []string{"live", "missed 0", "missed 1", "missed 2", "missed 3", "missed 4"}
	if got := br.bodies(); !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v", got, want)
	}
	if bob.Cursor() != "7" {
		t.Fatalf("cursor %q, want 7", bob.Cursor())
	}
}

func TestSyncFromStart(t *testing.T) {
	f := newFakeServer(t)
	for i := range 3 {
		f.store("carol", "bob", fmt.Sprint(i))
	}
	br := newRecorder()
	dialFake(t, f, "bob", br, func(o *Options) { o.SyncFromStart = true })
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if got := br.bodies(); !slices.Equal(got, []string{"0", "1", "2"}) {
			return fmt.Errorf("delivered %v", got)
		}
		return nil
	})
}

// A slow OnMessage must not stall the MQTT connection: while bob's
// callback is stuck, his client must still read PUBACKs (paho reads all
// packets on one goroutine, so a blocking router would hang his Send).
func TestSlowCallbackDoesNotBlockRouter(t *testing.T) {
	f := newFakeServer(t)
	release := make(chan struct{})
	var got atomic.Int32
	bob := dialFake(t, f, "bob", nil, func(o *Options) {
		o.OnMessage = func(m Message) {
			if m.From == "alice" {
				<-release
			}
			got.Add(1)
		}
	})
	alice := dialFake(t, f, "alice", nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 5 {
		if _, err := alice.Send(ctx, "bob", fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n := len(f.stored("bob")); n != 5 {
			return fmt.Errorf("%d stored", n)
		}
		return nil
	})
	bctx, bcancel := context.WithTimeout(ctx, 5*time.Second)
	defer bcancel()
	if _, err := bob.SendMessage(bctx, Message{To: "alice", Body: "while blocked"}); err != nil {
		t.Fatalf("bob's send while his callback is blocked: %v", err)
	}
	close(release)
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := got.Load(); n != 6 {
			return fmt.Errorf("%d delivered", n)
		}
		return nil
	})
}

// A read answered 503 by a node that cannot reach its leader is asked
// of the next node, and the client stays there; when every node answers
// 503 the caller gets that answer.
func TestReadsMoveOnFromANodeThatCannotReachItsLeader(t *testing.T) {
	var cutOffCalls, healthyCalls atomic.Int32
	cutOff := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cutOffCalls.Add(1)
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"error":{"code":"unavailable","message":"cannot read now"}}`))
	}))
	defer cutOff.Close()
	healthy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		healthyCalls.Add(1)
		_, _ = w.Write([]byte(`{"conversations":[{"peer":"bob","lastId":"1"}]}`))
	}))
	defer healthy.Close()

	c := &Client{opts: Options{Token: "t"}, hc: http.DefaultClient, httpURLs: []string{cutOff.URL, healthy.URL}}
	convs, err := c.Conversations(context.Background())
	if err != nil || len(convs) != 1 {
		t.Fatalf("conversations: %+v %v", convs, err)
	}
	if _, err := c.Conversations(context.Background()); err != nil {
		t.Fatal(err)
	}
	if cutOffCalls.Load() != 1 || healthyCalls.Load() != 2 {
		t.Fatalf("calls: cut-off node %d, healthy node %d; want 1 and 2 (the client stays on the node that answered)", cutOffCalls.Load(), healthyCalls.Load())
	}

	c2 := &Client{opts: Options{Token: "t"}, hc: http.DefaultClient, httpURLs: []string{cutOff.URL, cutOff.URL}}
	var ae *APIError
	if _, err := c2.Conversations(context.Background()); !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable || ae.RetryAfter != time.Second {
		t.Fatalf("every node 503: %v", err)
	}
}

// A presence subscription the server cannot check for now (0x83: its node
// is catching up with the cluster) is asked again until granted; one it
// refuses (0x87) is ErrForbidden and no longer watched.
func TestWatchPresenceAsksAgainWhileTheServerCannotCheck(t *testing.T) {
	f := newFakeServer(t)
	f.set(func(f *fakeServer) {
		f.subAnswers = map[string][]byte{"presence/bob": {0x83, 0x83}, "presence/carol": {0x87}}
	})
	alice := dialFake(t, f, "alice", nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := alice.WatchPresence(ctx, "bob"); err != nil {
		t.Fatalf("WatchPresence(bob): %v", err)
	}
	if err := alice.WatchPresence(ctx, "carol"); !errors.Is(err, ErrForbidden) {
		t.Fatalf("WatchPresence(carol): %v, want ErrForbidden", err)
	}
	f.mu.Lock()
	bob, carol := f.subAsked["presence/bob"], f.subAsked["presence/carol"]
	f.mu.Unlock()
	if bob != 3 || carol != 1 {
		t.Fatalf("SUBSCRIBEs: bob %d (want 3: two retries), carol %d (want 1)", bob, carol)
	}
	alice.mu.Lock()
	_, watchingBob := alice.watched["bob"]
	_, watchingCarol := alice.watched["carol"]
	alice.mu.Unlock()
	if !watchingBob || watchingCarol {
		t.Fatalf("watched: bob %v carol %v, want true false", watchingBob, watchingCarol)
	}
}

// A WatchPresence whose connection drops before the SUBACK returns nil,
// as one called while disconnected does: the user stays watched and the
// next connection subscribes (it does not wait for paho's packet
// timeout and report that as the caller's deadline). One that Close
// cuts short says ErrClosed.
func TestWatchPresenceWhenTheConnectionDropsOrTheClientCloses(t *testing.T) {
	f := newFakeServer(t)
	f.set(func(f *fakeServer) {
		f.subCuts = map[string]int{"presence/bob": 1}
		f.subAnswers = map[string][]byte{"presence/carol": {0x83, 0x83, 0x83, 0x83, 0x83, 0x83, 0x83, 0x83}}
	})
	alice := dialFake(t, f, "alice", nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := alice.WatchPresence(ctx, "bob"); err != nil {
		t.Fatalf("WatchPresence(bob) cut before its SUBACK: %v, want nil", err)
	}
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		f.mu.Lock()
		defer f.mu.Unlock()
		if n := f.subAsked["presence/bob"]; n < 2 {
			return fmt.Errorf("presence/bob asked %d times, want the reconnection's too", n)
		}
		return nil
	})
	done := make(chan error, 1)
	go func() { done <- alice.WatchPresence(ctx, "carol") }()
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.subAsked["presence/carol"] == 0 {
			return errors.New("presence/carol not asked yet")
		}
		return nil
	})
	_ = alice.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("WatchPresence cut short by Close: %v, want ErrClosed", err)
	}
}

// A user watched while a reconnection subscribes (after it listed the
// watched users, before it is ready: WatchPresence only records the
// wish then) is subscribed on that connection, not only on the next.
func TestWatchPresenceDuringAReconnectionsSubscribe(t *testing.T) {
	f := newFakeServer(t)
	alice := dialFake(t, f, "alice", nil, nil)
	hold := make(chan struct{})
	f.set(func(f *fakeServer) {
		f.subHold = map[string]chan struct{}{"user/alice/#": hold}
		f.subHeld = make(chan string, 1)
	})
	f.cutAll()
	<-f.subHeld // the reconnection's SUBSCRIBE is in, its SUBACK held
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := alice.WatchPresence(ctx, "carol"); err != nil {
		t.Fatal(err)
	}
	close(hold)
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.subAsked["presence/carol"] == 0 {
			return errors.New("presence/carol not subscribed on the reconnection")
		}
		return nil
	})
}

// The converse: a user no longer watched by the time that reconnection
// is ready is unsubscribed again (the reconnection had listed them).
func TestUnwatchPresenceDuringAReconnectionsSubscribe(t *testing.T) {
	f := newFakeServer(t)
	alice := dialFake(t, f, "alice", nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := alice.WatchPresence(ctx, "carol"); err != nil {
		t.Fatal(err)
	}
	hold := make(chan struct{})
	f.set(func(f *fakeServer) {
		f.subHold = map[string]chan struct{}{"user/alice/#": hold}
		f.subHeld = make(chan string, 1)
	})
	f.cutAll()
	<-f.subHeld
	if err := alice.UnwatchPresence(ctx, "carol"); err != nil {
		t.Fatal(err)
	}
	close(hold)
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		f.mu.Lock()
		defer f.mu.Unlock()
		// After the reconnection's SUBSCRIBE (the cut ends the first
		// connection's subscriptions too, which the trace records).
		again := slices.Index(f.trace[1:], "sub:user/alice/#")
		if again < 0 || !slices.Contains(f.trace[again+1:], "unsub:presence/carol") {
			return fmt.Errorf("presence/carol still subscribed on the reconnection: %v", f.trace)
		}
		return nil
	})
}

// Login sends a sign-in again, with the same Idempotency-Key, while the
// node answers 503 (it cannot reach its leader), and gives up at once on
// an answer that is final (401).
func TestLoginRetriesUnavailableWithItsKey(t *testing.T) {
	var mu sync.Mutex
	var keys []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]string
		_ = json.NewDecoder(r.Body).Decode(&body)
		mu.Lock()
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		first := len(keys) == 1
		mu.Unlock()
		switch {
		case body["password"] != "pw":
			w.WriteHeader(http.StatusUnauthorized)
		case first:
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			_ = json.NewEncoder(w).Encode(map[string]any{"accessToken": fakeJWT("alice"), "refreshToken": "r0", "expiresIn": 60})
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	if tok, err := Login(ctx, srv.URL, "alice", "pw"); err != nil || tok.UserID != "alice" {
		t.Fatalf("login after a 503: %+v, %v", tok, err)
	}
	mu.Lock()
	if len(keys) != 2 || keys[0] == "" || keys[0] != keys[1] {
		t.Fatalf("Idempotency-Keys sent %q, want one key twice", keys)
	}
	keys = nil
	mu.Unlock()
	if _, err := Login(ctx, srv.URL, "alice", "nope"); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("wrong password: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(keys) != 1 {
		t.Fatalf("a refused password was sent %d times", len(keys))
	}
}

// A send whose PUBACK carries the new message's ID waits for its stored
// copy only; one acknowledged without (a CID stored before, which the
// server does not deliver again) reads the original through the API,
// which answers a send of a stored CID with it.
func TestResendOfAStoredCIDAsksTheAPIForTheOriginal(t *testing.T) {
	f := newFakeServer(t)
	var asked atomic.Int32
	f.set(func(f *fakeServer) {
		f.routes = map[string]http.HandlerFunc{"/chat/messages": func(w http.ResponseWriter, r *http.Request) {
			asked.Add(1)
			var in struct {
				CID string `json:"cid"`
			}
			_ = json.NewDecoder(r.Body).Decode(&in)
			f.mu.Lock()
			m, ok := f.byCID["alice/"+in.CID]
			f.mu.Unlock()
			if !ok {
				w.WriteHeader(http.StatusInternalServerError) // the fake stores over MQTT only
				return
			}
			_ = json.NewEncoder(w).Encode(m)
		}}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	first, err := dialFake(t, f, "alice", nil, nil).Send(ctx, "bob", "hello")
	if err != nil || first.ID == "" {
		t.Fatalf("first send: %+v, %v", first, err)
	}
	if n := asked.Load(); n != 0 {
		t.Fatalf("a new message asked the API %d times", n)
	}
	again, err := dialFake(t, f, "alice", nil, nil).SendMessage(ctx, Message{To: "bob", Body: "hello", CID: first.CID})
	if err != nil {
		t.Fatal(err)
	}
	if again.ID != first.ID || asked.Load() != 1 {
		t.Fatalf("resent: id %q (want %q), API asked %d times (want 1)", again.ID, first.ID, asked.Load())
	}
}

// Every HTTP call of the client maps the API's error statuses onto the
// sentinel errors the package documents, as WatchPresence's refusal is
// ErrForbidden: 401 ErrUnauthorized, 403 ErrForbidden (an ErrRefused),
// 404 ErrNotFound, 429 ErrRateLimited, 503 ErrUnavailable, each still an
// *APIError with its status and Retry-After.
func TestAPIErrorStatusesMatchTheirSentinels(t *testing.T) {
	f := newFakeServer(t)
	var status atomic.Int32
	status.Store(200) // while Dial lists the groups
	answer := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "7")
		w.WriteHeader(int(status.Load()))
		_, _ = io.WriteString(w, `{"error":{"code":"some_code","message":"refused"}}`)
	}
	f.set(func(f *fakeServer) {
		f.routes = map[string]http.HandlerFunc{}
		for _, p := range []string{"/presence/carol", "/chat/history", "/user/carol", "/user/groups", "/chat/conversations",
			"/auth/sessions", "/auth/sessions/s1", "/media/m1/info", "/media/m1", "/user/me"} {
			f.routes[p] = answer
		}
	})
	bob := dialFake(t, f, "bob", nil, nil)
	calls := map[string]func(ctx context.Context) error{
		"Presence":      func(ctx context.Context) error { _, err := bob.Presence(ctx, "carol"); return err },
		"History":       func(ctx context.Context) error { _, _, err := bob.History(ctx, "carol", "", 10); return err },
		"Profile":       func(ctx context.Context) error { _, err := bob.Profile(ctx, "carol"); return err },
		"Groups":        func(ctx context.Context) error { _, err := bob.Groups(ctx); return err },
		"Conversations": func(ctx context.Context) error { _, err := bob.Conversations(ctx); return err },
		"Sessions":      func(ctx context.Context) error { _, err := bob.Sessions(ctx); return err },
		"EndSession":    func(ctx context.Context) error { return bob.EndSession(ctx, "s1") },
		"MediaStatus":   func(ctx context.Context) error { _, err := bob.MediaStatus(ctx, "m1"); return err },
		"DownloadMedia": func(ctx context.Context) error { _, err := bob.DownloadMedia(ctx, "m1", io.Discard, false); return err },
		"DeleteAccount": func(ctx context.Context) error { _, err := bob.DeleteAccount(ctx, "pw"); return err },
	}
	sentinels := map[int]error{401: ErrUnauthorized, 403: ErrForbidden, 404: ErrNotFound, 429: ErrRateLimited, 503: ErrUnavailable}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, st := range []int{401, 403, 404, 429, 503} {
		status.Store(int32(st))
		for name, call := range calls {
			err := call(ctx)
			var ae *APIError
			if !errors.As(err, &ae) || ae.Status != st || ae.RetryAfter != 7*time.Second {
				t.Errorf("%s answered %d: %v, want an *APIError with that status and Retry-After", name, st, err)
				continue
			}
			for s, sentinel := range sentinels {
				if got := errors.Is(err, sentinel); got != (s == st) {
					t.Errorf("%s answered %d: errors.Is(err, %v) = %v", name, st, sentinel, got)
				}
			}
			if st == 403 && !errors.Is(err, ErrRefused) {
				t.Errorf("%s answered 403: not an ErrRefused, as ErrForbidden is", name)
			}
		}
	}
}

// Two sends of one CID at once (an app retrying from another goroutine
// while the first call still waits) each get the stored copy: the
// second's wait does not replace the first's. Here the first stores the
// message, the second is acknowledged as a stored CID and reads the
// original through the API and returns; the copy then reaches the
// first, which must not wait out EchoWait (an hour here) for it.
func TestTwoSendsOfOneCIDAtOnceBothGetTheStoredCopy(t *testing.T) {
	f := newFakeServer(t)
	f.set(func(f *fakeServer) {
		f.decide = func(cid string, attempt int) fakeAction { return fakeAction{noEcho: attempt == 1} } // its copy comes late
		f.routes = map[string]http.HandlerFunc{"/chat/messages": func(w http.ResponseWriter, r *http.Request) {
			var in struct {
				CID string `json:"cid"`
			}
			_ = json.NewDecoder(r.Body).Decode(&in)
			f.mu.Lock()
			m := f.byCID["bob/"+in.CID]
			f.mu.Unlock()
			_ = json.NewEncoder(w).Encode(m)
		}}
	})
	bob := dialFake(t, f, "bob", nil, func(o *Options) { o.EchoWait = time.Hour })
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	cid := NewCID()
	type res struct {
		m   Message
		err error
	}
	first := make(chan res, 1)
	go func() {
		m, err := bob.SendMessage(ctx, Message{To: "carol", Body: "hi", CID: cid})
		first <- res{m, err}
	}()
	testutil.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if len(f.stored("carol")) != 1 {
			return fmt.Errorf("not stored yet")
		}
		return nil
	})
	stored := f.stored("carol")[0]
	second, err := bob.SendMessage(ctx, Message{To: "carol", Body: "hi", CID: cid})
	if err != nil || second.ID != stored.ID {
		t.Fatalf("second send: %+v, %v; want the stored message %s", second, err, stored.ID)
	}
	f.deliver(stored) // the first send's copy
	select {
	case r := <-first:
		if r.err != nil || r.m.ID != stored.ID {
			t.Fatalf("first send: %+v, %v; want the stored message %s", r.m, r.err, stored.ID)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the first send still waits for the copy that was delivered: the second send replaced (then removed) its wait")
	}
}
