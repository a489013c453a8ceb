package web_test

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A page reload whose session refresh lost its answer on the network
// (the server rotated the cookie; the answer and its Set-Cookie never
// reached the browser) must not cost the session: the next reload sends
// the old cookie again under the same Idempotency-Key and the server
// answers it as a retry. It used to take the old cookie for a stolen
// one, end the session and ask for the password.
func TestAReloadAfterALostRefreshAnswerKeepsTheSession(t *testing.T) {
	n := nodetest.StartNode(t)
	target, err := url.Parse(n.HTTPURL)
	if err != nil {
		t.Fatal(err)
	}
	var dropNext atomic.Bool
	rp := httputil.NewSingleHostReverseProxy(target)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/auth/refresh" && dropNext.CompareAndSwap(true, false) {
			req := r.Clone(r.Context())
			req.RequestURI, req.Host = "", target.Host
			req.URL.Scheme, req.URL.Host = target.Scheme, target.Host
			if resp, err := http.DefaultTransport.RoundTrip(req); err == nil {
				resp.Body.Close() // the node rotated the session
			}
			if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
				conn.Close() // and its answer is lost
			}
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(proxy.Close)

	alice := browser(t)
	register(t, alice, proxy.URL, "alice")
	dropNext.Store(true)
	// The browser may itself send the request again on a new connection
	// (the dropped one was a kept-alive one), with the same cookie and
	// key; else the page shows the sign-in form and a reload does it.
	run(t, alice, "a reload whose refresh answer is lost",
		chromedp.Reload(),
		poll(`!!(document.querySelector('.state[data-state="online"]') || document.querySelector('#username'))`),
	)
	if dropNext.Load() {
		t.Fatal("the page did not refresh its session through the proxy")
	}
	if eval[bool](t, alice, `!!document.querySelector('#username')`) {
		run(t, alice, "the next reload", chromedp.Reload())
	}
	run(t, alice, "the page is signed in, the session kept",
		chromedp.WaitVisible(chromedp.CSS(`.state[data-state="online"]`)),
	)
}
