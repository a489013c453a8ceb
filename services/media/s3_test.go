package media

import (
	"context"
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

// The lifecycle against a real MinIO: media not read for ColdAfter moves
// to the cold bucket and is still served (through a presigned URL of
// the cold bucket); an unsent upload goes after a week.
func TestColdTierOnMinIO(t *testing.T) {
	m := storetest.StartMinIO(t)
	ctx := context.Background()
	st, err := store.NewS3(ctx, m.Config("cold"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	prop := fsmtest.New(t)
	clock := testutil.NewFakeClock(time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC))
	svc, err := New(Config{Node: "n1", Worker: true, SharedStore: true, ColdAfter: 30 * 24 * time.Hour, TempDir: t.TempDir()},
		Deps{DB: prop.DB, Proposer: prop, FSM: prop.FSM, Store: st, Processor: &scriptedProc{}, Publisher: &fakePub{},
			Logger: testutil.QuietLogger(), Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Wait)
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
