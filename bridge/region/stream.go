package region

import (
	"context"
	"errors"
	"fmt"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/peerqueue"
)

// Streaming across batches: the link's peerqueue is pipelined
// (peerqueue.NewPipelined, up to Config.Window batches in flight): it
// starts the next batch of the outbox while earlier ones wait for their
// PUBACKs, so a message committed while a batch is in flight goes out at
// once instead of a round trip later. The window (window.go) spans the
// batches: at most Config.Window publishes in flight on a connection,
// whichever batches they belong to.
//
// Order across batches: a batch that continues the stream (its Seq is
// the Next of the batch started before it) goes on the connection of the
// batches before it, never on a new one while any of those is
// unacknowledged: one of them may have failed, and a new connection
// would commit the later messages ahead of its resend. Such a start
// fails instead; the peerqueue then meets the failure at its head,
// abandons what is in flight and starts again from its cursor (a Seq
// below the last Next): a new stream, on a new connection when the old
// one is gone. Once every batch of the stream was acknowledged, a new
// connection may carry the next one.

// stream is the state of a link's stream of batches (linkClient.st,
// under linkClient.mu).
type stream struct {
	cl      *paho.Client    // the connection of the stream's batches
	alive   context.Context // cl's
	next    uint64          // the Next of the last batch started
	gen     uint64          // counts the streams
	unacked int             // batches of this stream started and not acknowledged
}

// errStreamBroken fails the start of a batch that continues a stream
// whose connection ended with batches unacknowledged.
var errStreamBroken = errors.New("the connection of the batches in flight ended: sending again from the cursor")

// begin returns the connection for b and the generation of its stream:
// the stream's connection when b continues it, else (a new stream) the
// live connection or a new one.
func (l *linkClient) begin(ctx context.Context, b peerqueue.Batch[item]) (*paho.Client, context.Context, uint64, error) {
	l.mu.Lock()
	st := &l.st
	if st.cl != nil && b.Seq == st.next {
		cl, alive := st.cl, st.alive
		if l.cl == cl && alive.Err() == nil {
			st.next = b.Next
			st.unacked++
			gen := st.gen
			l.mu.Unlock()
			return cl, alive, gen, nil
		}
		if st.unacked > 0 {
			l.mu.Unlock()
			return nil, nil, 0, fmt.Errorf("region: link %s: %w", l.link.Name, errStreamBroken)
		}
	}
	st.gen++
	st.cl, st.alive, st.unacked = nil, nil, 0
	gen := st.gen
	l.mu.Unlock()

	cl, alive, err := l.connect(ctx)
	if err != nil {
		return nil, nil, 0, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if st.gen != gen {
		// Cannot happen (one goroutine starts batches): refuse rather
		// than mix two streams.
		return nil, nil, 0, fmt.Errorf("region: link %s: %w", l.link.Name, errStreamBroken)
	}
	st.cl, st.alive, st.next = cl, alive, b.Next
	st.unacked++
	return cl, alive, gen, nil
}

// skip records b, with nothing to publish (every entry expired or
// unreadable), as started and acknowledged.
func (l *linkClient) skip(b peerqueue.Batch[item]) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b.Seq != l.st.next { // a new stream: nothing before b is in flight
		l.st.gen++
		l.st.cl, l.st.alive, l.st.unacked = nil, nil, 0
	}
	l.st.next = b.Next
}

// acked records that a batch of stream gen was acknowledged.
func (l *linkClient) acked(gen uint64) {
	l.mu.Lock()
	if l.st.gen == gen {
		l.st.unacked--
	}
	l.mu.Unlock()
}
