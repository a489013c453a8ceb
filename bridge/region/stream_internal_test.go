package region

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/peerqueue"
)

// A batch that continues the stream is never sent on a new connection
// while a batch before it is unacknowledged (the later one could commit
// ahead of the earlier one's resend): its start fails without dialling.
// A new stream (a Seq below the last Next: the queue went back to its
// cursor), or one whose batches were all acknowledged, dials.
func TestStreamContinuesOnlyOnItsConnection(t *testing.T) {
	m, err := newMetrics(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	l := &linkClient{link: Link{Name: "us", URL: "tcp://127.0.0.1:1"}, own: "eu", m: m,
		log: slog.New(slog.NewTextHandler(io.Discard, nil)), dialTO: time.Second, stats: &linkStats{}}
	ended, end := context.WithCancel(context.Background())
	end()
	old := &paho.Client{} // the stream's connection, gone (never used)
	l.st = stream{cl: old, alive: ended, next: 10, gen: 1, unacked: 1}
	ctx := context.Background()

	_, _, _, err = l.begin(ctx, peerqueue.Batch[item]{Seq: 10, Next: 12})
	if !errors.Is(err, errStreamBroken) {
		t.Fatalf("continuing a broken stream with a batch unacknowledged: %v, want errStreamBroken", err)
	}
	if l.st.next != 10 || l.st.gen != 1 {
		t.Fatalf("the refused start changed the stream: %+v", l.st)
	}

	// Every batch before acknowledged: a new connection may carry it
	// (the dial fails here: nothing listens).
	l.acked(1)
	_, _, _, err = l.begin(ctx, peerqueue.Batch[item]{Seq: 10, Next: 12})
	if err == nil || errors.Is(err, errStreamBroken) {
		t.Fatalf("continuing with everything acknowledged: %v, want a dial error", err)
	}
	if l.st.gen != 2 || l.st.unacked != 0 {
		t.Fatalf("no new stream: %+v", l.st)
	}

	// Back to the cursor (below the last Next) with batches unacknowledged:
	// a new stream, dialled.
	l.st = stream{cl: old, alive: ended, next: 14, gen: 3, unacked: 2}
	_, _, _, err = l.begin(ctx, peerqueue.Batch[item]{Seq: 10, Next: 12})
	if err == nil || errors.Is(err, errStreamBroken) {
		t.Fatalf("resending from the cursor: %v, want a dial error", err)
	}
	if l.st.gen != 4 || l.st.unacked != 0 {
		t.Fatalf("no new stream: %+v", l.st)
	}
	// An acknowledgement of the old stream does not count in the new one.
	l.acked(3)
	if l.st.unacked != 0 {
		t.Fatalf("unacked %d after an old stream's acknowledgement", l.st.unacked)
	}
}
