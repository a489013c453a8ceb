package web_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/node/nodetest"
)

// The browser's device ID names its Web Push registration, and the
// server pushes a device that is not connected: so while any tab of the
// app is open, one of them must be connected under that ID, or the
// browser is pushed (the service worker's notification on top of the
// page's own) for what the open app shows. The ID was held only by the
// tab that got it first, for its life: a tab that signed out and in
// again, a reloaded tab (the old page still held it as the new one
// asked), and a second tab left open after the first closed each ran
// under another ID, and the browser was pushed while the app was open.
func TestAnOpenTabIsTheBrowsersPushDevice(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "alice")
	tab := browser(t)
	signIn(t, tab, n.HTTPURL, "alice")
	device := eval[string](t, tab, `localStorage.getItem('edgechat-device') || ''`)
	if !strings.HasPrefix(device, "web-") {
		t.Fatalf("the browser's device ID: %q", device)
	}
	// The page names the client ID it connects with (data-device).
	const runsAs = `(() => { const s = document.querySelector('.state'); return s ? s.dataset.state + ' as ' + s.dataset.device : 'no app'; })()`
	connected := func(step string, tab context.Context) {
		t.Helper()
		want := "online as " + device
		if err := waitUntil(10*time.Second, 50*time.Millisecond, func() error {
			if got := eval[string](t, tab, runsAs); got != want {
				return fmt.Errorf("the tab is %s, want %s", got, want)
			}
			if !n.ClientConnected("alice/" + device) {
				return fmt.Errorf("the browser's device %q is not connected", device)
			}
			return nil
		}); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
	}
	connected("signed in", tab)

	run(t, tab, "alice signs out and in again in the same tab",
		click(`#sign-out`), chromedp.WaitVisible(chromedp.CSS(`#username`)),
		chromedp.SendKeys(chromedp.CSS(`#username`), "alice"),
		chromedp.SendKeys(chromedp.CSS(`#password`), nodetest.Password("alice")+"\n"),
		chromedp.WaitVisible(chromedp.CSS(`.state[data-state="online"]`)))
	connected("signed in again", tab)

	run(t, tab, "alice reloads the tab",
		chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS(`.state[data-state="online"]`)))
	connected("reloaded", tab)

	// Two other tabs of the browser (this one leaves the app).
	run(t, tab, "the tab leaves the app", chromedp.Navigate(n.HTTPURL+"/healthz"))
	first, closeFirst := chromedp.NewContext(tab)
	defer closeFirst()
	second, closeSecond := chromedp.NewContext(tab)
	defer closeSecond()
	for _, c := range []context.Context{first, second} {
		if err := chromedp.Do(c); err != nil { // opens the tab, for the context's life (not a step's)
			t.Fatal(err)
		}
	}
	run(t, first, "a first tab", chromedp.Navigate(n.HTTPURL+"/"), chromedp.WaitVisible(chromedp.CSS(`.state[data-state="online"]`)))
	connected("the first tab", first)
	run(t, second, "a second tab", chromedp.Navigate(n.HTTPURL+"/"), chromedp.WaitVisible(chromedp.CSS(`.state[data-state="online"]`)))
	if got := eval[string](t, second, runsAs); got == "online as "+device {
		t.Fatal("both tabs run as the browser's device")
	}
	closeFirst()
	connected("the second tab, left open", second)
}
