package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	edgechat "github.com/edgechat/edgechat/clients/go"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/node/nodetest"
)

// gateway is a reverse proxy in front of one node (HTTP and MQTT over
// WebSocket), as a TLS terminator or an ingress per node would be: once
// the node is gone it answers 502 Bad Gateway itself.
func gateway(t *testing.T, n *nodetest.Node) (httpURL, wsURL string) {
	t.Helper()
	u, err := url.Parse(n.HTTPURL)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ErrorLog = log.New(io.Discard, "", 0) // "proxy error" once the node is gone: expected
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	return srv.URL, "ws" + strings.TrimPrefix(srv.URL, "http") + "/mqtt"
}

// A client that reaches each node through its own gateway fails over
// with its reads too: the gateway of the dead node answers 502 (not "no
// answer", not 503), and the catch-up sync moves to the next node's API
// rather than ask the dead node's gateway again for ever.
func TestReadsMoveOnFromTheGatewayOfADeadNode(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	aliceTok, bobTok := n1.NewUser(t, "alice"), n1.NewUser(t, "bob")
	_, ws1 := gateway(t, n1)
	_, ws2 := gateway(t, n2)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	alice := dial(t, []string{n3.WSURL}, "", aliceTok, nil, nil)
	bb := newInbox()
	bob := dial(t, []string{ws1, ws2}, "", bobTok, bb, nil)
	first, err := alice.Send(ctx, "bob", "before the failure")
	if err != nil {
		t.Fatal(err)
	}
	bb.waitOnce(t, first.ID)

	if err := n1.Stop(); err != nil { // bob's node dies; its gateway stays
		t.Fatal(err)
	}
	var later []edgechat.Message
	for i := range 3 {
		m, err := alice.Send(ctx, "bob", fmt.Sprintf("after %d", i))
		if err != nil {
			t.Fatal(err)
		}
		later = append(later, m)
	}
	testutil.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if !bob.Connected() {
			return errors.New("bob not reconnected")
		}
		return nil
	})
	sctx, scancel := context.WithTimeout(ctx, 15*time.Second)
	defer scancel()
	if err := bob.Sync(sctx); err != nil {
		t.Fatalf("bob's Sync after his node died (its gateway answers 502, n2 works): %v", err)
	}
	for _, m := range later {
		bb.waitOnce(t, m.ID)
	}
	if h, _, err := bob.History(ctx, "alice", "", 10); err != nil || len(h) != 4 {
		t.Fatalf("bob's History after the failover: %d messages, %v", len(h), err)
	}
}

// A refresh whose answer was lost is sent again through the next node
// with its Idempotency-Key (the key is decided in the replicated state,
// so any node answers the retry), and a refresh whose node is dead
// behind its gateway (502) moves on too: the session goes on. Before,
// the token source returned the error and asked the same node again
// next time: behind a gateway, the dead node's for ever, and once the
// access token expired the user could neither connect nor call the API.
func TestRefreshMovesOnFromTheGatewayOfADeadNode(t *testing.T) {
	nodes := nodetest.StartCluster(t, 3)
	n1, n2 := nodes[0], nodes[1]
	n1.NewUser(t, "alice")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tk, err := edgechat.Login(ctx, n1.HTTPURL, "alice", nodetest.Password("alice"))
	if err != nil {
		t.Fatal(err)
	}
	gw1, loseNext, lost := testutil.LostAnswerProxy(t, n1.HTTPURL, "/auth/refresh")
	alive := func(access string) {
		t.Helper()
		var me struct {
			UserID string `json:"userId"`
		}
		if err := getJSON(ctx, n2.HTTPURL+"/user/me", access, &me); err != nil || me.UserID != "alice" {
			t.Fatalf("GET /user/me with the new access token: %+v %v (the session must live)", me, err)
		}
	}

	loseNext()
	tk.Expiry = time.Now() // due for a refresh
	var saved []edgechat.Tokens
	ts := edgechat.RefreshingTokenSourceURLs([]string{gw1, n2.HTTPURL}, tk, func(nt edgechat.Tokens) { saved = append(saved, nt) })
	access, err := ts(ctx)
	if err != nil || !lost() || len(saved) != 1 {
		t.Fatalf("a refresh whose answer n1 lost (n2 works): %v (lost: %v, %d pairs saved)", err, lost(), len(saved))
	}
	alive(access)

	if err := n1.Stop(); err != nil { // its gateway answers 502 from now on
		t.Fatal(err)
	}
	next := saved[0]
	next.Expiry = time.Now()
	saved = nil
	ts = edgechat.RefreshingTokenSourceURLs([]string{gw1, n2.HTTPURL}, next, func(nt edgechat.Tokens) { saved = append(saved, nt) })
	if access, err = ts(ctx); err != nil || len(saved) != 1 {
		t.Fatalf("a refresh after n1 died behind its gateway (n2 works): %v (%d pairs saved)", err, len(saved))
	}
	alive(access)
	if _, err := edgechat.Refresh(ctx, n2.HTTPURL, saved[0].RefreshToken); err != nil {
		t.Fatalf("the next rotation: %v", err)
	}
}

// A gateway's 502 or 504 for a node that is gone is an error wrapping
// ErrUnavailable (ask again), as the node's own 503 is: an app that
// tells "try again" from a refusal by errors.Is must not show a dead
// node as a refusal.
func TestAGatewaysAnswerForADeadNodeIsErrUnavailable(t *testing.T) {
	n := nodetest.StartNode(t)
	tok := n.NewUser(t, "alice")
	n.NewUser(t, "bob")
	gw, ws := gateway(t, n)
	alice := dial(t, []string{ws}, gw, tok, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, _, err := alice.History(ctx, "bob", "", 10); err != nil {
		t.Fatal(err)
	}
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	_, _, err := alice.History(ctx, "bob", "", 10)
	if !errors.Is(err, edgechat.ErrUnavailable) || errors.Is(err, edgechat.ErrRefused) {
		t.Fatalf("History through the gateway of a dead node: %v; want an error wrapping ErrUnavailable, not ErrRefused", err)
	}
}
