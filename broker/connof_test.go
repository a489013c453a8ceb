package broker

import (
	"errors"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
)

// The connection state kept on the client for the per-packet look-ups
// (connOf, mochi's Client.HookData) lives as long as b.conns's entry: set
// by OnConnect, gone at OnDisconnect, so a client object that outlives its
// connection is not taken for a live one (principal, pipeline, the group
// delivery shortcut).
func TestConnOfFollowsConnection(t *testing.T) {
	e := startBroker(t, nil)
	bob := mustV5(t, e.addr, "bob", "phone")
	cl, ok := e.b.Server().Clients.Get("bob/phone")
	if !ok {
		t.Fatal("bob/phone not connected")
	}
	ci := e.b.connOf(cl)
	if v, _ := e.b.conns.Load(cl); ci == nil || ci != v || ci.p.UserID != "bob" {
		t.Fatalf("connOf = %+v, b.conns = %v; want bob's connection in both", ci, v)
	}
	_ = bob.Conn.Close()
	testutil.CheckFor(t, waitFor, time.Millisecond, func() error {
		if _, ok := e.b.conns.Load(cl); ok {
			return errors.New("still in b.conns")
		}
		return nil
	})
	if ci := e.b.connOf(cl); ci != nil {
		t.Fatalf("connOf after disconnect = %+v, want nil", ci)
	}
	if e.b.groupDeliveryChecked(cl, "group/g1/newMessage") {
		t.Fatal("a disconnected client's deliveries skip the membership check")
	}
}
