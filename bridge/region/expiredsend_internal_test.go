package region

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/edgechat/edgechat/internal/peerqueue"
	"github.com/edgechat/edgechat/internal/snowflake"
)

// A message the link finds older than --link-retention when it reads it
// (the leader's expiry had not dropped it yet: it runs every
// ExpireEvery) is not sent, and it is counted where an operator looks
// for messages retention dropped: edgechat_region_link_expired_total
// and the link status's expired. It used to show only in
// edgechat_region_link_sent_total{result="expired"}, and the cursor then
// moved past it: the expiry never saw it, nothing said it was dropped.
func TestLinkCountsWhatItDropsAsExpired(t *testing.T) {
	m, err := newMetrics(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	l := &linkClient{link: Link{Name: "us", URL: "tcp://127.0.0.1:1"}, own: "eu", m: m, retention: time.Hour,
		log: slog.New(slog.NewTextHandler(io.Discard, nil)), dialTO: time.Second, stats: &linkStats{}}
	old := snowflake.Make(uint64((time.Since(snowflake.Epoch) - 2*time.Hour).Milliseconds()), 1, 0)
	entry := []byte(`{"id":"` + old.String() + `","from":"alice","to":"bob@us","cid":"c1","type":"text","body":"hi"}`)
	wait, err := l.start(context.Background(), peerqueue.Batch[item]{Items: []item{{Pos: 0, Payload: entry}}, Seq: 0, Next: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	var got dto.Metric
	if err := m.expired.WithLabelValues("us").Write(&got); err != nil {
		t.Fatal(err)
	}
	if n := got.GetCounter().GetValue(); n != 1 {
		t.Errorf("edgechat_region_link_expired_total %v, want 1", n)
	}
	if n := l.stats.expired.Load(); n != 1 {
		t.Errorf("the link status's expired %d, want 1", n)
	}
}
