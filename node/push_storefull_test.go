package node_test

import (
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
)

// A device that takes its deliveries but never acknowledges them (its
// app suspended, its network gone under an open connection) fills its
// session's store of unacknowledged deliveries (1,024); the next
// delivery to it is dropped, and the connection is closed so that the
// client syncs when it comes back. The dropped message never reached
// the device: it is pushed as the unacknowledged ones are.
func TestPushAMessageDroppedBecauseTheDevicesStoreIsFull(t *testing.T) {
	f := startPushFlow(t, 0)
	d := connectRawDevice(t, f, "phone")
	go func() { _, _ = io.Copy(io.Discard, d.conn) }() // reads, acknowledges nothing
	const store = 1024                                 // mochi's MaximumInflight
	var last string
	for i := range store + 1 {
		last = f.send(t, "user/bob/newMessage", fmt.Sprint("message ", i))
	}
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if n := f.pushesFor(f.phone, last); n == 0 {
			dropped, _ := testutil.MetricValue(t, f.n.Registry(), "edgechat_mqtt_messages_dropped_total", map[string]string{"reason": "queue_full"})
			return fmt.Errorf("no push for the message dropped from the full store (%d pushes to the phone in all, %v deliveries dropped queue_full, the phone connected: %v)",
				len(f.m.apns.Requests()), dropped, f.n.ClientConnected("bob/phone"))
		}
		return nil
	})
	f.outboxEmpty(t)
	if n := f.pushesFor(f.phone, last); n != 1 {
		t.Fatalf("%d pushes for the dropped message", n)
	}
}
