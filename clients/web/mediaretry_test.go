package web_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A picture whose preview could not be read once (the network dropped
// the request) is read again: it stayed a blurred placeholder for as
// long as the conversation was shown, since the message is drawn once
// and nothing asked for it again.
func TestAPictureThatFailedToLoadOnceLoads(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "alice")
	bobTok := n.NewUser(t, "bob")
	if err := postMessage(n.HTTPURL, bobTok, `{"to":"alice","cid":"t1","type":"text","body":"look"}`); err != nil {
		t.Fatal(err)
	}
	alice := browser(t)
	signIn(t, alice, n.HTTPURL, "alice")
	run(t, alice, "alice opens bob's chat; her next media read fails",
		click(`[data-conv="d:bob"]`),
		poll(shows("look", false)),
		chromedp.Evaluate[chromedp.Void](`(() => {
			const real = window.fetch;
			window.__mediaFailed = 0;
			window.fetch = function (u, o) {
				if (String(u).includes('/media/') && window.__mediaFailed === 0) {
					window.__mediaFailed++;
					return Promise.reject(new TypeError('Failed to fetch'));
				}
				return real.apply(this, arguments);
			};
		})()`),
	)

	png, err := os.ReadFile(writePNG(t, "view.png"))
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest("POST", n.HTTPURL+"/media?name=view.png", bytes.NewReader(png))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+bobTok)
	req.Header.Set("Content-Type", "image/png")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var up struct{ MediaID string }
	err = json.NewDecoder(res.Body).Decode(&up)
	res.Body.Close()
	if err != nil || up.MediaID == "" {
		t.Fatalf("upload: %s %v", res.Status, err)
	}
	sendWhenReady(t, n, bobTok, "alice", up.MediaID)
	run(t, alice, "the picture arrives; its first read fails",
		chromedp.WaitVisible(chromedp.CSS(`.msg[data-id] img.thumb`)),
		poll(`window.__mediaFailed === 1`),
	)
	run(t, alice, "the picture shows", chromedp.WaitVisible(chromedp.CSS(`.msg[data-id] img.thumb:not(.blurred)`)))
}

// A picture of another region that this one could not fetch yet (the
// link down: GET /media/{id} answers 503 media_unavailable) opened in
// the viewer: the page said "media: 503". It says what the server says:
// the other region cannot be reached now.
func TestAPictureNotFetchedFromItsRegionSaysSo(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "alice")
	bobTok := n.NewUser(t, "bob")
	png, err := os.ReadFile(writePNG(t, "view.png"))
	if err != nil {
		t.Fatal(err)
	}
	var up struct{ MediaID string }
	if err := json.Unmarshal(apiUpload(t, n.HTTPURL, bobTok, png), &up); err != nil || up.MediaID == "" {
		t.Fatalf("upload: %v", err)
	}
	sendWhenReady(t, n, bobTok, "alice", up.MediaID)
	// The picture itself answered as a region that cannot fetch it from
	// its source does (services/media: 503 media_unavailable).
	u, _ := url.Parse(n.HTTPURL)
	node := httputil.NewSingleHostReverseProxy(u)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/media/"+up.MediaID {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Retry-After", "30")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `{"error":{"code":"media_unavailable","message":"media of another region, which cannot be reached now; retry"}}`)
			return
		}
		node.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	alice := browser(t)
	signIn(t, alice, front.URL, "alice")
	run(t, alice, "alice opens bob's picture",
		click(`[data-conv="d:bob"]`),
		chromedp.WaitVisible(chromedp.CSS(`.msg[data-id] .thumbbtn`)),
		click(`.msg[data-id] .thumbbtn`),
		poll(`document.querySelector('.conv-error').textContent !== '' || document.querySelector('dialog.viewer') !== null`),
	)
	if got := textOf(t, alice, `.conv-error`); !strings.Contains(got, "cannot be reached now") {
		t.Fatalf("the page says %q, want that the picture's region cannot be reached now", got)
	}
}

// apiUpload posts a PNG to POST /media and gives the answer's body.
func apiUpload(t *testing.T, base, tok string, png []byte) []byte {
	t.Helper()
	req, err := http.NewRequest("POST", base+"/media?name=view.png", bytes.NewReader(png))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "image/png")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode/100 != 2 {
		t.Fatalf("upload: %s %v", res.Status, err)
	}
	return b
}

// sendWhenReady waits until the sender's upload mediaID is processed,
// then sends it to peer (cid m1) through the HTTP API.
func sendWhenReady(t *testing.T, n *nodetest.Node, tok, peer, mediaID string) {
	t.Helper()
	nodetest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		var info struct{ Status string }
		if err := tryGetJSON(n.HTTPURL, tok, "/media/"+mediaID+"/info", &info); err != nil {
			return err
		}
		if info.Status != "ready" {
			return fmt.Errorf("media %s", info.Status)
		}
		return nil
	})
	if err := postMessage(n.HTTPURL, tok, fmt.Sprintf(`{"to":%q,"cid":"m1","type":"media","media":{"id":%q}}`, peer, mediaID)); err != nil {
		t.Fatal(err)
	}
}
