package archive

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/snowflake"
)

// A conversation whose segment straddling the retention cutoff cannot be
// read (lost or damaged) keeps that segment whole and still expires what
// is below it, and every other conversation expires as usual. Before,
// ExpireOnce stopped at the first such conversation: the ones it had not
// reached yet (in map order) kept messages past the retention period,
// sweep after sweep.
func TestRetentionKeepsAnUnreadableStraddlerWholeAndExpiresTheRest(t *testing.T) {
	now := time.Now()
	ms := func(t time.Time) uint64 { return uint64(t.Sub(snowflake.Epoch).Milliseconds()) }
	start := now.Add(-48 * time.Hour)
	ids := &seqIDs{next: int64(snowflake.Make(ms(start), 1, 0)), step: 1}
	segs, dir := localSegments(t, false)
	e := newEnv(t, withIDs(ids), withSegments(segs), withUsers(anyUser{}))
	// The broken one: 40 messages, one an hour from 48h ago, sealed 10 a
	// segment: two wholly past a 1-day cutoff, one straddling it.
	for i := range 40 {
		ids.mu.Lock()
		ids.next = int64(snowflake.Make(ms(start.Add(time.Duration(i)*time.Hour)), 1, 0))
		ids.mu.Unlock()
		e.send(t, "alice", "bob", fmt.Sprintf("m%d", i))
	}
	if st, err := e.svc.SealOnce(context.Background(), SealConfig{HotAge: time.Hour, MaxMessages: 10}, now); err != nil || st.Segments != 4 {
		t.Fatalf("seal: %+v %v", st, err)
	}
	conv := directConv("alice", "bob")
	p := RetentionPolicy{Days: 1}
	cutoff := p.cutoffFor(conv, now)
	var straddler SegmentRef
	if err := e.svc.eachSegment(func(r SegmentRef) {
		if r.FirstID < cutoff && r.LastID >= cutoff {
			straddler = r
		}
	}); err != nil || straddler.Key == "" {
		t.Fatalf("no straddling segment: %v", err)
	}
	if err := os.Remove(filepath.Join(dir, filepath.FromSlash(straddler.Key))); err != nil {
		t.Fatal(err)
	}
	// 30 other conversations, hot, all two days old.
	ids.mu.Lock()
	ids.next = int64(snowflake.Make(ms(start), 2, 0))
	ids.mu.Unlock()
	var others []string
	for i := range 30 {
		peer := fmt.Sprintf("user%02d", i)
		e.send(t, "carol", peer, "c"+peer)
		others = append(others, directConv("carol", peer))
	}
	st, err := e.svc.ExpireOnce(context.Background(), p, now)
	if err != nil || st.KeptWhole != 1 || st.Segments != 2 {
		t.Errorf("ExpireOnce = %+v, %v; want the 2 older segments dropped and the straddler kept whole", st, err)
	}
	for _, c := range others {
		if n := hotCount(t, e.db, c); n != 0 {
			t.Errorf("%s keeps its 2-day-old message past a 1-day retention", c)
		}
	}
	var left []SegmentRef
	if err := e.svc.eachSegment(func(r SegmentRef) {
		if r.Conv == conv {
			left = append(left, r)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if len(left) != 2 || left[0] != straddler {
		t.Errorf("segments left %+v; want the straddler %+v (unchanged) and the newer one", left, straddler)
	}
}

type anyUser struct{}

func (anyUser) UserExists(string) (bool, error) { return true, nil }
