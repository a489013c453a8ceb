package broker

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
)

// readersBlocked counts goroutines blocked reading an MQTT client's next
// packet (mochi's Client.ReadFixedHeader).
func readersBlocked() int {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "server/v2.(*Client).ReadFixedHeader")
}

// TestIdleClientsHoldNoGoroutine: with the read waiter (the default on
// Linux), connected clients that send nothing hold no goroutine blocked in
// Read; without it, each holds one. Both ways, idle clients then still
// exchange messages.
func TestIdleClientsHoldNoGoroutine(t *testing.T) {
	for _, blocking := range []bool{false, true} {
		t.Run(fmt.Sprintf("blockingReads=%v", blocking), func(t *testing.T) {
			e := startBroker(t, func(c *Config) { c.blockingReads = blocking })
			if !blocking && e.b.rw == nil {
				t.Skip("no read waiter on this system")
			}
			const n = 20
			for i := range n {
				mustV5(t, e.addr, "idle", fmt.Sprintf("d%d", i))
			}
			testutil.CheckFor(t, waitFor, 5*time.Millisecond, func() error {
				got, want := readersBlocked(), 0
				if blocking {
					want = n
				}
				if got != want {
					return fmt.Errorf("%d goroutines blocked reading a client, want %d", got, want)
				}
				return nil
			})
		})
	}
}
