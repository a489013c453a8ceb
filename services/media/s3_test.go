package media

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/services/media/store"
	"github.com/edgechat/edgechat/services/media/store/storetest"
)

// minIOWorker starts a MinIO (bucket names its buckets) and a service
// with cfg over it, with a scripted processor, on a fake clock that
// starts at start; the service is waited for when the test ends.
func minIOWorker(t *testing.T, bucket string, cfg Config, start time.Time) (*Service, *store.S3, *testutil.FakeClock) {
	t.Helper()
	m := storetest.StartMinIO(t)
	st, err := store.NewS3(context.Background(), m.Config(bucket))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	prop := fsmtest.New(t)
	clock := testutil.NewFakeClock(start)
	svc, err := New(cfg, Deps{DB: prop.DB, Proposer: prop, FSM: prop.FSM, Store: st, Processor: &scriptedProc{}, Publisher: &fakePub{},
		Logger: testutil.QuietLogger(), Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Wait)
	return svc, st, clock
}

// The lifecycle against a real MinIO: media not read for ColdAfter moves
// to the cold bucket and is still served (through a presigned URL of
// the cold bucket); an unsent upload goes after a week.
func TestColdTierOnMinIO(t *testing.T) {
	ctx := context.Background()
	svc, st, clock := minIOWorker(t, "cold", Config{Node: "n1", Worker: true, SharedStore: true, ColdAfter: 30 * 24 * time.Hour, TempDir: t.TempDir()},
		time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC))
	rec, err := svc.Store(ctx, "alice", Upload{Name: "a.txt", ClaimedType: "text/plain", Size: 5, Body: strings.NewReader("hello")})
	if err != nil {
		t.Fatal(err)
	}
	svc.workOnce(ctx)
	if err := svc.Attach(ctx, "alice", &wire.Media{ID: rec.ID}, "bob", ""); err != nil {
		t.Fatal(err)
	}
	unsent, err := svc.Store(ctx, "alice", Upload{Name: "b.txt", ClaimedType: "text/plain", Size: 3, Body: strings.NewReader("bye")})
	if err != nil {
		t.Fatal(err)
	}
	svc.workOnce(ctx)

	clock.Advance(31 * 24 * time.Hour)
	svc.Sweep(ctx)
	got, _ := svc.Get(rec.ID)
	if got.Tier != TierCold {
		t.Fatalf("after the sweep: %+v", got)
	}
	if _, err := st.Stat(ctx, store.TierCold, rec.ID); err != nil {
		t.Fatalf("not in the cold bucket: %v", err)
	}
	if _, err := st.Stat(ctx, store.TierProcessed, rec.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("still in the processed bucket: %v", err)
	}
	// Still served: a redirect to the cold bucket that works.
	req := httptest.NewRequest("GET", "/media/"+rec.ID, nil)
	req.SetPathValue("id", rec.ID)
	req = req.WithContext(httpapi.WithPrincipal(req.Context(), wire.Principal{UserID: "bob"}))
	w := httptest.NewRecorder()
	svc.handleFile(w, req)
	if w.Code != http.StatusFound {
		t.Fatalf("cold download: %d %s", w.Code, w.Body.String())
	}
	resp, err := http.Get(w.Header().Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "HELLO" {
		t.Fatalf("presigned cold URL: %d %q", resp.StatusCode, b)
	}
	// The unsent upload went (a week passed), files and record.
	if _, err := svc.Get(unsent.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unsent media after a month: %v", err)
	}
	if _, err := st.Stat(ctx, store.TierProcessed, unsent.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the unsent media's object: %v", err)
	}
}

// leading is a node that leads its cluster for good: runDuties installs
// the lifecycle rule only on a node with a Raft, which every node has.
type leading struct{}

func (leading) IsLeader() bool                  { return true }
func (leading) MembersChanged() <-chan struct{} { return nil }

// With a cold storage class that names a remote tier of the MinIO, the
// service installs the lifecycle rule on the processed bucket when it
// starts (Run → runDuties), after ColdAfter counted in days.
func TestColdTransitionRuleOnMinIO(t *testing.T) {
	m := storetest.StartMinIO(t)
	const tier = "EDGECHAT-COLD"
	storetest.AddMinIOTier(t, m, tier, storetest.StartMinIO(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := m.Config("rule")
	cfg.ColdBucket, cfg.ColdStorageClass = "", tier // as --s3-cold-storage-class without a cold bucket
	st, err := store.NewS3(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	prop := fsmtest.New(t)
	svc, err := New(Config{Node: "n1", SharedStore: true, ColdAfter: 45 * 24 * time.Hour, ColdStorageClass: tier, TempDir: t.TempDir()},
		Deps{DB: prop.DB, Proposer: prop, FSM: prop.FSM, Store: st, Publisher: &fakePub{}, Leadership: leading{},
			Logger: testutil.QuietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- svc.Run(ctx) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		days, class, ok, err := st.ColdTransition(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			if days != 45 || class != tier {
				t.Fatalf("the rule on the processed bucket: after %d days to %q", days, class)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no cold-transition rule on the processed bucket 15s after the service started")
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-ran:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

// A direct upload's presigned URL stays valid for an hour, after its
// /complete checked the object's size: a client that PUTs again gets
// nothing larger processed than what was accepted (and counted in its
// quota), and what a PUT leaves after processing is deleted once the URL
// has expired.
func TestDirectUploadURLReusedAfterItsCheck(t *testing.T) {
	ctx := context.Background()
	svc, st, clock := minIOWorker(t, "reuse", Config{Node: "n1", Worker: true, SharedStore: true, MaxSize: 1000, TempDir: t.TempDir()},
		time.Now())
	direct := func() (id, url string) {
		t.Helper()
		req := httptest.NewRequest("POST", "/media/uploads", strings.NewReader(`{"name":"a.txt","size":10,"contentType":"text/plain"}`))
		req.Header.Set("Content-Type", "application/json")
		req = req.WithContext(httpapi.WithPrincipal(req.Context(), wire.Principal{UserID: "alice"}))
		w := httptest.NewRecorder()
		svc.handleDirect(w, req)
		var ans struct{ MediaID, URL string }
		if w.Code != http.StatusCreated || json.Unmarshal(w.Body.Bytes(), &ans) != nil {
			t.Fatalf("POST /media/uploads: %d %s", w.Code, w.Body)
		}
		return ans.MediaID, ans.URL
	}
	put := func(url string, n int) {
		t.Helper()
		req, _ := http.NewRequest("PUT", url, strings.NewReader(strings.Repeat("x", n)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("PUT %d bytes to the presigned URL: %s", n, resp.Status)
		}
	}

	// Replaced between /complete and processing: refused.
	id, url := direct()
	put(url, 10)
	if _, err := svc.markUploaded(ctx, id); err != nil {
		t.Fatal(err)
	}
	put(url, 50_000)
	svc.workOnce(ctx)
	rec, err := svc.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Status != StatusRejected || rec.Reason != reasonTooLarge {
		t.Fatalf("an upload that grew to 50,000 bytes after its check (limit 1,000, 10 accepted): %s %q, output %d bytes",
			rec.Status, rec.Reason, rec.OutputSize)
	}

	// PUT again after processing: gone once the URL expired.
	id, url = direct()
	put(url, 10)
	if _, err := svc.markUploaded(ctx, id); err != nil {
		t.Fatal(err)
	}
	svc.workOnce(ctx)
	if rec, _ := svc.Get(id); rec.Status != StatusReady {
		t.Fatalf("the honest upload: %+v", rec)
	}
	put(url, 50_000)
	if _, err := st.Stat(ctx, store.TierRaw, id); err != nil {
		t.Fatalf("the PUT after processing did not land: %v", err)
	}
	clock.Advance(directTTL + time.Minute)
	svc.Sweep(ctx)
	if _, err := st.Stat(ctx, store.TierRaw, id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the raw object a PUT left after processing is still stored after the URL expired: %v", err)
	}
}
