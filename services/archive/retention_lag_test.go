package archive

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/snowflake"
)

// The segment that straddles the retention cutoff is rewritten once its
// oldest message has been expired for a tenth of the retention (at most
// a day), not at every sweep in which one more of its messages expired:
// a sweep each ten minutes for five hours over a conversation with a
// message each ten minutes rewrote it 31 times (one new object, and
// with a local store one segment in the Raft log, each). Its expired
// messages stay readable no longer than that lag; what lies below the
// straddler expires at once.
func TestRetentionRewritesAStraddlerOncePerLag(t *testing.T) {
	now := time.Now().Truncate(time.Minute)
	ms := func(t time.Time) uint64 { return uint64(t.Sub(snowflake.Epoch).Milliseconds()) }
	start := now.Add(-30 * time.Hour)
	step := int64(snowflake.Make(ms(start.Add(10*time.Minute)), 0, 0) - snowflake.Make(ms(start), 0, 0))
	ids := &seqIDs{next: int64(snowflake.Make(ms(start), 1, 0)), step: step}
	segs, _ := localSegments(t, true)
	e := newEnv(t, withIDs(ids), withSegments(segs))
	for i := range 174 { // one each ten minutes, from 30 hours ago to 1 hour ago
		e.send(t, "alice", "bob", fmt.Sprintf("m%d", i))
	}
	ctx := context.Background()
	if st, err := e.svc.SealOnce(ctx, SealConfig{HotAge: 30 * time.Minute, MaxMessages: 1000}, now); err != nil || st.Segments != 1 {
		t.Fatalf("seal: %+v %v", st, err)
	}
	policy := RetentionPolicy{Days: 1} // the lag: 2.4 hours
	const lag = 24 * time.Hour / 10
	rewrites := 0
	for at := now; !at.After(now.Add(5 * time.Hour)); at = at.Add(10 * time.Minute) {
		st, err := e.svc.ExpireOnce(ctx, policy, at)
		if err != nil {
			t.Fatal(err)
		}
		rewrites += st.Rewritten
		if st.Rewritten == 0 && st.Commands != 0 {
			t.Fatalf("sweep at +%v: %d commands that rewrote nothing", at.Sub(now), st.Commands)
		}
		msgs, _, err := e.svc.historyPage(ctx, directConv("alice", "bob"), nil, 200)
		if err != nil || len(msgs) == 0 {
			t.Fatalf("history: %d %v", len(msgs), err)
		}
		ids := idsOf(t, msgs)
		oldest, cutoff := ids[len(ids)-1].Time(), policy.cutoffFor(directConv("alice", "bob"), at).Time()
		if d := cutoff.Sub(oldest); d > lag {
			t.Fatalf("sweep at +%v: the oldest message left expired %v ago, more than the lag of %v", at.Sub(now), d, lag)
		}
	}
	if rewrites == 0 || rewrites > 3 {
		t.Fatalf("the straddler was rewritten %d times in 31 sweeps over 5 hours, want once per lag of %v (1 to 3)", rewrites, lag)
	}
}
