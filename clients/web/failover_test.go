package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// With no load balancer in front, a page whose node goes away moves by
// itself to another node of the cluster: it asks the nodes its page
// named for /cluster/connect (cross-origin: the nodes allow each other's
// origins, for CORS and WebSocket, and the page's policy allows them),
// reconnects there, moves its API calls there and syncs the gap: no
// message lost or shown twice, and what it sent while offline arrives.
func TestReconnectWithoutBalancer(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3, nodetest.WithConfig(func(c *node.Config) { c.OriginsRefresh = 200 * time.Millisecond }))
	home := nodes[0].HTTPURL
	// The page names the other nodes once the first has asked them.
	nodetest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		res, err := http.Get(home + "/")
		if err != nil {
			return err
		}
		page, _ := io.ReadAll(res.Body)
		res.Body.Close()
		csp := res.Header.Get("Content-Security-Policy")
		for _, n := range nodes[1:] {
			if !strings.Contains(string(page), n.HTTPURL) || !strings.Contains(csp, n.HTTPURL) {
				return fmt.Errorf("the page does not name %s yet", n.HTTPURL)
			}
		}
		return nil
	})

	alice, bob := reconnectScenario(t, nodes, home, nil, nil) // nothing brings node 1 back: the pages find the others
	// The API calls went to the new node too: a new message through the
	// page is stored and shown once on the other side.
	run(t, bob, "bob answers from the new node",
		chromedp.SendKeys(chromedp.CSS(`#composer`), "after the move\n"),
		chromedp.Poll[chromedp.Void](shows("after the move", true), chromedp.WithPollingInterval(50*time.Millisecond)),
	)
	run(t, alice, "alice gets it live",
		chromedp.Poll[chromedp.Void](shows("after the move", false), chromedp.WithPollingInterval(50*time.Millisecond)),
	)
}

// reconnectScenario: alice and bob sign up through base (the first node,
// or a balancer in front of the cluster) and chat; the first node stops
// (after beforeStop); alice writes while offline and bob, through the
// second node's API, writes to her; after heal (nil: nothing), both pages
// must be online again on their own with every message once and nothing
// pending.
func reconnectScenario(t *testing.T, nodes []*nodetest.Node, base string, beforeStop, heal func()) (alice, bob context.Context) {
	t.Helper()
	alice, bob = browser(t), browser(t)
	register(t, alice, base, "alice")
	register(t, bob, base, "bob")
	run(t, bob, "bob writes to alice",
		chromedp.SendKeys(chromedp.CSS(`#new-chat`), "alice\n"),
		chromedp.WaitEnabled(chromedp.CSS(`#composer`)),
		chromedp.SendKeys(chromedp.CSS(`#composer`), "before\n"),
		chromedp.WaitVisible(chromedp.CSS(`.msg.mine[data-id]`)),
	)
	run(t, alice, "alice opens the chat",
		click(`[data-conv="d:bob"]`),
		chromedp.WaitVisible(chromedp.CSS(`.msg[data-id]`)),
	)

	if beforeStop != nil {
		beforeStop()
	}
	if err := nodes[0].Stop(); err != nil {
		t.Fatal(err)
	}
	run(t, alice, "alice's page notices and writes while offline",
		chromedp.WaitVisible(chromedp.CSS(`.state:not([data-state="online"])`)),
		chromedp.SendKeys(chromedp.CSS(`#composer`), "sent while offline\n"),
	)
	tok := nodes[1].Token(t, "bob")
	nodetest.CheckFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		return postMessage(nodes[1].HTTPURL, tok, `{"to":"alice","cid":"during-1","type":"text","body":"during the outage"}`)
	})
	if heal != nil {
		heal()
	}

	poll := func(js string) chromedp.Action[chromedp.Void] {
		return chromedp.Poll[chromedp.Void](js, chromedp.WithPollingInterval(50*time.Millisecond))
	}
	run(t, alice, "alice's page is back and catches up",
		chromedp.WaitVisible(chromedp.CSS(`.state[data-state="online"]`)),
		poll(shows("during the outage", false)),
		poll(shows("sent while offline", true)),
	)
	run(t, bob, "bob's page is back and has alice's message",
		chromedp.WaitVisible(chromedp.CSS(`.state[data-state="online"]`)),
		poll(shows("sent while offline", false)),
	)
	for _, text := range []string{"before", "during the outage", "sent while offline"} {
		if k := shownCount(t, alice, text); k != 1 {
			t.Errorf("alice's page shows %q %d times", text, k)
		}
	}
	if k := shownCount(t, bob, "sent while offline"); k != 1 {
		t.Errorf("bob's page shows alice's offline message %d times", k)
	}
	if k := eval[int](t, alice, `document.querySelectorAll('.msg[data-cid]').length`); k != 0 {
		t.Errorf("%d messages still pending on alice's page", k)
	}
	return alice, bob
}

