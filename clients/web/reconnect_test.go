package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// cutProxy is a front for one node that can cut every connection
// (WebSockets included) and answer 502 until healed; onResponse, when
// set, runs after the node answered and before the browser gets it.
type cutProxy struct {
	srv        *httptest.Server
	mu         sync.Mutex
	conns      map[net.Conn]struct{}
	down       bool
	onResponse func(r *http.Request)
}

func newCutProxy(t *testing.T, nodeURL string) *cutProxy {
	t.Helper()
	u, err := url.Parse(nodeURL)
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{conns: map[net.Conn]struct{}{}}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = func(res *http.Response) error {
		p.mu.Lock()
		f := p.onResponse
		p.mu.Unlock()
		if f != nil {
			f(res.Request)
		}
		return nil
	}
	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		down := p.down
		p.mu.Unlock()
		if down {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	p.srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		p.mu.Lock()
		defer p.mu.Unlock()
		switch s {
		case http.StateNew:
			p.conns[c] = struct{}{}
		case http.StateClosed: // a hijacked WebSocket stays: cut closes it
			delete(p.conns, c)
		}
	}
	p.srv.Start()
	t.Cleanup(p.srv.Close)
	return p
}

// cut closes every connection (the page's WebSocket too) and answers 502
// until heal.
func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

func (p *cutProxy) heal() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

func (p *cutProxy) setHook(f func(r *http.Request)) {
	p.mu.Lock()
	p.onResponse = f
	p.mu.Unlock()
}

// apiDo calls the node's API as the owner of tok (body as JSON when not
// empty) and returns the answer's body, or an error for a status >= 300.
func apiDo(method, u, tok, body string) ([]byte, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode >= 300 {
		return b, fmt.Errorf("%s %s: %d %s", method, u, res.StatusCode, b)
	}
	return b, nil
}

