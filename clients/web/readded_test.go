package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A member removed and added back before the page has read the group
// list again (an admin who undoes a removal at once, a tool that syncs
// membership) must go on getting the group's messages live: the server
// dropped the page's subscription to the group with the removal
// (protocol.md: "Being added back needs a new SUBSCRIBE"), and the page,
// whose list reads never showed the group gone, kept it as subscribed
// and never subscribed again, so nothing of the group came live until
// the next connection. The proxy holds bob's list reads until both
// changes are committed.
func TestAMemberRemovedAndAddedBackAtOnceStillGetsTheGroupLive(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok := n.NewUser(t, "alice")
	n.NewUser(t, "bob")
	var g struct {
		GroupID string `json:"groupId"`
	}
	if err := json.Unmarshal(apiCall(t, "POST", n.HTTPURL+"/user/groups", aliceTok, `{"name":"Crew","members":["bob"]}`), &g); err != nil {
		t.Fatal(err)
	}

	u, err := url.Parse(n.HTTPURL)
	if err != nil {
		t.Fatal(err)
	}
	node := httputil.NewSingleHostReverseProxy(u)
	var (
		mu       sync.Mutex
		hold     chan struct{} // not nil: GET /user/groups waits for it to close
		held     = make(chan struct{}, 16)
		convsGot int // GET /chat/conversations answered since the release
	)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		h := hold
		mu.Unlock()
		if r.Method == http.MethodGet && r.URL.Path == "/user/groups" && h != nil {
			held <- struct{}{}
			<-h
		}
		node.ServeHTTP(w, r)
		if r.Method == http.MethodGet && r.URL.Path == "/chat/conversations" {
			mu.Lock()
			convsGot++
			mu.Unlock()
		}
	}))
	t.Cleanup(front.Close)

	bob := browser(t)
	signIn(t, bob, front.URL, "bob")
	// lastIs: the group's entry in the list ends with body (a group's
	// shows "sender: body").
	lastIs := func(body string) string {
		return `((document.querySelector('[data-conv="g:` + g.GroupID + `"] .conv-last') || {}).textContent || '').endsWith(': ` + body + `')`
	}
	send := func(cid, body string) {
		t.Helper()
		if err := postMessage(n.HTTPURL, aliceTok, `{"group":"`+g.GroupID+`","cid":"`+cid+`","type":"text","body":"`+body+`"}`); err != nil {
			t.Fatal(err)
		}
	}
	run(t, bob, "bob's page lists the group", poll(`document.querySelector('[data-conv="g:`+g.GroupID+`"]') !== null`))
	// Subscribed once the page follows its groups: messages then come
	// live. Two in a row shown within a second each, with nothing read
	// meanwhile but the first connection's catch-up, say so.
	shown := 0
	for i := 0; shown < 2; i++ {
		if i == 50 {
			t.Fatal("bob's page does not get the group's messages live")
		}
		body := fmt.Sprintf("before %d", i)
		send(fmt.Sprintf("b%d", i), body)
		ctx, cancel := context.WithTimeout(bob, time.Second)
		if chromedp.Do(ctx, poll(lastIs(body))) == nil {
			shown++
		} else {
			shown = 0
		}
		cancel()
	}

	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free) // before front.Close, which waits for held reads
	mu.Lock()
	hold = release
	mu.Unlock()
	members := "/user/groups/" + g.GroupID + "/members"
	apiCall(t, "DELETE", n.HTTPURL+members+"/bob", aliceTok, "") // alice removes bob
	select {
	case <-held: // the page reads its groups after the removal's event
	case <-time.After(10 * time.Second):
		t.Fatal("bob's page did not read its groups after the removal")
	}
	// The read the addition's event asks for waits behind that one in
	// the browser (one request at a time for a URL it may cache).
	apiCall(t, "POST", n.HTTPURL+members, aliceTok, `{"uid":"bob"}`) // and adds him back
	mu.Lock()
	hold, convsGot = nil, 0
	mu.Unlock()
	free()
	// Both reads answered (the group in each), each followed by the
	// conversation list: the page has done what the two events asked.
	nodetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if convsGot < 2 {
			return fmt.Errorf("%d conversation lists read since the release, want 2", convsGot)
		}
		return nil
	})
	send("after", "after")
	run(t, bob, "bob, added back, gets the group's next message live", poll(lastIs("after")))
}
