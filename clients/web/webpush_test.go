package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	cdpbrowser "github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/serviceworker"
	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/bridge/push/pushtest"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// A message reaches a browser that has no tab of the app open, through
// Web Push: the page registered its service worker and (under the
// browser's device ID) a push subscription; the tab closes; bob writes;
// the push bridge sends the encrypted notification to the push service
// (a mock that decrypts it: headless Chromium has no push service of its
// own), which the test hands to the service worker as the browser's push
// service would; the service worker shows it.
func TestWebPushReachesTheServiceWorker(t *testing.T) {
	wp, n := webPushNode(t)
	bobTok := n.NewUser(t, "bob")
	// alice's browser: the app's tab leaves for a plain page of the
	// origin later (the app is then closed; that page looks at the
	// notifications).
	alice := browser(t)
	run(t, alice, "notifications allowed for the app",
		allowNotifications(n.HTTPURL),
		chromedp.Navigate(n.HTTPURL+"/healthz"))
	app := alice
	register(t, app, n.HTTPURL, "alice")
	nodetest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		state := value(t, app, "the service worker's state", chromedp.Evaluate[string](
			`navigator.serviceWorker.getRegistration().then(r => r && r.active ? r.active.state : 'none')`, chromedp.EvalAwaitPromise))
		if state != "activated" {
			return fmt.Errorf("the app's service worker: %s", state)
		}
		return nil
	})
	device := eval[string](t, app, `localStorage.getItem('edgechat-device') || ''`)
	if !strings.HasPrefix(device, "web-") || !n.ClientConnected("alice/"+device) {
		t.Fatalf("the app tab is not connected as the browser's device %q", device)
	}

	ctx, cancel := context.WithTimeout(alice, 60*time.Second)
	defer cancel()
	// Events are read as they come (an unread event stream would hold up
	// the browser's whole DevTools connection).
	var (
		regMu sync.Mutex
		regID serviceworker.RegistrationID
	)
	updates := chromedp.Events(ctx, serviceworker.WorkerRegistrationUpdated)
	go func() {
		for ev, err := range updates {
			if err != nil {
				return
			}
			for _, r := range ev.Registrations {
				if r.ScopeURL == n.HTTPURL+"/" && !r.IsDeleted {
					regMu.Lock()
					regID = r.RegistrationID
					regMu.Unlock()
				}
			}
		}
	}()
	run(t, alice, "watch service workers", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, serviceworker.Enable, cdp.Empty{})
		return err
	}))

	// The subscription a push service would have given the page.
	sub := wp.Subscribe()
	reg, _ := json.Marshal(map[string]any{"device": device, "platform": "webpush",
		"subscription": map[string]any{"endpoint": sub.Endpoint, "keys": map[string]string{"p256dh": sub.P256dh, "auth": sub.Auth}}})
	req, _ := http.NewRequest(http.MethodPost, n.HTTPURL+"/user/me/devices", bytes.NewReader(reg))
	req.Header.Set("Authorization", "Bearer "+n.Token(t, "alice"))
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("register the push device: %d", res.StatusCode)
	}

	// The service worker's registration, as the browser's push service
	// would address it.
	nodetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		regMu.Lock()
		defer regMu.Unlock()
		if regID == "" {
			return errors.New("no service worker registration seen")
		}
		return nil
	})

	run(t, alice, "alice leaves the app", chromedp.Navigate(n.HTTPURL+"/healthz"))
	// The cluster sees the browser's device gone (it would not push a
	// device that has the app open).
	nodetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n.ClientConnected("alice/" + device) {
			return fmt.Errorf("alice's browser is still connected\n%s", metricLines(n.HTTPURL, "edgechat_mqtt_connections", "presence"))
		}
		return nil
	})
	body := `{"to":"alice","cid":"push-1","type":"text","body":"are you there? <b>x</b>"}`
	nodetest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		return postMessage(n.HTTPURL, bobTok, body)
	})
	var payload []byte
	nodetest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		for _, r := range wp.Requests() {
			if r.Subscription == sub.ID() && r.Status == http.StatusCreated {
				payload = r.Payload
				return nil
			}
		}
		return fmt.Errorf("no Web Push for alice's browser yet (mock: %d requests, errors %q)\n%s", len(wp.Requests()), wp.Errors(), pushMetrics(n.HTTPURL))
	})

	// The push service hands it to the service worker (again if the
	// worker was still starting: the notification's tag makes a second
	// delivery replace the first, never add one).
	var shown []string
	nodetest.CheckFor(t, 20*time.Second, 2*time.Second, func() error {
		run(t, alice, "the push service hands the message to the service worker",
			chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
				regMu.Lock()
				id := regID
				regMu.Unlock()
				_, err := cdp.Call(ctx, tg, serviceworker.DeliverPushMessage, serviceworker.DeliverPushMessageParams{
					Origin: n.HTTPURL, RegistrationID: id, Data: string(payload)})
				return err
			}))
		return waitUntil(2*time.Second, 50*time.Millisecond, func() error {
			shown = value(t, alice, "the notifications shown", chromedp.Evaluate[[]string](
				`navigator.serviceWorker.getRegistration().then(r => r.getNotifications()).then(ns => ns.map(n => n.title + ': ' + n.body))`,
				chromedp.EvalAwaitPromise))
			if len(shown) == 0 {
				return errors.New("no notification shown")
			}
			return nil
		})
	})
	if len(shown) != 1 || !strings.HasPrefix(shown[0], "Bob: ") || !strings.Contains(shown[0], "are you there?") {
		t.Fatalf("notifications: %q (payload %s)", shown, payload)
	}
}

