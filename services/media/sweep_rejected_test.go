package media

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/services/media/store"
)

// previewProc is scriptedProc with a preview.
type previewProc struct{ scriptedProc }

func (p *previewProc) Process(ctx context.Context, path, name, ctype string) (Processed, error) {
	out, err := p.scriptedProc.Process(ctx, path, name, ctype)
	if err != nil {
		return out, err
	}
	out.Preview, out.PreviewMIME = out.Output+".preview", "image/jpeg"
	return out, os.WriteFile(out.Preview, []byte("PREVIEW"), 0o600)
}

// previewFailing is a store whose preview writes fail (a store that
// answers 503 at the wrong moment, every time).
type previewFailing struct{ *memStore }

func (s previewFailing) Put(ctx context.Context, t store.Tier, key string, r io.Reader, n int64, ctype string) (store.Object, error) {
	if strings.HasSuffix(key, ".preview") {
		return store.Object{}, errors.New("503 slow down")
	}
	return s.memStore.Put(ctx, t, key, r, n, ctype)
}

// A job that stored its processed file and then failed (the preview
// could not be stored), every attempt, ends rejected; when the sweeper
// removes the rejected record it removes that file too, instead of
// leaving it in the processed tier for ever with no record.
func TestSweepRemovesTheFilesOfAJobThatFailedAfterStoringThem(t *testing.T) {
	ctx := context.Background()
	prop, st := fsmtest.New(t), newMemStore()
	clock := testutil.NewFakeClock(time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC))
	svc, err := New(Config{Node: "n1", Worker: true, TempDir: t.TempDir()}, Deps{DB: prop.DB, Proposer: prop, FSM: prop.FSM,
		Store: previewFailing{st}, Processor: &previewProc{}, Publisher: &fakePub{}, Groups: fakeGroups{},
		Logger: testutil.QuietLogger(), Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Wait)
	rec, err := svc.Store(ctx, "alice", Upload{Name: "photo.txt", ClaimedType: "text/plain", Size: 5, Body: strings.NewReader("hello")})
	if err != nil {
		t.Fatal(err)
	}
	for range maxAttempts {
		svc.workOnce(ctx)
	}
	got, _ := svc.Get(rec.ID)
	if got.Status != StatusRejected || got.Reason != "processing_failed" {
		t.Fatalf("after %d failing attempts: %+v", maxAttempts, got)
	}
	if !st.has(store.TierProcessed, rec.ID) {
		t.Fatal("the test meant the processed file to be stored before the failure")
	}
	clock.Advance(DefaultOrphanUnsent + time.Hour)
	svc.Sweep(ctx)
	if _, err := svc.Get(rec.ID); err == nil {
		t.Fatal("the rejected record is still there after a week")
	}
	if st.has(store.TierProcessed, rec.ID) {
		t.Error("the processed file of the rejected upload is stored for ever, with no record")
	}
}
