package archive

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/edgechat/edgechat/internal/snowflake"
)

// While a member keeps segments in another store (Deps.StoreCheck), the
// leader seals nothing, and retention keeps the segment straddling the
// cutoff whole instead of rewriting it (the member could not read the
// replacement) while it still expires what is below it. Once they agree,
// sealing goes on.
func TestAStoreMismatchStopsSealingAndKeepsTheStraddlerWhole(t *testing.T) {
	now := time.Now()
	ms := func(t time.Time) uint64 { return uint64(t.Sub(snowflake.Epoch).Milliseconds()) }
	start := now.Add(-48 * time.Hour)
	ids := &seqIDs{next: int64(snowflake.Make(ms(start), 1, 0)), step: 1}
	segs, _ := localSegments(t, false)
	e := newEnv(t, withIDs(ids), withSegments(segs), withUsers(anyUser{}))
	send := func(from, to string, i int) {
		ids.mu.Lock()
		ids.next = int64(snowflake.Make(ms(start.Add(time.Duration(i)*time.Hour)), 1, 0))
		ids.mu.Unlock()
		e.send(t, from, to, fmt.Sprintf("m%d", i))
	}
	for i := range 40 {
		send("alice", "bob", i)
	}
	ctx := context.Background()
	cfg := SealConfig{HotAge: time.Hour, MaxMessages: 10}
	if st, err := e.svc.SealOnce(ctx, cfg, now); err != nil || st.Segments != 4 {
		t.Fatalf("seal: %+v %v", st, err)
	}
	mismatch := true
	asked := 0
	e.svc.stores.check = func(context.Context) (int, error) {
		asked++
		if mismatch {
			return 1, errors.New("n2 keeps them in s3 bucket elsewhere")
		}
		return 0, nil
	}
	for i := range 40 {
		send("carol", "dave", i)
	}
	st, err := e.svc.SealOnce(ctx, cfg, now)
	if !errors.Is(err, ErrStoreMismatch) || !strings.Contains(err.Error(), "n2 keeps them in s3 bucket elsewhere") || st.Segments != 0 {
		t.Fatalf("seal while a member differs: %+v %v", st, err)
	}
	if g := mismatchGauge(t, e.svc); g != 1 {
		t.Errorf("edgechat_archive_store_mismatch = %v, want 1", g)
	}
	if n := hotCount(t, e.db, directConv("carol", "dave")); n != 40 {
		t.Errorf("%d of carol's 40 messages hot", n)
	}
	ex, err := e.svc.ExpireOnce(ctx, RetentionPolicy{Days: 1}, now)
	if err != nil || ex.KeptWhole != 1 || ex.Rewritten != 0 || ex.Segments != 2 {
		t.Errorf("ExpireOnce = %+v, %v; want the 2 older segments dropped and the straddler kept whole", ex, err)
	}
	mismatch = false
	before := asked
	st, err = e.svc.SealOnce(ctx, cfg, now)
	if err != nil || st.Segments == 0 || asked != before+1 {
		t.Errorf("seal once they agree: %+v %v (asked %d times, %d before)", st, err, asked, before)
	}
	if g := mismatchGauge(t, e.svc); g != 0 {
		t.Errorf("edgechat_archive_store_mismatch = %v, want 0", g)
	}
}

func mismatchGauge(t *testing.T, s *Service) float64 {
	t.Helper()
	var m dto.Metric
	if err := s.metrics.storeMismatch.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}