func pushMetrics(base string) string { return metricLines(base, "push") }

func metricLines(base string, subs ...string) string {
	res, err := http.Get(base + "/metrics")
	if err != nil {
		return err.Error()
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		for _, sub := range subs {
			if strings.Contains(l, sub) && !strings.HasPrefix(l, "#") && !strings.Contains(l, "_bucket") {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

// webPushNode starts a Web Push mock and a node that pushes to it at
// once (no grace period).
func webPushNode(t *testing.T) (*pushtest.WebPush, *nodetest.Node) {
	t.Helper()
	wp := pushtest.StartWebPush(t, "")
	n := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) {
		c.WebPushSubject = "mailto:ops@example.com"
		c.PushPrivateEndpoints = true // the mock push service listens on 127.0.0.1
		c.PushTLS = wp.TLSConfig()
		c.PushGrace = 0
	}))
	return wp, n
}

// allowNotifications grants the notifications permission to origin.
func allowNotifications(origin string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, cdpbrowser.SetPermission, cdpbrowser.SetPermissionParams{
			Permission: &cdpbrowser.PermissionDescriptor{Name: "notifications"}, Setting: cdpbrowser.PermissionSettingGranted, Origin: origin})
		return err
	})
}

// waitUntil calls fn every `every` until it returns nil or total passed
// (then its last error): CheckFor for a step that may be retried.
func waitUntil(total, every time.Duration, fn func() error) error {
	deadline := time.Now().Add(total)
	for {
		err := fn()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(every)
	}
}

// Signing out (here, or everywhere) ends this browser's Web Push: the
// server forgets its registration, so the next message to the signed-out
// user is pushed to her other devices and not to this browser (where the
// service worker would show its text to whoever uses it next), and the
// page unsubscribes the browser from its push service.
func TestSigningOutEndsThisBrowsersWebPush(t *testing.T) {
	wp, n := webPushNode(t)
	bobTok := n.NewUser(t, "bob")
	alice := browser(t)
	run(t, alice, "notifications allowed for the app",
		allowNotifications(n.HTTPURL))
	register(t, alice, n.HTTPURL, "alice")
	device := eval[string](t, alice, `localStorage.getItem('edgechat-device') || ''`)
	// Headless Chromium has no push service: what it would have given the
	// page is registered through the API, and the browser's subscription
	// is a stand-in that counts its unsubscriptions.
	standIn := chromedp.Evaluate[chromedp.Void](`navigator.serviceWorker.ready.then(() => {
		window.__unsubscribed = 0;
		PushManager.prototype.getSubscription = () => Promise.resolve({ unsubscribe: () => { window.__unsubscribed++; return Promise.resolve(true); } });
	})`, chromedp.EvalAwaitPromise)
	run(t, alice, "the page's service worker is active", standIn)
	browserSub, phoneSub := wp.Subscribe(), wp.Subscribe()
	regDevice := func(dev string, sub pushtest.Subscription) {
		reg, _ := json.Marshal(map[string]any{"device": dev, "platform": "webpush",
			"subscription": map[string]any{"endpoint": sub.Endpoint, "keys": map[string]string{"p256dh": sub.P256dh, "auth": sub.Auth}}})
		apiCall(t, "POST", n.HTTPURL+"/user/me/devices", n.Token(t, "alice"), string(reg))
	}
	regDevice(device, browserSub)
	regDevice("phone", phoneSub) // her phone, not connected: it gets the push
	registered := func() error {
		devs := string(apiCall(t, "GET", n.HTTPURL+"/user/me/devices", n.Token(t, "alice"), ""))
		if strings.Contains(devs, `"`+device+`"`) {
			return fmt.Errorf("this browser's push registration is still there: %s", devs)
		}
		return nil
	}

	run(t, alice, "alice signs out", click(`#sign-out`), chromedp.WaitVisible(chromedp.CSS(`#username`)))
	if err := waitUntil(5*time.Second, 50*time.Millisecond, registered); err != nil {
		t.Fatal(err)
	}
	run(t, alice, "the browser is unsubscribed from its push service", poll(`window.__unsubscribed > 0`))
	nodetest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		return postMessage(n.HTTPURL, bobTok, `{"to":"alice","cid":"p1","type":"text","body":"private words"}`)
	})
	pushes := func(sub pushtest.Subscription) int {
		k := 0
		for _, r := range wp.Requests() {
			if r.Subscription == sub.ID() {
				k++
			}
		}
		return k
	}
	nodetest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if pushes(phoneSub) == 0 {
			return fmt.Errorf("no push to her phone yet\n%s", pushMetrics(n.HTTPURL))
		}
		return nil
	})
	if k := pushes(browserSub); k != 0 {
		t.Fatalf("%d pushes to the browser alice signed out of", k)
	}

	// Sign out everywhere does the same for this browser.
	signIn(t, alice, n.HTTPURL, "alice")
	regDevice(device, browserSub)
	run(t, alice, "alice signs out everywhere",
		standIn,
		click(`#sign-out-everywhere`), chromedp.WaitVisible(chromedp.CSS(`#username`)))
	if err := waitUntil(5*time.Second, 50*time.Millisecond, registered); err != nil {
		t.Fatal(err)
	}
	run(t, alice, "the browser is unsubscribed again", poll(`window.__unsubscribed > 0`))
}

