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

// A push subscription the browser made with another VAPID key (a
// cluster made anew, restored, its key rotated) is replaced: the push
// service refuses (403) every Web Push the cluster signs with its key
// for a subscription made with another, so reusing it left the browser
// without notifications for good.
func TestAPushSubscriptionOfAnotherVAPIDKeyIsReplaced(t *testing.T) {
	wp, n := webPushNode(t)
	n.NewUser(t, "alice")
	var vapid struct {
		PublicKey string `json:"publicKey"`
	}
	if err := json.Unmarshal(apiCall(t, "GET", n.HTTPURL+"/push/vapid", "", ""), &vapid); err != nil || vapid.PublicKey == "" {
		t.Fatalf("the node's VAPID key: %v %+v", err, vapid)
	}
	old, fresh := wp.Subscribe(), wp.Subscribe()
	subJS := func(endpoint, p256dh, auth string) string {
		js, _ := json.Marshal(map[string]any{"endpoint": endpoint, "keys": map[string]string{"p256dh": p256dh, "auth": auth}})
		return string(js)
	}
	oldJS := subJS(old.Endpoint, old.P256dh, old.Auth)
	freshJS := subJS(fresh.Endpoint, fresh.P256dh, fresh.Auth)
	// Headless Chromium has no push service: the browser holds a
	// subscription made with another key (65 bytes, an uncompressed P-256
	// point, not the node's), and subscribe hands out a stand-in.
	stub := `if (self.PushManager) {
		window.__unsubscribed = 0; window.__subscribedWith = '';
		let current = { options: { applicationServerKey: new Uint8Array(65).fill(4).buffer }, toJSON: () => (` + oldJS + `),
			unsubscribe: () => { window.__unsubscribed++; current = null; return Promise.resolve(true); } };
		PushManager.prototype.getSubscription = () => Promise.resolve(current);
		PushManager.prototype.subscribe = (o) => {
			if (current) return Promise.reject(new DOMException('a subscription with another applicationServerKey exists', 'InvalidStateError'));
			const k = new Uint8Array(o.applicationServerKey);
			window.__subscribedWith = btoa(String.fromCharCode(...k)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
			current = { options: { applicationServerKey: k.buffer }, toJSON: () => (` + freshJS + `), unsubscribe: () => Promise.resolve(true) };
			return Promise.resolve(current);
		};
	}`
	alice := browser(t)
	run(t, alice, "notifications allowed, and a subscription of another key at hand",
		allowNotifications(n.HTTPURL),
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: stub})
			return err
		}))
	signIn(t, alice, n.HTTPURL, "alice")
	device := eval[string](t, alice, `localStorage.getItem('edgechat-device') || ''`)
	tok := n.Token(t, "alice")
	nodetest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		devs := string(apiCall(t, "GET", n.HTTPURL+"/user/me/devices", tok, ""))
		if !strings.Contains(devs, `"`+device+`"`) {
			return fmt.Errorf("the browser %s is not registered for Web Push: %s", device, devs)
		}
		return nil
	})
	with := eval[string](t, alice, `window.__subscribedWith`)
	unsub := eval[float64](t, alice, `window.__unsubscribed`)
	if with != vapid.PublicKey || unsub != 1 {
		t.Fatalf("the browser kept its subscription of another key: unsubscribed %v times, subscribed with %q, want once and the node's %q", unsub, with, vapid.PublicKey)
	}
	devs := string(apiCall(t, "GET", n.HTTPURL+"/user/me/devices", tok, ""))
	if strings.Contains(devs, old.Endpoint) {
		t.Fatalf("the old subscription is registered: %s", devs)
	}
}
