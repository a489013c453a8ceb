package mqtt

import (
	"sync"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// The edgechat patch (PATCHES.md): retained publishes and wildcard scans
// for new subscriptions at once. Under go test -race the unpatched
// Messages reports a data race on a particle's retainPath.
func TestRetainedPublishAndWildcardScanDoNotRace(t *testing.T) {
	x := NewTopicsIndex()
	var wg sync.WaitGroup // Add/Done, not Go: this module says go 1.24
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := range 2000 {
			x.RetainMessage(packets.Packet{TopicName: "presence/u" + string(rune('a'+i%26)), Payload: []byte("x"),
				FixedHeader: packets.FixedHeader{Retain: true}})
		}
	}()
	go func() {
		defer wg.Done()
		for range 2000 {
			_ = x.Messages("#")
			_ = x.Messages("presence/+")
		}
	}()
	wg.Wait()
	if n := len(x.Messages("presence/+")); n != 26 {
		t.Fatalf("%d retained messages, want 26", n)
	}
}
