package broker

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
)

// Another region's link is sent away as the users are: a node cut off
// from its cluster closes it (DISCONNECT 0x89) and refuses it (CONNACK
// 0x88) until it hears a leader; a node that left its cluster closes it
// with 0x8B, as LeftCluster always said. Both passed over links: the
// sweep read only connections with a user ID, and the cut-off refusal
// let links in, so a link stayed on a node that could commit none of its
// batches and got none of the live traffic it subscribed to.
func TestLinksAreSentAwayByANodeCutOffOrGone(t *testing.T) {
	e := startBrokerWith(t, nil, func(d *Deps) { d.Links = &orderLinks{} })
	defer e.close()
	opts := mqtttest.Options{ClientID: "$link/eu", Username: "$link/eu", Password: "s"}
	wantClosed := func(link *mqtttest.Client, what string, code byte, reason string) {
		t.Helper()
		testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
			got, ok := link.ServerDisconnect()
			if !ok {
				return fmt.Errorf("%s: the link is still connected", what)
			}
			if got != code || !strings.Contains(link.ServerDisconnectReason(), reason) {
				return fmt.Errorf("%s: the link got DISCONNECT %#x %q, want %#x saying %q", what, got, link.ServerDisconnectReason(), code, reason)
			}
			return nil
		})
	}

	link := mqtttest.MustDial(t, e.addr, opts)
	e.b.SetCutOff(true)
	wantClosed(link, "cut off", 0x89, "cut off from its cluster; reconnect to another node")
	c, ca, err := mqtttest.Open(e.addr, opts)
	if err == nil {
		_ = c.Disconnect(&paho.Disconnect{})
		t.Fatal("a node cut off from its cluster took a link")
	}
	if ca == nil || ca.ReasonCode != 0x88 || !strings.Contains(ca.Properties.ReasonString, "cut off") {
		t.Fatalf("a link's CONNECT to a node cut off: %+v %v, want CONNACK 0x88 saying it is cut off", ca, err)
	}

	e.b.SetCutOff(false)
	link = mqtttest.MustDial(t, e.addr, opts)
	e.b.LeftCluster()
	wantClosed(link, "left", 0x8B, "")
}
