package e2e_test

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	edgechat "github.com/edgechat/edgechat/clients/go"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/node/nodetest"
)

// sdkGoroutines are the stacks of the goroutines of the SDK and of its
// MQTT library (the node under test uses neither).
func sdkGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		s := string(g)
		if (strings.Contains(s, "edgechat/clients/go.") || strings.Contains(s, "eclipse/paho.golang")) &&
			!strings.Contains(s, "sdkGoroutines") && !strings.Contains(s, "e2e_test.Test") {
			out = append(out, s)
		}
	}
	return out
}

func checkNoSDKGoroutines(t *testing.T, what string) {
	t.Helper()
	testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if gs := sdkGoroutines(); len(gs) > 0 {
			return fmt.Errorf("%s: %d goroutines of the SDK still run, the first:\n%s", what, len(gs), gs[0])
		}
		return nil
	})
}

// Close leaves no goroutine of the client behind: after a client that
// sent, watched presence, followed a group, reconnected after a drop and
// uploaded nothing; after a Dial refused; after a Dial whose ctx ended
// while the node could not be reached.
func TestCloseLeavesNoGoroutine(t *testing.T) {
	n := nodetest.StartNode(t)
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	newGroup(t, n, bobTok, "leak", "alice")
	checkNoSDKGoroutines(t, "before any client")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	px := newProxy(t, strings.TrimPrefix(n.MQTTURL, "tcp://"))
	alice := dial(t, []string{px.URL()}, n.HTTPURL, aliceTok, newInbox(), nil)
	bob := dial(t, []string{n.WSURL}, "", bobTok, newInbox(), nil)
	if _, err := alice.Send(ctx, "bob", "hello"); err != nil {
		t.Fatal(err)
	}
	if err := alice.WatchPresence(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	px.cutAll()
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !alice.Connected() {
			return fmt.Errorf("not reconnected")
		}
		return nil
	})
	if _, err := alice.Send(ctx, "bob", "again"); err != nil {
		t.Fatal(err)
	}
	if err := alice.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if len(sdkGoroutines()) == 0 {
		t.Fatal("no goroutine of the SDK found while clients run: the filter finds nothing")
	}
	_ = alice.Close()
	_ = bob.Close()
	checkNoSDKGoroutines(t, "after Close")

	if _, err := edgechat.Dial(ctx, edgechat.Options{URLs: []string{n.WSURL}, Token: aliceTok + "x"}); err == nil {
		t.Fatal("a forged token dialled")
	}
	checkNoSDKGoroutines(t, "after a refused Dial")

	px.set(func(p *proxy) { p.paused = true })
	dctx, dcancel := context.WithTimeout(ctx, time.Second)
	_, err := edgechat.Dial(dctx, edgechat.Options{URLs: []string{px.URL()}, HTTPURL: n.HTTPURL, Token: aliceTok})
	dcancel()
	if err == nil {
		t.Fatal("dialled a paused proxy")
	}
	checkNoSDKGoroutines(t, "after a Dial that timed out")
}
