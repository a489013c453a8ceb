package presence

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
)

// A user's only connection is on a node that is cut off from the
// others for longer than the heartbeat rules allow, and the user keeps
// heartbeating there all along. The nodes up cannot hear them: the user
// goes offline there (through the grace of the adoption when the
// cut-off node was the home, through the heartbeat rules otherwise).
// When the node returns, the user is online again at once, last seen at
// their last heartbeat, whichever node homes them. Before, a user homed
// on the cut-off node stayed offline, last seen when they connected,
// until their next heartbeat (up to an interval, 10 s by default): the
// node's heartbeats queued for the interim home were dropped when the
// user went back home (the re-announcement of the connection "covers"
// them, but it carries no heartbeat), while a user homed elsewhere was
// online at once (the queued heartbeats reached the home).
func TestAUserHeartbeatingOnACutOffNodeIsOnlineWhenItReturns(t *testing.T) {
	for _, home := range []string{"n3", "n1"} {
		t.Run("homed on "+home, func(t *testing.T) {
			net, clk, svc := startFakeCluster(t)
			uid := userHomedOn(home)
			svc["n3"].Connected(uid, "phone")
			testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
				if n := connsOf(svc[home], uid); n != 1 {
					return fmt.Errorf("the home counts %d connections", n)
				}
				return nil
			})
			refresh := func() {
				for _, s := range svc {
					s.cl.refreshMembers()
				}
			}
			net.setDown("n3")
			refresh()
			var beat time.Time
			per := interval / svc["n3"].period
			for i := range 7 * per {
				clk.Advance(svc["n3"].period)
				for _, s := range svc {
					s.tick()
				}
				if i%per == per-1 {
					beat = clk.Now()
					svc["n3"].Heartbeat(uid)
				}
			}
			if got := net.published(); len(got) == 0 || got[len(got)-1] != uid+":offline" {
				t.Fatalf("during the cut: published %v, want the user offline for the nodes up", got)
			}
			n := len(net.published())
			net.setDown()
			refresh()
			svc["n3"].cl.hello(context.Background(), "n1")
			svc["n3"].cl.hello(context.Background(), "n2")
			testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
				h := svc["n1"].Home(uid)
				if p := svc[h].Status(uid); p.Status != wire.StatusOnline || !p.LastSeen.Equal(publicTime(beat)) {
					return fmt.Errorf("after n3 returned, the home %s says %+v, want online, last seen %s", h, p, beat)
				}
				if got := net.published()[n:]; !slices.Equal(got, []string{uid + ":online"}) {
					return fmt.Errorf("after n3 returned: published %v, want online", got)
				}
				return nil
			})
		})
	}
}
