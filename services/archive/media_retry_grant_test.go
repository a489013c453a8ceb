package archive

import (
	"context"
	"sync"
	"testing"

	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// grantLog is a media service that records the message IDs it is told
// send a media.
type grantLog struct {
	mu   sync.Mutex
	sent []snowflake.ID
}

func (g *grantLog) AttachSent(_ context.Context, _ string, md *wire.Media, _, _ string, msg snowflake.ID) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.sent = append(g.sent, msg)
	md.Kind = "image"
	return nil
}

func (g *grantLog) ExpireSent(context.Context, string, string, string, snowflake.ID, []string) error {
	return nil
}

// A media message retried with its cid (a PUBACK lost, the client sends
// again) is the original, not a new message; but the media service was
// told it was sent by the retry's new ID, which no message has. The
// grant keeps the highest ID it was sent by, and retention revokes it
// only when that ID is below its cutoff: when the retention sweep (every
// minute) fell between the two IDs, the only message carrying the media
// expired while the grant stayed, and no later sweep looks at it again,
// so the media stayed readable and stored for ever. A retry of a stored
// message grants nothing.
func TestMediaMessageRetriedGrantsNoIDThatWasNotStored(t *testing.T) {
	media := &grantLog{}
	e := newEnv(t, withMedia(media))
	photo := wire.Envelope{CID: "c1", Type: wire.TypeMedia, Media: &wire.Media{ID: "p1"}}
	first, _, dup, err := e.svc.SendDirect(context.Background(), "alice", "bob", photo)
	if err != nil || dup {
		t.Fatalf("first: %v %v", dup, err)
	}
	again, _, dup, err := e.svc.SendDirect(context.Background(), "alice", "bob", photo)
	if err != nil || !dup || again.ID != first.ID {
		t.Fatalf("retry: %v %v %v", again.ID, dup, err)
	}
	media.mu.Lock()
	defer media.mu.Unlock()
	for _, id := range media.sent {
		if id != first.ID {
			t.Errorf("the media service was told message %d sent the media; the only message is %d", id, first.ID)
		}
	}
}
