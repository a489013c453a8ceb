package push_test

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgechat/edgechat/bridge/push"
	"github.com/edgechat/edgechat/internal/testutil"
)

// stormPrefs makes every read of mutes fail while fail is set, and wait
// for hold (when set) to close.
type stormPrefs struct {
	*world
	fail  atomic.Bool
	hold  chan struct{}
	reads atomic.Int64
}

func (p *stormPrefs) Mutes(uid string, at time.Time) ([]push.Mute, error) {
	p.reads.Add(1)
	if p.hold != nil {
		<-p.hold
	}
	if p.fail.Load() {
		return nil, errFlaky
	}
	return p.world.Mutes(uid, at)
}

// The sender holds no goroutine per message, however many messages wait
// for a decision: not when a read every decision needs fails for a
// while (each message is planned again 5 s later: a database refusing
// reads, a failure storm) and not when decisions are slower than
// messages come due (each due message waited for its decision in a
// goroutine of its own). Every message is pushed once when the reads
// work again.
func TestSenderHoldsNoGoroutinePerMessageWaitingForADecision(t *testing.T) {
	for _, storm := range []string{"failing reads", "slow reads"} {
		t.Run(storm, func(t *testing.T) {
			const users, msgs = 20, 2000
			w := newWorld()
			for i := range users {
				uid := fmt.Sprintf("u%02d", i)
				w.register(uid, "phone", push.Device{Platform: push.APNs, Token: "tok-" + uid})
			}
			prefs := &stormPrefs{world: w}
			release := make(chan struct{})
			if storm == "failing reads" {
				prefs.fail.Store(true)
			} else {
				prefs.hold = release
			}
			p := &scripted{}
			s, reg := newSender(t, w, p, push.SenderConfig{NoGrace: true, ProgressEvery: 10 * time.Millisecond},
				func(d *push.SenderDeps) { d.Preferences = prefs })
			base := runtime.NumGoroutine() // before the sender's own (a few dozen, however many messages)
			cancel, done := goRun(s)
			t.Cleanup(func() { cancel(); <-done })
			t.Cleanup(func() {
				select {
				case <-release:
				default:
					close(release)
				}
			})
			for i := range msgs {
				s.Staged(w.stage(fmt.Sprintf("u%02d", i%users), "hello"))
			}
			started := int64(msgs) // every message decided once, and failed
			if storm == "slow reads" {
				started = 8 // decisions waiting for the read
			}
			testutil.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
				if n := prefs.reads.Load(); n < started {
					return fmt.Errorf("%d decisions started, want %d", n, started)
				}
				return nil
			})
			testutil.CheckFor(t, 2*time.Second, 10*time.Millisecond, func() error {
				if g := runtime.NumGoroutine(); g > base+60 {
					return fmt.Errorf("%d goroutines with %d messages waiting for a decision (%s), %d before the sender", g, msgs, storm, base)
				}
				return nil
			})
			prefs.fail.Store(false)
			close(release)
			testutil.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
				if n := w.queuedCount(); n != 0 {
					return fmt.Errorf("%d messages still queued", n)
				}
				return nil
			})
			for i := range users {
				if n := len(p.tries(fmt.Sprintf("tok-u%02d", i))); n != msgs/users {
					t.Errorf("u%02d pushed %d times, want %d (one per message)", i, n, msgs/users)
				}
			}
			if v, _ := testutil.MetricValue(t, reg, "edgechat_push_decisions_total", map[string]string{"verdict": "push"}); v != msgs {
				t.Errorf("%v decided to push, want %d", v, msgs)
			}
		})
	}
}
