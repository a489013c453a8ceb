package web_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A Block (or Add contact) the server did not take shows why, and can be
// pressed again: the button stayed disabled after the failure (it is
// drawn anew only when the contact or block changes), so the user had to
// reload to try again; and the next try takes the error away.
func TestAFailedBlockCanBeTriedAgain(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "alice")
	bobTok := n.NewUser(t, "bob")
	if err := postMessage(n.HTTPURL, bobTok, `{"to":"alice","cid":"b1","type":"text","body":"hi"}`); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(n.HTTPURL)
	if err != nil {
		t.Fatal(err)
	}
	node := httputil.NewSingleHostReverseProxy(u)
	var refuse atomic.Int32
	refuse.Store(1)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && (r.URL.Path == "/user/me/blocks" || r.URL.Path == "/user/me/contacts") && refuse.Add(-1) >= 0 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `{"error":{"code":"unavailable","message":"not now"}}`)
			return
		}
		node.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)

	alice := browser(t)
	signIn(t, alice, front.URL, "alice")
	run(t, alice, "alice opens bob's chat and blocks him; the server does not take it",
		click(`[data-conv="d:bob"]`),
		click(`#block-toggle[aria-pressed="false"]`),
		poll(`document.querySelector('.error').textContent.includes('not now')`))
	run(t, alice, "she can press Block again, and it works",
		poll(`!document.querySelector('#block-toggle').disabled`),
		click(`#block-toggle[aria-pressed="false"]`),
		chromedp.WaitVisible(chromedp.CSS(`#block-toggle[aria-pressed="true"]`)))
	// The error said what the last try did; the try that worked takes it
	// away (it stayed, over a block that had worked).
	if got := textOf(t, alice, `.error`); got != "" {
		t.Fatalf("the page still says %q", got)
	}

	refuse.Store(1)
	run(t, alice, "the same for Add contact",
		click(`#contact-toggle[aria-pressed="false"]`),
		poll(`document.querySelector('.error').textContent.includes('not now')`),
		poll(`!document.querySelector('#contact-toggle').disabled`),
		click(`#contact-toggle[aria-pressed="false"]`),
		chromedp.WaitVisible(chromedp.CSS(`#contact-toggle[aria-pressed="true"]`)))
}
