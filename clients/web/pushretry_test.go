package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/node/nodetest"
)

// The Web Push key answered 503 (a new cluster has not made it yet, a
// node that cannot reach its leader) is asked for again, backing off:
// the page gave Web Push up until its next start, and the user, who had
// allowed notifications, got none while the app was closed.
func TestWebPushKeyRetriedAfterA503(t *testing.T) {
	wp, n := webPushNode(t)
	n.NewUser(t, "alice")
	front, refusals := refusingProxy(t, n.HTTPURL, "/push/vapid", 2)
	// Headless Chromium has no push service: the page's subscription is
	// a stand-in of what one would have given.
	sub := wp.Subscribe()
	js, _ := json.Marshal(map[string]any{"endpoint": sub.Endpoint, "keys": map[string]string{"p256dh": sub.P256dh, "auth": sub.Auth}})
	alice := browser(t)
	run(t, alice, "notifications allowed, and a push subscription at hand",
		allowNotifications(front.URL),
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
				Source: `if (self.PushManager) PushManager.prototype.getSubscription = () => Promise.resolve({ toJSON: () => (` + string(js) + `), unsubscribe: () => Promise.resolve(true) });`})
			return err
		}))
	signIn(t, alice, front.URL, "alice")
	device := eval[string](t, alice, `localStorage.getItem('edgechat-device') || ''`)
	tok := n.Token(t, "alice")
	nodetest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		devs := string(apiCall(t, "GET", n.HTTPURL+"/user/me/devices", tok, ""))
		if !strings.Contains(devs, `"`+device+`"`) {
			return fmt.Errorf("the browser %s is not registered for Web Push (refusals left %d): %s", device, refusals.Load(), devs)
		}
		return nil
	})
	if left := refusals.Load(); left >= 0 {
		t.Fatalf("%d refusals left unused", left+1)
	}
}
