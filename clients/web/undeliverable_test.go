package web_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A message to a group of another region that the group's home refused
// for good comes back as an undeliverable event naming the group instead
// of a recipient (docs/regions.md, Undeliverable messages): the page
// marks the message as it marks a direct one. It ignored that form (it
// looked for "to" only) until a reload brought the status from history.
// The event reaches the page's MQTT client as the server's would (the
// two regions and the outage that make one are bridge/region's
// TestGroupMessageRefusedByTheHomeAfterAnOutage).
func TestAGroupMessageRefusedForGoodIsMarked(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok := n.NewUser(t, "alice")
	n.NewUser(t, "bob")
	var g struct {
		GroupID string `json:"groupId"`
	}
	if err := json.Unmarshal(apiCall(t, "POST", n.HTTPURL+"/user/groups", aliceTok, `{"name":"team","members":["bob"]}`), &g); err != nil || g.GroupID == "" {
		t.Fatalf("group: %v %+v", err, g)
	}
	alice := browser(t)
	signIn(t, alice, n.HTTPURL, "alice")
	run(t, alice, "alice writes to the group",
		chromedp.Evaluate[chromedp.Void](`(async () => {
			const src = document.querySelector('script[type="module"]').src.replace(/js\/app\.js$/, 'vendor/mqtt.esm.js');
			const P = (await import(src)).default.MqttClient.prototype;
			const real = P.publish;
			P.publish = function () { window.__client = this; return real.apply(this, arguments); };
		})()`, chromedp.EvalAwaitPromise),
		click(`[data-conv="g:`+g.GroupID+`"]`),
		chromedp.WaitEnabled(chromedp.CSS(`#composer`)),
		chromedp.SendKeys(chromedp.CSS(`#composer`), "hello team\n"),
		chromedp.WaitVisible(chromedp.CSS(`.msg.mine[data-id]`)),
	)
	id := eval[string](t, alice, `document.querySelector('.msg.mine[data-id]').dataset.id`)
	event, _ := json.Marshal(map[string]string{"type": "undeliverable", "id": id, "group": g.GroupID, "reason": "forbidden"})
	run(t, alice, "the group's home refuses it for good",
		chromedp.Evaluate[chromedp.Void](`window.__client.emit('message', 'user/alice/events', new TextEncoder().encode(`+string(mustJSONString(t, string(event)))+`), {})`),
		chromedp.WaitVisible(chromedp.CSS(`.msg.mine[data-state="undeliverable"]`)),
	)
	if got := textOf(t, alice, `.msg.mine[data-state="undeliverable"] .meta`); !strings.Contains(got, "not delivered: not accepted") {
		t.Fatalf("the refused group message says %q", got)
	}
}

func mustJSONString(t *testing.T, s string) []byte {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
