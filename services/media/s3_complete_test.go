package media

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/services/media/store"
)

// A multipart direct upload whose /complete was cut off after the store
// joined the parts (the client timed out, the connection dropped, the
// node failed to commit) is completed again by the client with the same
// parts, as docs/protocol.md says ("Repeating it ... answers the current
// status"): the store has no multipart upload any more, but the object
// is there, so the upload goes on to processing instead of being refused
// for ever with 400.
func TestDirectMultipartCompleteRepeatedAfterTheStoreJoinedTheParts(t *testing.T) {
	ctx := context.Background()
	size := int64(MultipartThreshold + 1)
	svc, st, _ := minIOWorker(t, "again", Config{Node: "n1", Worker: true, SharedStore: true, MaxSize: 2 * MultipartThreshold, TempDir: t.TempDir()},
		time.Now())
	req := httptest.NewRequest("POST", "/media/uploads", strings.NewReader(fmt.Sprintf(`{"name":"v.bin","size":%d}`, size)))
	req.Header.Set("Content-Type", "application/json")
	req = req.WithContext(httpapi.WithPrincipal(req.Context(), wire.Principal{UserID: "alice"}))
	w := httptest.NewRecorder()
	svc.handleDirect(w, req)
	var ans directAnswer
	if w.Code != http.StatusCreated || json.Unmarshal(w.Body.Bytes(), &ans) != nil || ans.UploadID == "" || len(ans.Parts) != 3 {
		t.Fatalf("POST /media/uploads: %d %s", w.Code, w.Body)
	}
	data := bytes.Repeat([]byte("x"), int(size))
	var parts []directPart
	for _, p := range ans.Parts {
		from := int64(p.Part-1) * ans.PartSize
		to := min(from+ans.PartSize, size)
		preq, _ := http.NewRequest("PUT", p.URL, bytes.NewReader(data[from:to]))
		resp, err := http.DefaultClient.Do(preq)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("PUT part %d: %s", p.Part, resp.Status)
		}
		parts = append(parts, directPart{Part: p.Part, ETag: resp.Header.Get("ETag")})
	}
	// The first /complete: the store joined the parts, then the request
	// was cut before the upload was marked.
	sp := make([]store.Part, len(parts))
	for i, p := range parts {
		sp[i] = store.Part{Number: p.Part, ETag: p.ETag}
	}
	if _, err := st.CompleteMultipart(ctx, store.TierRaw, ans.MediaID, ans.UploadID, sp); err != nil {
		t.Fatal(err)
	}
	if rec, _ := svc.Get(ans.MediaID); rec.Status != StatusUploading {
		t.Fatalf("before the retry: %s", rec.Status)
	}
	// The client's retry.
	body, _ := json.Marshal(completeRequest{Parts: parts})
	creq := httptest.NewRequest("POST", "/media/"+ans.MediaID+"/complete", bytes.NewReader(body))
	creq.SetPathValue("id", ans.MediaID)
	creq.Header.Set("Content-Type", "application/json")
	creq = creq.WithContext(httpapi.WithPrincipal(creq.Context(), wire.Principal{UserID: "alice"}))
	w = httptest.NewRecorder()
	svc.handleComplete(w, creq)
	if w.Code != http.StatusAccepted {
		t.Fatalf("/complete repeated after the store joined the parts: %d %s, want 202", w.Code, w.Body)
	}
	if rec, _ := svc.Get(ans.MediaID); rec.Status != StatusProcessing || rec.Size != size {
		t.Fatalf("after the repeated /complete: %s, %d bytes", rec.Status, rec.Size)
	}
}
