package media

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/services/media/store"
)

// A direct upload refused at its check for being larger than declared
// (413) keeps its presigned URL for the rest of its hour. What a PUT to
// it leaves afterwards is deleted by the sweeps like any upload never
// completed, not kept for ever outside every record and quota; and the
// client may PUT the declared bytes again and complete.
func TestDirectUploadRefusedTooLargeLeavesNoOrphan(t *testing.T) {
	ctx := context.Background()
	svc, st, clock := minIOWorker(t, "toolarge", Config{Node: "n1", Worker: true, SharedStore: true, MaxSize: 1000, TempDir: t.TempDir()},
		time.Now())
	req := httptest.NewRequest("POST", "/media/uploads", strings.NewReader(`{"name":"a.txt","size":10,"contentType":"text/plain"}`))
	req.Header.Set("Content-Type", "application/json")
	req = req.WithContext(httpapi.WithPrincipal(req.Context(), wire.Principal{UserID: "alice"}))
	w := httptest.NewRecorder()
	svc.handleDirect(w, req)
	var ans struct{ MediaID, URL string }
	if w.Code != http.StatusCreated || json.Unmarshal(w.Body.Bytes(), &ans) != nil {
		t.Fatalf("POST /media/uploads: %d %s", w.Code, w.Body)
	}
	id := ans.MediaID
	put := func(n int) {
		t.Helper()
		req, _ := http.NewRequest("PUT", ans.URL, strings.NewReader(strings.Repeat("x", n)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("PUT %d bytes to the presigned URL: %s", n, resp.Status)
		}
	}

	put(50_000)
	if _, err := svc.markUploaded(ctx, id); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("/complete of 50,000 bytes declared as 10: %v", err)
	}
	if _, err := st.Stat(ctx, store.TierRaw, id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the object larger than declared is still stored: %v", err)
	}
	// The same URL, again within its hour.
	put(50_000)
	clock.Advance(DefaultOrphanUpload + directTTL)
	svc.Sweep(ctx)
	if _, err := st.Stat(ctx, store.TierRaw, id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("what a PUT left after the upload was refused as too large is stored for ever: %v", err)
	}
}

// After a 413 at /complete the client PUTs the declared bytes to the same
// URL and completes: accepted, as a too_large rejection in processing
// allows.
func TestDirectUploadPutAgainAfterTooLarge(t *testing.T) {
	ctx := context.Background()
	svc, _, _ := minIOWorker(t, "again", Config{Node: "n1", Worker: true, SharedStore: true, MaxSize: 1000, TempDir: t.TempDir()},
		time.Now())
	req := httptest.NewRequest("POST", "/media/uploads", strings.NewReader(`{"name":"a.txt","size":10,"contentType":"text/plain"}`))
	req.Header.Set("Content-Type", "application/json")
	req = req.WithContext(httpapi.WithPrincipal(req.Context(), wire.Principal{UserID: "alice"}))
	w := httptest.NewRecorder()
	svc.handleDirect(w, req)
	var ans struct{ MediaID, URL string }
	if w.Code != http.StatusCreated || json.Unmarshal(w.Body.Bytes(), &ans) != nil {
		t.Fatalf("POST /media/uploads: %d %s", w.Code, w.Body)
	}
	for _, n := range []int{50_000, 10} {
		req, _ := http.NewRequest("PUT", ans.URL, strings.NewReader(strings.Repeat("x", n)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		_, err = svc.markUploaded(ctx, ans.MediaID)
		if n > 10 && !errors.Is(err, ErrTooLarge) || n == 10 && err != nil {
			t.Fatalf("/complete after a PUT of %d bytes (10 declared): %v", n, err)
		}
	}
	svc.workOnce(ctx)
	if rec, err := svc.Get(ans.MediaID); err != nil || rec.Status != StatusReady {
		t.Fatalf("the upload PUT again with its declared size: %+v %v", rec, err)
	}
}