func apiCall(t testing.TB, method, u, tok, body string) []byte {
	t.Helper()
	b, err := apiDo(method, u, tok, body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// texts is a script listing the texts of the committed messages shown.
const texts = `[...document.querySelectorAll('.msg[data-id] .text')].map(e => e.textContent)`

// Everything sent while the page was offline shows once it is back: in
// a conversation it had read and is not showing (not only the newest
// message), and in the open one when more came than a page of history
// holds (no hole between what it showed and the newest page).
func TestMessagesSentDuringAnOutageShowAfterTheReconnect(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "alice")
	carolTok := n.NewUser(t, "carol")
	bobTok := n.NewUser(t, "bob")
	if err := postMessage(n.HTTPURL, bobTok, `{"to":"alice","cid":"b1","type":"text","body":"m1 before"}`); err != nil {
		t.Fatal(err)
	}
	if err := postMessage(n.HTTPURL, carolTok, `{"to":"alice","cid":"c","type":"text","body":"c before"}`); err != nil {
		t.Fatal(err)
	}
	px := newCutProxy(t, n.HTTPURL)
	var syncPages, syncEnds atomic.Int32
	px.onResponse = func(r *http.Request) {
		switch r.URL.Path {
		case "/chat/sync":
			syncPages.Add(1)
		case "/chat/sync/end":
			syncEnds.Add(1)
		}
	}
	alice := browser(t)
	signIn(t, alice, px.srv.URL, "alice")
	run(t, alice, "alice reads bob's chat, then opens carol's",
		click(`[data-conv="d:bob"]`),
		poll(shows("m1 before", false)),
		click(`[data-conv="d:carol"]`),
		poll(shows("c before", false)),
	)
	// The page knows where the sync stream ends (what it syncs from
	// after a reconnect) once its first catch-up is done.
	if err := waitUntil(10*time.Second, 50*time.Millisecond, func() error {
		if !eval[bool](t, alice, `!!document.querySelector('.state[data-synced]')`) {
			return fmt.Errorf("the page has not synced")
		}
		return nil
	}); err != nil {
		t.Log(err) // what follows tells what the page missed
	} else if p, e := syncPages.Load(), syncEnds.Load(); p != 0 || e != 1 {
		// It asks where the stream ends instead of paging through it.
		t.Errorf("the first catch-up made %d sync page requests and %d sync end requests, want 0 and 1", p, e)
	}
	px.cut()
	run(t, alice, "the page is offline", chromedp.WaitVisible(chromedp.CSS(`.state:not([data-state="online"])`)))
	for i, body := range []string{"m2 during", "m3 during"} {
		if err := postMessage(n.HTTPURL, bobTok, fmt.Sprintf(`{"to":"alice","cid":"d%d","type":"text","body":%q}`, i, body)); err != nil {
			t.Fatal(err)
		}
	}
	const missed = 60 // more than the newest page of history (50)
	for i := range missed {
		if err := postMessage(n.HTTPURL, carolTok, fmt.Sprintf(`{"to":"alice","cid":"c%d","type":"text","body":"c%02d during"}`, i, i)); err != nil {
			t.Fatal(err)
		}
	}
	px.heal()
	run(t, alice, "the page is back with carol's messages",
		chromedp.WaitVisible(chromedp.CSS(`.state[data-state="online"]`)),
		poll(shows(fmt.Sprintf("c%02d during", missed-1), false)),
	)
	want := []string{"c before"}
	for i := range missed {
		want = append(want, fmt.Sprintf("c%02d during", i))
	}
	if err := waitUntil(5*time.Second, 100*time.Millisecond, func() error {
		if got := eval[[]string](t, alice, texts); strings.Join(got, "|") != strings.Join(want, "|") {
			return fmt.Errorf("carol's open chat shows %d messages %q", len(got), got)
		}
		return nil
	}); err != nil {
		t.Fatalf("after the reconnect: %v; want all %d", err, len(want))
	}
	run(t, alice, "alice opens bob's chat",
		poll(`document.querySelector('[data-conv="d:bob"] .badge').textContent === '2'`),
		click(`[data-conv="d:bob"]`),
		poll(shows("m3 during", false)),
	)
	if err := waitUntil(5*time.Second, 100*time.Millisecond, func() error {
		if got := eval[[]string](t, alice, texts); strings.Join(got, "|") != "m1 before|m2 during|m3 during" {
			return fmt.Errorf("bob's chat shows %q", got)
		}
		return nil
	}); err != nil {
		t.Fatalf("after the reconnect: %v; want m1, m2, m3", err)
	}
}

// A group message committed at any moment of the catch-up after a
// reconnect reaches the page (live or in a read): the page subscribes to
// its groups' topics before it reads anything.
func TestGroupMessagesDuringTheCatchUpAreNotLost(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "alice")
	bobTok := n.NewUser(t, "bob")
	var g struct{ GroupID string }
	if err := json.Unmarshal(apiCall(t, "POST", n.HTTPURL+"/user/groups", bobTok, `{"name":"team","members":["alice"]}`), &g); err != nil || g.GroupID == "" {
		t.Fatalf("group: %v %+v", err, g)
	}
	post := func(cid, body string) error {
		_, err := apiDo("POST", n.HTTPURL+"/chat/messages", bobTok, fmt.Sprintf(`{"group":%q,"cid":%q,"type":"text","body":%q}`, g.GroupID, cid, body))
		return err
	}
	if err := post("g0", "g0 before"); err != nil {
		t.Fatal(err)
	}
	px := newCutProxy(t, n.HTTPURL)
	alice := browser(t)
	signIn(t, alice, px.srv.URL, "alice")
	run(t, alice, "alice opens the group", click(`[data-conv^="g:"]`), poll(shows("g0 before", false)))
	// Once the page is offline, bob writes as each of the catch-up's
	// reads has been answered (and before the page has the answer).
	var mu sync.Mutex
	var armed bool
	posted := map[string]error{}
	px.setHook(func(r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		read := strings.TrimPrefix(r.URL.Path, "/")
		switch {
		case !armed:
			return
		case r.URL.Path == "/chat/history" && r.URL.Query().Get("group") != g.GroupID:
			return
		case r.URL.Path == "/user/groups", r.URL.Path == "/chat/sync", r.URL.Path == "/chat/conversations", r.URL.Path == "/chat/history":
		default:
			return
		}
		if _, ok := posted[read]; !ok {
			posted[read] = post(read, "after "+read)
		}
	})
	px.cut()
	run(t, alice, "the page is offline", chromedp.WaitVisible(chromedp.CSS(`.state:not([data-state="online"])`)))
	mu.Lock()
	armed = true
	mu.Unlock()
	px.heal()
	run(t, alice, "the page is back", chromedp.WaitVisible(chromedp.CSS(`.state[data-state="online"]`)))
	nodetest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if _, ok := posted["chat/conversations"]; !ok {
			return fmt.Errorf("the catch-up has not read the conversation list yet (%d reads)", len(posted))
		}
		return nil
	})
	if err := post("g9", "g9 later"); err != nil {
		t.Fatal(err)
	}
	run(t, alice, "a later group message arrives live", poll(shows("g9 later", false)))
	mu.Lock()
	defer mu.Unlock()
	for read, err := range posted {
		if err != nil {
			t.Fatalf("post after %s: %v", read, err)
		}
		if k := shownCount(t, alice, "after "+read); k != 1 {
			t.Errorf("the message bob sent as the page's %s read was answered shows %d times (want 1): %q", read, k, eval[[]string](t, alice, texts))
		}
	}
}

