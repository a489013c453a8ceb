package main

import (
	"context"
	"fmt"
	"net/url"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// TestRollingRestartUnderLoad restarts every node of three, one at a
// time, with SIGTERM (a clean exit 0) while senders on all nodes publish
// durable messages; a sender whose node goes down reconnects to another.
// Every acknowledged message must end up on every node exactly once, in
// per-sender order.
func TestRollingRestartUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three real processes")
	}
	c := startCluster3(t)
	names := []string{"snd1", "snd2", "snd3"}
	tokens := c.addUsers("a long password", append(names, "sink")...)
	l := startLoad(tokens, names, "sink", c.mqttAddrs)
	defer func() {
		select {
		case <-l.stop:
		default:
			l.finish()
		}
	}()
	l.waitProgress(t, 50, 20*time.Second)

	for i := range 3 {
		lead, _ := c.leader()
		t0 := time.Now()
		down, back := c.restart(i, syscall.SIGTERM)
		// The restarted node is a voter again once it serves; wait for
		// writes to flow before taking the next one down, or two of three
		// would be away.
		l.waitProgress(t, 30, 30*time.Second)
		c.waitFormed(30 * time.Second)
		t.Logf("n%d (leader: %v) stopped in %v, serving again %v later; longest gap between acknowledgements %v",
			i+1, lead == i, down.Round(time.Millisecond), back.Round(time.Millisecond), l.longestGap(t0, time.Now()).Round(time.Millisecond))
	}
	l.waitProgress(t, 30, 20*time.Second)
	l.finish()
	for _, s := range l.senders {
		a, r, f, rc := s.snapshot()
		t.Logf("%s: %d acknowledged, %d refused, %d unanswered, %d reconnects", s.name, a, r, f, rc)
		if a == 0 {
			t.Errorf("%s got nothing acknowledged", s.name)
		}
	}
	for i := range 3 {
		verifyAcked(t, c.proc(i).http, tokens["sink"], l.senders, 30*time.Second)
	}
}

