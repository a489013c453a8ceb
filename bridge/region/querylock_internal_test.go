package region

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
)

// A linked region that accepts TCP and never answers the CONNECT (down,
// overloaded, a black hole behind its load balancer): each request over
// the node's query connection gives up at its own deadline, sharing the
// one dial in flight. connect held the query client's mutex while it
// dialled and waited for the CONNACK, so a 2 s look-up (a block of a
// user of that region) or search waited for another request's 10 s dial.
func TestQueryGivesUpAtItsDeadlineWhileAnotherDials(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var mu sync.Mutex
	var held []net.Conn
	accepted := func() int { mu.Lock(); defer mu.Unlock(); return len(held) }
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c) // says nothing: no CONNACK
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			_ = c.Close()
		}
	}()
	e := testEphemeral(t)
	b := e.b
	b.cfg.Timeout, b.cfg.SearchTimeout, b.cfg.Node = 10*time.Second, 2*time.Second, "n1"
	b.links = map[string]Link{"us": {Name: "us", URL: "tcp://" + ln.Addr().String(), Secret: "a-shared-link-secret-of-the-test"}}
	b.q = queries{clients: map[string]*queryClient{}, cache: map[string]cachedProfile{}}

	// GET /user/bob@us: no deadline of its own, the dial is bounded by
	// Config.Timeout (10 s).
	first := make(chan error, 1)
	go func() { _, err := b.RemoteProfile(context.Background(), "bob@us"); first <- err }()
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if accepted() == 0 {
			return errors.New("the first request has not dialled yet")
		}
		return nil
	})
	// Meanwhile alice blocks carol@us (the users service allows the
	// look-up 2 s), and searches (2 s for each region).
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	_, err = b.RemoteProfile(ctx, "carol@us")
	took := time.Since(start)
	start = time.Now()
	_, unanswered := b.RemoteSearch(context.Background(), "bo", 10)
	tookSearch := time.Since(start)
	if took > 3*time.Second || tookSearch > 3*time.Second || err == nil || len(unanswered) != 1 {
		t.Fatalf("a 2 s look-up: %v after %v; a 2 s search: unanswered %v after %v", err, took, unanswered, tookSearch)
	}
	if n := accepted(); n != 1 {
		t.Fatalf("%d connections dialled, want the one in flight shared", n)
	}
	b.closeQueries() // ends the dial in flight
	select {
	case err := <-first:
		if err == nil {
			t.Fatal("the first look-up succeeded without an answer")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the first look-up did not end when the queries closed")
	}
}