// shows is a script true once the open conversation shows a committed
// message containing text (of this page's user when mine).
func shows(text string, mine bool) string {
	q, _ := json.Marshal(text)
	sel := ".msg[data-id]"
	if mine {
		sel = ".msg.mine[data-id]"
	}
	return `[...document.querySelectorAll('` + sel + `')].some(e => e.textContent.includes(` + string(q) + `))`
}

// shownCount counts the committed messages containing text on the page.
func shownCount(t testing.TB, ctx context.Context, text string) int {
	q, _ := json.Marshal(text)
	return eval[int](t, ctx, `[...document.querySelectorAll('.msg[data-id]')].filter(e => e.textContent.includes(`+string(q)+`)).length`)
}

// A catch-up read answered 503 (what a node of a cluster cut off from
// its leader answers: it cannot promise the page holds everything
// committed) is tried again until it passes: the conversation list
// appears without a reload, and the error shown meanwhile goes away.
func TestCatchUpRetriedWhileTheNodeCannotRead(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "alice")
	bobTok := n.NewUser(t, "bob")
	if err := postMessage(n.HTTPURL, bobTok, `{"to":"alice","cid":"c1","type":"text","body":"waiting for you"}`); err != nil {
		t.Fatal(err)
	}
	front, refusals := refusingProxy(t, n.HTTPURL, "/chat/conversations", 3)

	alice := browser(t)
	signIn(t, alice, front.URL, "alice")
	run(t, alice, "the list appears once the node answers",
		chromedp.WaitVisible(chromedp.CSS(`[data-conv="d:bob"]`)),
	)
	if left := refusals.Load(); left >= 0 {
		t.Fatalf("%d refusals left unused: the list came another way", left+1)
	}
	if got := textOf(t, alice, `.error`); got != "" {
		t.Fatalf("the error stays shown: %q", got)
	}
}

// A conversation opened while the node cannot read (its newest page
// answered 503) is loaded once the node answers, without another click,
// and the error it showed goes away. Its first message comes only from
// that page: the list holds the last one.
func TestOpenedConversationRetriedWhileTheNodeCannotRead(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "alice")
	bobTok := n.NewUser(t, "bob")
	for i, body := range []string{"first, only in the history", "second, in the list"} {
		if err := postMessage(n.HTTPURL, bobTok, fmt.Sprintf(`{"to":"alice","cid":"c%d","type":"text","body":%q}`, i, body)); err != nil {
			t.Fatal(err)
		}
	}
	front, refusals := refusingProxy(t, n.HTTPURL, "/chat/history", 2)

	alice := browser(t)
	signIn(t, alice, front.URL, "alice")
	run(t, alice, "alice opens bob's conversation; its first message appears once the node answers",
		click(`[data-conv="d:bob"]`),
		chromedp.Poll[chromedp.Void](`[...document.querySelectorAll('.msg[data-id]')].some((e) => e.textContent.includes('first, only in the history'))`,
			chromedp.WithPollingInterval(50*time.Millisecond)),
	)
	if left := refusals.Load(); left >= 0 {
		t.Fatalf("%d refusals left unused: the page came another way", left+1)
	}
	if got := textOf(t, alice, `.error`); got != "" {
		t.Fatalf("the error stays shown: %q", got)
	}
}

// refusingProxy serves the node at nodeURL through a proxy that answers
// the first n requests for path 503 unavailable, as a node that cannot
// reach its cluster's leader does; the counter goes negative once all n
// were used.
func refusingProxy(t *testing.T, nodeURL, path string, n int32) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	refusals := new(atomic.Int32)
	refusals.Store(n)
	u, err := url.Parse(nodeURL)
	if err != nil {
		t.Fatal(err)
	}
	node := httputil.NewSingleHostReverseProxy(u)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == path && refusals.Add(-1) >= 0 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `{"error":{"code":"unavailable","message":"cannot read now: this node cannot reach its cluster's leader; retry"}}`)
			return
		}
		node.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	return front, refusals
}

// The contacts a page loads when it starts are tried again while the
// node answers 503 (contacts wait for the node to catch up with its
// leader since session 16): they appear without a reload.
func TestContactsRetriedWhileTheNodeCannotRead(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok := n.NewUser(t, "alice")
	n.NewUser(t, "bob")
	req, err := http.NewRequest(http.MethodPost, n.HTTPURL+"/user/me/contacts", strings.NewReader(`{"uid":"bob"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+aliceTok)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK && res.StatusCode != http.StatusCreated {
		t.Fatalf("adding bob as a contact: %s", res.Status)
	}
	front, refusals := refusingProxy(t, n.HTTPURL, "/user/me/contacts", 2)

	alice := browser(t)
	signIn(t, alice, front.URL, "alice")
	run(t, alice, "alice's contacts show bob once the node answers",
		click(`#contacts-panel summary`),
		chromedp.WaitVisible(chromedp.CSS(`[data-contact="bob"]`)),
	)
	if left := refusals.Load(); left >= 0 {
		t.Fatalf("%d refusals left unused: the list came another way", left+1)
	}
	if got := textOf(t, alice, `.error`); got != "" {
		t.Fatalf("the error stays shown: %q", got)
	}
}
