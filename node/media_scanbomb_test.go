package node_test

import (
	"testing"
	"time"

	"github.com/edgechat/edgechat/node/nodetest"
	"github.com/edgechat/edgechat/services/media/process/processtest"
)

// A progressive JPEG of a hundred kilobytes with thousands of scans
// (each a few bytes that make the decoder walk every block of a
// 16-megapixel image) is refused before it is decoded: it cost the
// node's worker about 10 ms of CPU a scan, minutes for this one and
// hours for a 25 MB one, and a node processes one upload at a time, so
// everyone's photos waited behind it. Its header is within every limit
// the bomb check read (pixels, frames).
func TestAJPEGWithThousandsOfScansDoesNotHoldUpOtherUploads(t *testing.T) {
	n := nodetest.StartNode(t)
	alice, bob := newMediaUser(t, n, "alice"), newMediaUser(t, n, "bob")
	bomb := upload(t, n, alice.token, "scans.jpg", "image/jpeg", processtest.JPEGScanBomb(4000, 4000, 3000))
	start := time.Now()
	photo := upload(t, n, bob.token, "IMG_1.jpg", "image/jpeg", jpegWithGPS(t, 64, 32))
	if ev := bob.outcome(t, photo); ev.Type != "mediaReady" {
		t.Fatalf("bob's photo: %+v", ev)
	}
	waited := time.Since(start)
	if waited > 10*time.Second {
		t.Fatalf("bob's photo was ready %v after its upload, behind alice's JPEG of 3000 scans", waited.Round(time.Millisecond))
	}
	if ev := alice.outcome(t, bomb); ev.Type != "mediaRejected" || ev.Reason != "too_many_scans" {
		t.Fatalf("the JPEG of 3000 scans: %+v, want rejected for too_many_scans", ev)
	}
}
