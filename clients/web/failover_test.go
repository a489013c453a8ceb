package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
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

	alice, bob := browser(t), browser(t)
	register(t, alice, home, "alice")
	register(t, bob, home, "bob")
	run(t, bob, "bob writes to alice",
		chromedp.SendKeys(chromedp.CSS(`#new-chat`), "alice\n"),
		chromedp.WaitVisible(chromedp.CSS(`#composer`)),
		chromedp.SendKeys(chromedp.CSS(`#composer`), "before\n"),
		chromedp.WaitVisible(chromedp.CSS(`.msg.mine[data-id]`)),
	)
	run(t, alice, "alice opens the chat",
		click(`[data-conv="d:bob"]`),
		chromedp.WaitVisible(chromedp.CSS(`.msg[data-id]`)),
	)

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

	// Nothing brings node 1 back: the pages find the others themselves.
	for _, p := range []struct {
		ctx  context.Context
		name string
	}{{alice, "alice"}, {bob, "bob"}} {
		run(t, p.ctx, p.name+"'s page moves to another node and catches up",
			chromedp.WaitVisible(chromedp.CSS(`.state[data-state="online"]`)),
			chromedp.Poll[chromedp.Void](`[...document.querySelectorAll('.msg[data-id]')].some(e => e.textContent.includes('sent while offline'))`,
				chromedp.WithPollingInterval(50*time.Millisecond)),
		)
	}
	run(t, alice, "alice's page has bob's message of the outage",
		chromedp.Poll[chromedp.Void](`[...document.querySelectorAll('.msg[data-id]')].some(e => e.textContent.includes('during the outage'))`,
			chromedp.WithPollingInterval(50*time.Millisecond)),
	)
	count := func(ctx context.Context, text string) int {
		q, _ := json.Marshal(text)
		return eval[int](t, ctx, `[...document.querySelectorAll('.msg[data-id]')].filter(e => e.textContent.includes(`+string(q)+`)).length`)
	}
	for _, text := range []string{"before", "during the outage", "sent while offline"} {
		if k := count(alice, text); k != 1 {
			t.Errorf("alice's page shows %q %d times", text, k)
		}
	}
	if k := count(bob, "sent while offline"); k != 1 {
		t.Errorf("bob's page shows alice's offline message %d times", k)
	}
	if k := eval[int](t, alice, `document.querySelectorAll('.msg[data-cid]').length`); k != 0 {
		t.Errorf("%d messages still pending on alice's page", k)
	}
	// The API calls went to the new node too: a new message through the
	// page is stored and shown once on the other side.
	run(t, bob, "bob answers from the new node",
		chromedp.SendKeys(chromedp.CSS(`#composer`), "after the move\n"),
		chromedp.Poll[chromedp.Void](`[...document.querySelectorAll('.msg.mine[data-id]')].some(e => e.textContent.includes('after the move'))`,
			chromedp.WithPollingInterval(50*time.Millisecond)),
	)
	run(t, alice, "alice gets it live",
		chromedp.Poll[chromedp.Void](`[...document.querySelectorAll('.msg[data-id]')].some(e => e.textContent.includes('after the move'))`,
			chromedp.WithPollingInterval(50*time.Millisecond)),
	)
}
