package region

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
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

// The link that finds a message expired as it reads it tells its sender
// (tellExpired) before the cursor passes it, as the leader's expiry
// does; while telling fails the batch fails (tried again), so no
// message is passed untold. Entries that are not a sender's message to
// the link's region (a message of a group of this region) are passed
// without telling.
func TestLinkTellsTheSendersOfWhatItDropsAsExpired(t *testing.T) {
	m, err := newMetrics(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var told [][]expiredMsg
	fail := errors.New("no quorum")
	var answer error
	l := &linkClient{link: Link{Name: "us", URL: "tcp://127.0.0.1:1"}, own: "eu", m: m, retention: time.Hour,
		log: slog.New(slog.NewTextHandler(io.Discard, nil)), dialTO: time.Second, stats: &linkStats{},
		tellExpired: func(_ context.Context, msgs []expiredMsg) error { told = append(told, msgs); return answer }}
	old := snowflake.Make(uint64((time.Since(snowflake.Epoch) - 2*time.Hour).Milliseconds()), 1, 0)
	dm := []byte(`{"id":"` + old.String() + `","from":"alice","to":"bob@us","cid":"c1","type":"text","body":"hi"}`)
	toHome := []byte(`{"id":"` + (old + 1).String() + `","from":"alice","group":"k3x9@us","cid":"c2","type":"text","body":"hi"}`)
	ownGroup := []byte(`{"id":"` + (old + 2).String() + `","from":"alice","group":"k3x9","cid":"c3","type":"text","body":"hi"}`)
	batch := peerqueue.Batch[item]{Items: []item{{Pos: 0, Payload: dm}, {Pos: 1, Payload: toHome}, {Pos: 2, Payload: ownGroup}}, Seq: 0, Next: 3}
	answer = fail
	if _, err := l.start(context.Background(), batch); !errors.Is(err, fail) {
		t.Fatalf("start while telling fails: %v, want the failure (the batch is tried again)", err)
	}
	answer = nil
	wait, err := l.start(context.Background(), batch)
	if err != nil {
		t.Fatal(err)
	}
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	want := []expiredMsg{{ID: old, From: "alice", To: "bob@us"}, {ID: old + 1, From: "alice", Group: "k3x9@us"}}
	if len(told) != 2 || !slices.Equal(told[1], want) {
		t.Fatalf("told %v, want %v twice", told, want)
	}
}

// The leader's expiry keeps expired messages while telling their senders
// fails, for tellGrace; then it drops them untold, so that a dead link
// does not fill the disk while the archive cannot mark them.
func TestExpiryGivesUpTellingAfterTheGrace(t *testing.T) {
	b := &Bridge{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	fail := errors.New("segment store down")
	if b.toldOrGaveUp("us", fail) || b.toldOrGaveUp("us", fail) {
		t.Fatal("dropped at the first failures")
	}
	b.tellFailing["us"] = time.Now().Add(-tellGrace - time.Second)
	if !b.toldOrGaveUp("us", fail) {
		t.Fatal("kept after telling failed for longer than the grace")
	}
	if !b.toldOrGaveUp("us", nil) || len(b.tellFailing) != 0 {
		t.Fatalf("told: %v", b.tellFailing)
	}
	if b.toldOrGaveUp("us", fail) {
		t.Fatal("a new run of failures dropped at once")
	}
}