// TestWholeClusterStopStart stops all three nodes with SIGTERM and starts
// them again on their data dirs and cluster addresses: history, accounts
// (login), groups and read cursors are all back on every node, and new
// messages commit.
func TestWholeClusterStopStart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three real processes")
	}
	c := startCluster3(t)
	const password = "a long password"
	tokens := c.addUsers(password, "alice", "bob", "carol")

	// A group made on n2, DMs over MQTT on n1, group messages over HTTP on n3.
	var g struct {
		ID string `json:"groupId"`
	}
	if _, err := httpJSON("POST", c.proc(1).http+"/user/groups", tokens["alice"],
		map[string]any{"name": "ops", "members": []string{"bob", "carol"}}, &g); err != nil || g.ID == "" {
		t.Fatalf("create group: %v %+v", err, g)
	}
	alice := dialV5(t, c.proc(0).mqtt, "alice/phone", "alice", tokens["alice"])
	var dmIDs []string
	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		pr, err := alice.Publish(ctx, &paho.Publish{Topic: "user/bob/newMessage", QoS: 1,
			Payload: []byte(fmt.Sprintf(`{"cid":"dm-%d","type":"text","body":"dm %d"}`, i, i))})
		cancel()
		if err != nil || pr.ReasonCode != 0 {
			t.Fatalf("dm %d: %v %+v", i, err, pr)
		}
		dmIDs = append(dmIDs, pr.Properties.User.Get("id"))
	}
	_ = alice.Disconnect(&paho.Disconnect{})
	for i := range 2 {
		if _, err := httpJSON("POST", c.proc(2).http+"/chat/messages", tokens["carol"],
			map[string]any{"group": g.ID, "cid": fmt.Sprintf("g-%d", i), "type": "text", "body": fmt.Sprintf("g %d", i)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	// bob has read alice's first two messages (on n2): one unread left.
	if dmIDs[1] == "" {
		t.Fatal("PUBACK without an id property")
	}
	if _, err := httpJSON("POST", c.proc(1).http+"/chat/read", tokens["bob"], map[string]any{"with": "alice", "upTo": dmIDs[1]}, nil); err != nil {
		t.Fatal(err)
	}
	check := func(p *proc, bobToken string) error {
		var h struct{ Messages []syncedMsg }
		if _, err := httpJSON("GET", p.http+"/chat/history?with=alice", bobToken, nil, &h); err != nil {
			return err
		}
		if len(h.Messages) != 3 {
			return fmt.Errorf("%s: %d direct messages in history, want 3", p.http, len(h.Messages))
		}
		var gh struct{ Messages []syncedMsg }
		if _, err := httpJSON("GET", p.http+"/chat/history?group="+url.QueryEscape(g.ID), bobToken, nil, &gh); err != nil {
			return err
		}
		if len(gh.Messages) != 2 {
			return fmt.Errorf("%s: %d group messages in history, want 2", p.http, len(gh.Messages))
		}
		var gv struct {
			Name    string
			Members []struct {
				UserID string `json:"userId"`
			}
		}
		if _, err := httpJSON("GET", p.http+"/user/groups/"+g.ID, bobToken, nil, &gv); err != nil {
			return err
		}
		if gv.Name != "ops" || len(gv.Members) != 3 {
			return fmt.Errorf("%s: group %+v", p.http, gv)
		}
		var cv struct {
			Conversations []struct {
				Peer, Group string
				Unread      int
			}
		}
		if _, err := httpJSON("GET", p.http+"/chat/conversations", bobToken, nil, &cv); err != nil {
			return err
		}
		found := false
		for _, cc := range cv.Conversations {
			if cc.Peer == "alice" {
				found = true
				if cc.Unread != 1 {
					return fmt.Errorf("%s: %d unread from alice, want 1 (read cursor)", p.http, cc.Unread)
				}
			}
		}
		if !found {
			return fmt.Errorf("%s: no conversation with alice: %+v", p.http, cv)
		}
		return nil
	}
	for i := range 3 {
		checkFor(t, 20*time.Second, 50*time.Millisecond, func() error { return check(c.proc(i), tokens["bob"]) })
	}

	// Stop everything, then start all three at once (a lone node waits
	// for a quorum before it serves).
	for i := range 3 {
		c.proc(i).stop(t, syscall.SIGTERM)
	}
	t0 := time.Now()
	next := make([]*proc, 3)
	for i := range 3 {
		next[i] = startProc(t, nil, c.bin, c.args(i, c.proc(i).cluster, "")...)
	}
	for i := range 3 {
		next[i].waitServing(t, 60*time.Second)
	}
	c.mu.Lock()
	c.procs = next
	c.mu.Unlock()
	c.waitFormed(30 * time.Second)
	t.Logf("whole cluster serving again %v after the start", time.Since(t0).Round(time.Millisecond))

	for i := range 3 {
		p := c.proc(i)
		// Accounts: a password login on every node.
		var login struct{ AccessToken string }
		if _, err := httpJSON("POST", p.http+"/auth/login", "", map[string]string{"username": "bob", "password": password}, &login); err != nil || login.AccessToken == "" {
			t.Fatalf("login on n%d after the restart: %v", i+1, err)
		}
		checkFor(t, 20*time.Second, 50*time.Millisecond, func() error { return check(p, login.AccessToken) })
	}

	// New messages commit, and reach every node.
	alice = dialV5(t, c.proc(2).mqtt, "alice/phone", "alice", tokens["alice"])
	defer alice.Disconnect(&paho.Disconnect{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	pr, err := alice.Publish(ctx, &paho.Publish{Topic: "user/bob/newMessage", QoS: 1,
		Payload: []byte(`{"cid":"after","type":"text","body":"after"}`)})
	cancel()
	if err != nil || pr.ReasonCode != 0 {
		t.Fatalf("publish after the restart: %v %+v", err, pr)
	}
	for i := range 3 {
		checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
			msgs, err := syncMessages(c.proc(i).http, tokens["bob"])
			if err != nil {
				return err
			}
			n := 0
			for _, m := range msgs {
				if m.CID == "after" {
					n++
				}
			}
			if n != 1 || len(msgs) != 6 {
				return fmt.Errorf("n%d: %d messages, 'after' %d times", i+1, len(msgs), n)
			}
			return nil
		})
	}
}
