package web_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A click on a Web Push notification opens the conversation it is about
// (its conversationId, docs/protocol.md Push: "a tap opens the
// conversation"), in the tab of the app that is open, or in a new one.
// The service worker only focused the app (or opened it at its start).
func TestAPushNotificationClickOpensItsConversation(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "alice")
	bobTok := n.NewUser(t, "bob")
	if err := postMessage(n.HTTPURL, bobTok, `{"to":"alice","cid":"n1","type":"text","body":"look at this"}`); err != nil {
		t.Fatal(err)
	}
	alice := browser(t)
	run(t, alice, "notifications allowed for the app", allowNotifications(n.HTTPURL))
	signIn(t, alice, n.HTTPURL, "alice")
	run(t, alice, "the service worker is active", poll(`document.title === '(1) edgechat'`),
		chromedp.Evaluate[chromedp.Void](`navigator.serviceWorker.ready.then(() => undefined)`, chromedp.EvalAwaitPromise))
	if got := textOf(t, alice, `#conv-title`); got != "No conversation open" {
		t.Fatalf("before the click the page shows %q", got)
	}

	// The service worker's target, where the test shows the notification
	// a push would have and clicks it (a synthetic notificationclick: the
	// browser has no DevTools command to click one).
	var sw context.Context
	nodetest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		infos, err := chromedp.Targets(alice)
		if err != nil {
			return err
		}
		for _, in := range infos {
			if in.Type == "service_worker" && in.URL == n.HTTPURL+"/sw.js" {
				ctx, cancel := chromedp.NewContext(alice, chromedp.WithTargetID(in.TargetID))
				t.Cleanup(cancel)
				if err := chromedp.Do(ctx); err != nil {
					return err
				}
				sw = ctx
				return nil
			}
		}
		return errors.New("no service worker target")
	})
	click := chromedp.Evaluate[int](`self.registration.showNotification('Bob', { body: 'look at this', tag: 'user:bob', data: { conversationId: 'user:bob', messageId: '' } })
		.then(() => self.registration.getNotifications())
		.then((ns) => { self.dispatchEvent(new NotificationEvent('notificationclick', { notification: ns[0] })); return ns.length; })`,
		chromedp.EvalAwaitPromise)
	if k := value(t, sw, "a notification, clicked", click); k != 1 {
		t.Fatalf("%d notifications shown", k)
	}
	run(t, alice, "the open tab shows bob's chat", poll(`document.getElementById('conv-title').textContent === 'bob'`),
		poll(shows("look at this", false)))

	// With no tab open the service worker opens one at the conversation.
	run(t, alice, "the app opened at a notification's conversation",
		chromedp.Navigate(n.HTTPURL+"/healthz"),
		chromedp.Navigate(n.HTTPURL+"/#open=user%3Abob"),
		chromedp.WaitVisible(chromedp.CSS(`.state[data-state="online"]`)),
		poll(`document.getElementById('conv-title').textContent === 'bob'`))
	if h := eval[string](t, alice, `location.hash`); h != "" {
		t.Errorf("the address keeps %q", h)
	}
}
