package region_test

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

type linksAnswer struct {
	Region string `json:"region"`
	Links  []struct {
		Name         string  `json:"name"`
		State        string  `json:"state"`
		Backlog      uint64  `json:"backlog"`
		OldestAgeSec float64 `json:"oldestAgeSec"`
		Expired      uint64  `json:"expired"`
		Sent         struct {
			Messages, Bytes uint64
		} `json:"sent"`
	} `json:"links"`
}

func links(t *testing.T, n *nodetest.Node, tok string) linksAnswer {
	t.Helper()
	var a linksAnswer
	if c := call(t, n, tok, "GET", "/admin/links", nil, &a); c != http.StatusOK || len(a.Links) != 1 {
		t.Fatalf("GET /admin/links: %d %+v", c, a)
	}
	return a
}

// retentionLinked starts region eu linked to us, the link keeping a
// message 3 s and warning of a backlog after 200 ms, with alice of eu
// (an admin, as the first account) connected and bob of us; send
// publishes alice's text message cid to bob.
func retentionLinked(t *testing.T) (eu, us *region, adminTok, bobTok string, send func(cid string)) {
	t.Helper()
	eu, us = startLinked(t, 1, "eu", "us", nil, nil, nodetest.WithConfig(func(c *node.Config) {
		c.LinkRetention = 3 * time.Second
		c.LinkBacklogWarn = 200 * time.Millisecond
	}))
	adminTok = eu.newUser(t, "alice") // the first account is an admin
	bobTok = us.newUser(t, "bob")
	alice := connect(t, eu.nodes[0], "alice", "phone", adminTok)
	send = func(cid string) {
		t.Helper()
		if code, ack := alice.Pub(t, "user/bob@us/newMessage", 1, textMsg(cid, cid)); code != 0 {
			t.Fatalf("PUBACK %#x %q", code, ack.Properties.ReasonString)
		}
	}
	return eu, us, adminTok, bobTok, send
}

// GET /admin/links shows a link's state, backlog, age of the oldest
// queued message and traffic; a backlog older than --link-backlog-warn
// is a warning in /readyz; messages queued longer than --link-retention
// are dropped (counted) and never reach the other region, and the link
// goes on with what comes after.
func TestLinkStatusWarningAndRetention(t *testing.T) {
	eu, us, adminTok, bobTok, send := retentionLinked(t)
	if c := call(t, eu.nodes[0], bobTok, "GET", "/admin/links", nil, nil); c != http.StatusUnauthorized && c != http.StatusForbidden {
		t.Fatalf("GET /admin/links with another region's token: %d", c)
	}
	bodies := func() string {
		var got []string
		for _, e := range history(t, us.nodes[0], bobTok, "alice@eu") {
			got = append([]string{e.Body}, got...)
		}
		return strings.Join(got, ",")
	}
	send("m1")
	nodetest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if b := bodies(); b != "m1" {
			return fmt.Errorf("bob has %q", b)
		}
		return nil
	})
	// The cursor moves through eu's Raft log after us acknowledged: the
	// backlog empties a moment after bob has the message.
	nodetest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		a := links(t, eu.nodes[0], adminTok)
		if l := a.Links[0]; a.Region != "eu" || l.Name != "us" || l.State != "up" || l.Backlog != 0 || l.Sent.Messages != 1 || l.Sent.Bytes == 0 {
			return fmt.Errorf("link up: %+v", a)
		}
		return nil
	})

	us.in.setCut(true)
	send("m2")
	send("m3")
	nodetest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		l := links(t, eu.nodes[0], adminTok).Links[0]
		if l.State != "down" || l.Backlog != 2 || l.OldestAgeSec < 0.2 {
			return fmt.Errorf("%+v", l)
		}
		var ready struct {
			Warnings []string `json:"warnings"`
		}
		call(t, eu.nodes[0], "", "GET", "/readyz", nil, &ready)
		if len(ready.Warnings) != 1 || !strings.Contains(ready.Warnings[0], "region link us: 2 messages wait") {
			return fmt.Errorf("readyz warnings %q", ready.Warnings)
		}
		return nil
	})
	if n := counter(t, eu.nodes[0], "edgechat_region_link_backlog_oldest_seconds", `link="us"`); n < 0.2 {
		t.Errorf("edgechat_region_link_backlog_oldest_seconds %v", n)
	}
	// After 3 s both are dropped.
	nodetest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		l := links(t, eu.nodes[0], adminTok).Links[0]
		if l.Backlog != 0 || l.Expired != 2 {
			return errors.New("not expired yet")
		}
		return nil
	})
	if n := counter(t, eu.nodes[0], "edgechat_region_link_expired_total", `link="us"`); n != 2 {
		t.Errorf("edgechat_region_link_expired_total %v, want 2", n)
	}
	us.in.setCut(false)
	send("m4")
	nodetest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if b := bodies(); b != "m1,m4" {
			return fmt.Errorf("bob has %q", b)
		}
		return nil
	})
	// As for m1: counted once us acknowledged, a moment after bob has it.
	nodetest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if l := links(t, eu.nodes[0], adminTok).Links[0]; l.State != "up" || l.Backlog != 0 || l.Sent.Messages != 2 {
			return fmt.Errorf("after the outage: %+v", l)
		}
		return nil
	})
}

// A contact change (an outbox entry that is not a message, and never
// expires) staged while the link is down no longer stops
// --link-retention: the expired messages before it and behind it are
// dropped (they used to stay queued behind it for as long as the link
// was down), the change waits and reaches the other region when the
// link is back, and the backlog counts only what waits.
func TestRetentionDropsMessagesBehindAContactChange(t *testing.T) {
	eu, us, adminTok, bobTok, send := retentionLinked(t)
	send("m1")
	nodetest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if l := links(t, eu.nodes[0], adminTok).Links[0]; l.State != "up" || l.Backlog != 0 {
			return fmt.Errorf("%+v", l)
		}
		return nil
	})
	us.in.setCut(true)
	send("m2")
	if c := call(t, eu.nodes[0], adminTok, "POST", "/user/me/contacts", map[string]string{"uid": "bob@us"}, nil); c != http.StatusCreated && c != http.StatusOK {
		t.Fatalf("POST /user/me/contacts: %d", c)
	}
	send("m3")
	send("m4")
	nodetest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if l := links(t, eu.nodes[0], adminTok).Links[0]; l.Expired != 3 || l.Backlog != 1 {
			return fmt.Errorf("m2, m3 and m4 not all expired behind the contact change: %+v", l)
		}
		return nil
	})
	us.in.setCut(false)
	send("m5")
	nodetest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		var got []string
		for _, e := range history(t, us.nodes[0], bobTok, "alice@eu") {
			got = append([]string{e.Body}, got...)
		}
		if b := strings.Join(got, ","); b != "m1,m5" {
			return fmt.Errorf("bob has %q", b)
		}
		if n := counter(t, us.nodes[0], "edgechat_region_link_notices_total", `kind="relation",link="eu",result="applied"`); n != 1 {
			return fmt.Errorf("us applied %v contact changes", n)
		}
		if l := links(t, eu.nodes[0], adminTok).Links[0]; l.Backlog != 0 {
			return fmt.Errorf("after the outage: %+v", l)
		}
		return nil
	})
}
