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

// directMultipart asks for a multipart direct upload of size bytes as
// alice.
func directMultipart(t *testing.T, svc *Service, size int64) directAnswer {
	t.Helper()
	req := httptest.NewRequest("POST", "/media/uploads", strings.NewReader(fmt.Sprintf(`{"name":"v.bin","size":%d}`, size)))
	req.Header.Set("Content-Type", "application/json")
	req = req.WithContext(httpapi.WithPrincipal(req.Context(), wire.Principal{UserID: "alice"}))
	w := httptest.NewRecorder()
	svc.handleDirect(w, req)
	var ans directAnswer
	if w.Code != http.StatusCreated || json.Unmarshal(w.Body.Bytes(), &ans) != nil || ans.UploadID == "" {
		t.Fatalf("POST /media/uploads: %d %s", w.Code, w.Body)
	}
	return ans
}

// putPart PUTs data to a part's presigned URL and returns its ETag.
func putPart(t *testing.T, url string, data []byte) string {
	t.Helper()
	req, _ := http.NewRequest("PUT", url, bytes.NewReader(data))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("PUT a part: %s", resp.Status)
	}
	return resp.Header.Get("ETag")
}

// complete is POST /media/{id}/complete as alice.
func complete(t *testing.T, svc *Service, id string, parts []directPart) *httptest.ResponseRecorder {
	t.Helper()
	body, _ := json.Marshal(completeRequest{Parts: parts})
	req := httptest.NewRequest("POST", "/media/"+id+"/complete", bytes.NewReader(body))
	req.SetPathValue("id", id)
	req.Header.Set("Content-Type", "application/json")
	req = req.WithContext(httpapi.WithPrincipal(req.Context(), wire.Principal{UserID: "alice"}))
	w := httptest.NewRecorder()
	svc.handleComplete(w, req)
	return w
}

// A multipart direct upload whose parts add up to more than declared is
// refused at /complete (413) and, as docs/protocol.md says, waits again:
// the client PUTs the declared bytes again (the part that was too large,
// to its URL) and completes again. The store's multipart upload must
// still be there for that: completing it first and deleting the object
// left URLs of an upload that no longer existed, so the upload could
// never be completed (400 at every /complete) until the sweeps deleted
// it a day later.
func TestDirectMultipartLargerThanDeclaredCanBePutAgain(t *testing.T) {
	size := int64(MultipartThreshold + 1)
	svc, st, _ := minIOWorker(t, "again2", Config{Node: "n1", Worker: true, SharedStore: true, MaxSize: 2 * MultipartThreshold, TempDir: t.TempDir()},
		time.Now())
	ans := directMultipart(t, svc, size)
	if len(ans.Parts) != 3 {
		t.Fatalf("%d parts", len(ans.Parts))
	}
	data := bytes.Repeat([]byte("x"), int(size))
	var parts []directPart
	for _, p := range ans.Parts {
		from := int64(p.Part-1) * ans.PartSize
		to := min(from+ans.PartSize, size)
		b := data[from:to]
		if p.Part == 3 {
			b = bytes.Repeat([]byte("y"), 5000) // the file grew while it was read
		}
		parts = append(parts, directPart{Part: p.Part, ETag: putPart(t, p.URL, b)})
	}
	if w := complete(t, svc, ans.MediaID, parts); w.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("/complete of parts larger than declared: %d %s, want 413", w.Code, w.Body)
	}
	if rec, _ := svc.Get(ans.MediaID); rec.Status != StatusUploading {
		t.Fatalf("after the refusal: %s, want uploading", rec.Status)
	}
	// The client PUTs the last part again, with the declared bytes.
	parts[2].ETag = putPart(t, ans.Parts[2].URL, data[2*ans.PartSize:])
	if w := complete(t, svc, ans.MediaID, parts); w.Code != http.StatusAccepted {
		t.Fatalf("/complete after PUTting the part again: %d %s, want 202", w.Code, w.Body)
	}
	rec, _ := svc.Get(ans.MediaID)
	if rec.Status != StatusProcessing || rec.Size != size {
		t.Fatalf("after completing again: %s, %d bytes", rec.Status, rec.Size)
	}
	if obj, err := st.Stat(context.Background(), store.TierRaw, ans.MediaID); err != nil || obj.Size != size {
		t.Fatalf("the raw object: %+v %v", obj, err)
	}
}
