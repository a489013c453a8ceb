package region_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/node/nodetest"
)

// Over a 300 ms one-way delay, a backlog of 2,000 direct messages of
// about 1 KiB (what is left after the first cursor commit: at least 500,
// some 9 publishes each 500; usually nearly all, ~34 publishes) drains
// in a few round trips per 1,024 messages, where one publish per round
// trip would take at least 34 × 600 ms ≈ 20 s (measured: 22 s, against
// 4 s with the window): the link keeps several publishes in flight.
// Every message reaches bob once, each sender's in order.
func TestLinkWindowOverDelay(t *testing.T) {
	eu, us := startRegions(t, 1, "eu", "us", nil)
	us.in.SetDelay(300 * time.Millisecond)
	us.in.setCut(true) // the link reconnects through the delay once restored
	bob := connect(t, us.nodes[0], "bob", "phone", us.newUser(t, "bob"))
	bob.MustSub(t, "user/bob/newMessage")

	const senders, each = 4, 500
	pad := strings.Repeat("x", 900)
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for s := range senders {
		name := fmt.Sprintf("alice%d", s)
		alice := connect(t, eu.nodes[0], name, "phone", eu.newUser(t, name))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range each {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				pr, err := alice.Publish(ctx, &paho.Publish{QoS: 1, Topic: "user/bob@us/newMessage",
					Payload: []byte(textMsg(fmt.Sprintf("%d-%04d", s, k), pad))})
				cancel()
				if err != nil || pr.ReasonCode != 0 {
					errs <- fmt.Errorf("%s message %d: %v", name, k, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	backlog := func() uint64 {
		n, err := eu.nodes[0].Region.Backlog("us")
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	const n = senders * each
	if b := backlog(); b != n {
		t.Fatalf("backlog %d while cut; want %d", b, n)
	}
	us.in.setCut(false)
	// From the first cursor commit (the reconnect's backoff left out).
	nodetest.CheckFor(t, 60*time.Second, time.Millisecond, func() error {
		if b := backlog(); b >= n {
			return fmt.Errorf("backlog %d", b)
		}
		return nil
	})
	rest, start := backlog(), time.Now()
	nodetest.CheckFor(t, 60*time.Second, time.Millisecond, func() error {
		if b := backlog(); b != 0 {
			return fmt.Errorf("backlog %d", b)
		}
		return nil
	})
	took := time.Since(start)
	t.Logf("the last %d messages drained in %v", rest, took.Round(time.Millisecond))
	if rest < 500 {
		t.Fatalf("only %d messages after the first cursor commit: the test measures too little", rest)
	}
	if took > 8*time.Second {
		t.Fatalf("the last %d messages took %v over a 600 ms round trip: one publish at a time?", rest, took)
	}

	next := make([]int, senders)
	for range n {
		e := decode(t, bob.Next(t).Payload)
		var s, k int
		if _, err := fmt.Sscanf(e.CID, "%d-%d", &s, &k); err != nil || s < 0 || s >= senders {
			t.Fatalf("unexpected cid %q", e.CID)
		}
		if k != next[s] {
			t.Fatalf("sender %d: message %d arrived when %d was next", s, k, next[s])
		}
		next[s]++
	}
	if extra, ok := bob.TryNext(); ok {
		t.Fatalf("a duplicate delivery: %.60s", extra.Payload)
	}
}
