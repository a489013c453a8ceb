package region

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// RemoteReads is a Store that also records how far a user of another
// region read a conversation with a user of this one (the archive's
// MarkRemoteRead): the copy of the reader's cursor that the local user's
// conversation list shows as peerRead. The reader's own region keeps
// the cursor that counts.
type RemoteReads interface {
	MarkRemoteRead(ctx context.Context, reader, peer string, upTo snowflake.ID) error
}

// maxRemoteReads bounds the read receipts of other regions' users being
// recorded at once; past it a receipt is only delivered (the next one
// records the cursor).
const maxRemoteReads = 64

// recordRemoteRead records the cursor a read receipt that crossed a link
// tells (out: the receipt as this region delivers it, on
// user/{local}/receipts, with the reader qualified as peer), off paho's
// goroutine: a commit must not hold up the link's other ephemeral
// messages.
func (b *Bridge) recordRemoteRead(out wire.Outbound) {
	rr, ok := b.deps.Store.(RemoteReads)
	if !ok {
		return
	}
	var r wire.Receipt
	if json.Unmarshal(out.Payload, &r) != nil || r.Type != wire.ReceiptRead || r.UpTo == 0 || strings.IndexByte(r.Peer, '@') < 0 {
		return
	}
	peer, ok := strings.CutPrefix(out.Topic, "user/")
	if peer, ok = strings.CutSuffix(peer, "/receipts"); !ok {
		return
	}
	select {
	case b.reads <- struct{}{}:
	default:
		b.log.Debug("region: a read receipt of another region's user not recorded: too many at once", "reader", r.Peer, "peer", peer)
		return
	}
	go func() {
		defer func() { <-b.reads }()
		ctx, cancel := context.WithTimeout(context.Background(), b.cfg.Timeout)
		defer cancel()
		if err := rr.MarkRemoteRead(ctx, r.Peer, peer, r.UpTo); err != nil {
			b.log.Debug("region: a read receipt of another region's user not recorded", "reader", r.Peer, "peer", peer, "err", err)
		}
	}()
}