// refreshCounts reads the node's refresh-token exchanges by result.
func refreshCounts(base string) map[string]float64 {
	out := map[string]float64{}
	for _, l := range strings.Split(metricLines(base, "edgechat_auth_refreshes_total"), "\n") {
		var res string
		var v float64
		if _, err := fmt.Sscanf(strings.TrimPrefix(l, `edgechat_auth_refreshes_total{result="`), `%s %g`, &res, &v); err == nil {
			out[strings.TrimSuffix(res, `"}`)] = v
		}
	}
	return out
}

// twoTabs creates alice on n, signs her in through a cutProxy to n in
// one tab and opens a second tab of the app in the same browser (the
// same session cookie), which the first can look into (window.__w).
func twoTabs(t *testing.T, n *nodetest.Node) (context.Context, *cutProxy) {
	n.NewUser(t, "alice")
	px := newCutProxy(t, n.HTTPURL)
	tab1 := browser(t)
	signIn(t, tab1, px.srv.URL, "alice")
	run(t, tab1, "a second tab",
		chromedp.Evaluate[chromedp.Void](`window.__w = window.open('/', '_blank'); undefined`),
		poll(`!!(window.__w && window.__w.document.querySelector('.state[data-state="online"]'))`),
	)
	return tab1, px
}

const (
	bothOnline  = `!!document.querySelector('.state[data-state="online"]') && !!window.__w.document.querySelector('.state[data-state="online"]')`
	bothOffline = `!document.querySelector('.state[data-state="online"]') && !window.__w.document.querySelector('.state[data-state="online"]')`
	signedOut   = `[!!document.querySelector('#username'), !!window.__w.document.querySelector('#username')]`
)

// cutAndHeal cuts the two tabs' connections through px until both are
// offline, then lets them through again until both are back.
func cutAndHeal(t *testing.T, tab1 context.Context, px *cutProxy) {
	t.Helper()
	px.cut()
	run(t, tab1, "both tabs are offline", poll(bothOffline))
	px.heal()
	run(t, tab1, "both tabs are back", poll(bothOnline))
}

// Two tabs of one browser share the session cookie, and a refresh
// rotates it: refreshed by both at once, the second is a reuse, the
// server ends the session, and the browser is signed out. Reconnecting
// with an access token that is still good does not refresh at all (both
// tabs used to refresh on every attempt, in step since the same outage
// cut both).
func TestTwoTabsReconnectingKeepTheirSession(t *testing.T) {
	n := nodetest.StartNode(t)
	tab1, px := twoTabs(t, n)
	for round := 1; round <= 3; round++ {
		before := refreshCounts(n.HTTPURL)
		cutAndHeal(t, tab1, px)
		// A refresh would be under way by now: each tab starts it as it
		// reconnects.
		err := waitUntil(2*time.Second, 50*time.Millisecond, func() error {
			if now := refreshCounts(n.HTTPURL); fmt.Sprint(now) != fmt.Sprint(before) {
				return nil
			}
			return fmt.Errorf("no refresh")
		})
		if err == nil {
			t.Fatalf("round %d: the tabs refreshed to reconnect with a good access token: refreshes %v, then %v; signed out (tab 1, tab 2): %v",
				round, before, refreshCounts(n.HTTPURL), eval[[]bool](t, tab1, signedOut))
		}
	}
	if out := eval[[]bool](t, tab1, signedOut); out[0] || out[1] {
		t.Fatalf("signed out (tab 1, tab 2): %v", out)
	}
}

// Two tabs of one browser that both must refresh at once (their access
// tokens near their end as they reconnect) take turns: no refresh token
// is sent twice, both tabs stay signed in with tokens of their own.
func TestTwoTabsRefreshingAtOnceKeepTheirSession(t *testing.T) {
	n := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) {
		c.AccessTTL = 30 * time.Second // under a minute: every reconnect refreshes
	}))
	tab1, px := twoTabs(t, n)
	for round := 1; round <= 3; round++ {
		before := refreshCounts(n.HTTPURL)
		cutAndHeal(t, tab1, px)
		nodetest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
			now := refreshCounts(n.HTTPURL)
			if now["reused"] > 0 {
				t.Fatalf("round %d: a refresh token was sent twice: refreshes %v; signed out (tab 1, tab 2): %v", round, now, eval[[]bool](t, tab1, signedOut))
			}
			if now["success"] < before["success"]+2 {
				return fmt.Errorf("round %d: refreshes %v, before %v: not both tabs yet", round, now, before)
			}
			return nil
		})
	}
	run(t, tab1, "both tabs are online, signed in", poll(bothOnline))
	if out := eval[[]bool](t, tab1, signedOut); out[0] || out[1] {
		t.Fatalf("signed out (tab 1, tab 2): %v", out)
	}
}