// Signing out closes the notifications the user's messages showed, the
// service worker's (Web Push) and the page's own: they stayed in the
// system's notification list with the message text, for the next person
// at a shared computer to read.
func TestSigningOutClosesTheUsersNotifications(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "alice")
	bobTok := n.NewUser(t, "bob")
	alice := browser(t)
	run(t, alice, "notifications allowed for the app", allowNotifications(n.HTTPURL))
	signIn(t, alice, n.HTTPURL, "alice")
	run(t, alice, "a push shown by the service worker, and the page counts the notifications it closes",
		chromedp.Evaluate[chromedp.Void](`navigator.serviceWorker.ready.then((r) => r.showNotification('Bob', { body: 'private words', tag: 'user:bob' }))`, chromedp.EvalAwaitPromise),
		chromedp.Evaluate[chromedp.Void](`(() => { window.__closed = 0; const close = Notification.prototype.close;
			Notification.prototype.close = function () { window.__closed++; return close.call(this); }; })()`),
		setHidden(true))
	if err := postMessage(n.HTTPURL, bobTok, `{"to":"alice","cid":"p1","type":"text","body":"more private words"}`); err != nil {
		t.Fatal(err)
	}
	run(t, alice, "bob's message comes into the hidden tab (the page shows a notification)",
		poll(`document.title === '(1) edgechat'`))
	run(t, alice, "alice signs out", click(`#sign-out`), chromedp.WaitVisible(chromedp.CSS(`#username`)))
	left := func() int {
		return value(t, alice, "the service worker's notifications", chromedp.Evaluate[int](
			`navigator.serviceWorker.ready.then((r) => r.getNotifications()).then((ns) => ns.length)`, chromedp.EvalAwaitPromise))
	}
	if err := waitUntil(5*time.Second, 50*time.Millisecond, func() error {
		if k := left(); k != 0 {
			return fmt.Errorf("%d notifications of the service worker left", k)
		}
		if k := eval[int](t, alice, `window.__closed`); k < 1 {
			return fmt.Errorf("the page closed %d of its notifications", k)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// A browser the server would not register for Web Push (here: the user
// has the most devices there may be, 409 too_many_devices) says so: the
// page only logged it to the console, and the user, who had allowed
// notifications, waited for pushes that never came.
func TestAPushRegistrationRefusedIsShown(t *testing.T) {
	wp, n := webPushNode(t)
	n.NewUser(t, "alice")
	for i := 0; i < 20; i++ {
		sub := wp.Subscribe()
		reg, _ := json.Marshal(map[string]any{"device": fmt.Sprintf("phone-%d", i), "platform": "webpush",
			"subscription": map[string]any{"endpoint": sub.Endpoint, "keys": map[string]string{"p256dh": sub.P256dh, "auth": sub.Auth}}})
		apiCall(t, "POST", n.HTTPURL+"/user/me/devices", n.Token(t, "alice"), string(reg))
	}
	// Headless Chromium has no push service: the page's subscription is
	// a stand-in of what one would have given.
	sub := wp.Subscribe()
	js, _ := json.Marshal(map[string]any{"endpoint": sub.Endpoint, "keys": map[string]string{"p256dh": sub.P256dh, "auth": sub.Auth}})
	alice := browser(t)
	run(t, alice, "notifications allowed, and a push subscription at hand",
		allowNotifications(n.HTTPURL),
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
				Source: `if (self.PushManager) PushManager.prototype.getSubscription = () => Promise.resolve({ toJSON: () => (` + string(js) + `), unsubscribe: () => Promise.resolve(true) });`})
			return err
		}))
	signIn(t, alice, n.HTTPURL, "alice")
	run(t, alice, "the page says this browser gets no pushes",
		poll(`/notifications/i.test(document.querySelector('.error').textContent)`))
	if got := textOf(t, alice, `.error`); !strings.Contains(got, "device") {
		t.Fatalf("the page says %q, not why", got)
	}
}
