package web_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A message sent while the connection is down, in a tab that then takes
// the browser's device ID over (the tab holding it closed meanwhile), is
// sent once the network is back. The tab's new connection (under the
// browser's ID) replaced the old one with end(false), which waits for the
// old one's publishes in flight to be acknowledged: on a connection that
// was down (and no longer reconnects) they never were, and the message
// stayed "sending…" for good.
func TestAMessageSentOfflineSurvivesTheDeviceHandOver(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "alice")
	bobTok := n.NewUser(t, "bob")
	if err := postMessage(n.HTTPURL, bobTok, `{"to":"alice","cid":"h1","type":"text","body":"hello alice"}`); err != nil {
		t.Fatal(err)
	}
	px := newCutProxy(t, n.HTTPURL)
	tab := browser(t)
	signIn(t, tab, px.srv.URL, "alice")
	const holds = `.state').dataset.device === localStorage.getItem('edgechat-device')`
	run(t, tab, "a second tab opens; the first reloads, so the second holds the browser's device ID",
		chromedp.Evaluate[chromedp.Void](`window.__w = window.open('/', 'second'); undefined`, asUserGesture),
		poll(`!!(window.__w && window.__w.document.querySelector('.state[data-state="online"]'))`),
		chromedp.Reload(),
		chromedp.WaitVisible(chromedp.CSS(`.state[data-state="online"]`)),
		chromedp.Evaluate[chromedp.Void](`window.__w = window.open('', 'second'); undefined`, asUserGesture),
		poll(`!!window.__w.document.querySelector('.state[data-state="online"]') && window.__w.document.querySelector('`+holds),
		poll(`!(document.querySelector('`+holds+`)`),
	)
	run(t, tab, "alice opens bob's chat",
		click(`[data-conv="d:bob"]`),
		poll(shows("hello alice", false)),
	)
	px.cut()
	run(t, tab, "the network is down; alice writes to bob",
		poll(`!document.querySelector('.state[data-state="online"]')`),
		chromedp.SendKeys(chromedp.CSS(`#composer`), "written offline\n"),
		poll(`!!document.querySelector('.msg[data-cid][data-state="pending"]')`),
	)
	run(t, tab, "the other tab closes: this one takes the browser's device ID",
		chromedp.Evaluate[chromedp.Void](`window.__w.close(); undefined`),
		poll(`document.querySelector('`+holds),
	)
	px.heal()
	run(t, tab, "the network is back", poll(`!!document.querySelector('.state[data-state="online"]')`))
	run(t, tab, "the message is sent",
		poll(shows("written offline", true)),
	)
	var got string
	nodetest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		got = string(apiCall(t, "GET", n.HTTPURL+"/chat/history?with=alice", bobTok, ""))
		if !strings.Contains(got, "written offline") {
			return errors.New("not in bob's history yet")
		}
		return nil
	})
	if c := strings.Count(got, "written offline"); c != 1 {
		t.Fatalf("bob's history holds the message %d times: %s", c, got)
	}
}
