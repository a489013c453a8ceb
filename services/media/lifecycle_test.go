package media

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/services/media/store"
)

func TestSweepMovesColdMediaAndStillServesIt(t *testing.T) {
	e := newEnv(t, Config{Worker: true, ColdAfter: 48 * time.Hour})
	ctx := context.Background()
	sent := e.upload("alice", "old.txt", "old news")
	e.svc.workOnce(ctx)
	if err := e.svc.Attach(ctx, "alice", &wire.Media{ID: sent.ID}, "bob", ""); err != nil {
		t.Fatal(err)
	}
	e.svc.Sweep(ctx)
	if got, _ := e.svc.Get(sent.ID); got.Tier != TierProcessed {
		t.Fatalf("moved before its time: %+v", got)
	}
	e.clock.Advance(49 * time.Hour)
	e.svc.Sweep(ctx)
	got, _ := e.svc.Get(sent.ID)
	if got.Tier != TierCold || !e.st.has(store.TierCold, sent.ID) || e.st.has(store.TierProcessed, sent.ID) {
		t.Fatalf("after the sweep: %+v", got)
	}
	if r := e.do("GET", "/media/"+sent.ID, "bob", nil, nil); r.Code != 200 || r.Body.String() != "OLD NEWS" {
		t.Fatalf("cold media: %d %q", r.Code, r.Body.String())
	}
}

func TestSweepRemovesOrphans(t *testing.T) {
	e := newEnv(t, Config{Worker: true})
	ctx := context.Background()
	unsent := e.upload("alice", "never-sent.txt", "x")
	e.svc.workOnce(ctx)
	rejected := e.upload("alice", "bad", "REJECT:executable")
	e.svc.workOnce(ctx)
	sent := e.upload("alice", "sent.txt", "y")
	e.svc.workOnce(ctx)
	if err := e.svc.Attach(ctx, "alice", &wire.Media{ID: sent.ID}, "bob", ""); err != nil {
		t.Fatal(err)
	}
	// An upload that never arrived (created, no bytes).
	stuck := newID()
	if _, err := e.svc.propose(ctx, wire.CmdMediaCreate, createCmd{ID: stuck, Owner: "alice", Size: 1, Node: "n1",
		At: e.clock.Now(), QuotaCount: 100, QuotaBytes: 100}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(25 * time.Hour)
	e.svc.Sweep(ctx)
	if _, err := e.svc.Get(stuck); err == nil {
		t.Fatal("an upload never completed after a day is still there")
	}
	if _, err := e.svc.Get(unsent.ID); err != nil {
		t.Fatal("unsent media went before a week")
	}
	e.clock.Advance(7 * 24 * time.Hour)
	e.svc.Sweep(ctx)
	for _, id := range []string{unsent.ID, rejected.ID} {
		if _, err := e.svc.Get(id); err == nil {
			t.Errorf("orphan %s is still there after a week", id)
		}
	}
	if e.st.has(store.TierProcessed, unsent.ID) {
		t.Error("the unsent media's file is still there")
	}
	if _, err := e.svc.Get(sent.ID); err != nil {
		t.Fatal("sent media was removed")
	}
}

func TestDirectUploadNeedsAPresigningStore(t *testing.T) {
	e := newEnv(t, Config{})
	r := e.do("POST", "/media/uploads", "alice", strings.NewReader(`{"name":"a.bin","size":10,"contentType":"application/pdf"}`),
		map[string]string{"Content-Type": "application/json"})
	if r.Code != http.StatusConflict || !strings.Contains(r.Body.String(), codeNoDirect) {
		t.Fatalf("%d %s", r.Code, r.Body.String())
	}
}

func TestEventsNeedTheSecret(t *testing.T) {
	e := newEnv(t, Config{EventsSecret: "s3cret"})
	body := `{"Records":[]}`
	for _, auth := range []string{"", "Bearer wrong"} {
		if r := e.do("POST", "/media/events", "", strings.NewReader(body), map[string]string{"Authorization": auth}); r.Code != http.StatusUnauthorized {
			t.Errorf("auth %q: %d", auth, r.Code)
		}
	}
	if r := e.do("POST", "/media/events", "", strings.NewReader(body), map[string]string{"Authorization": "Bearer s3cret"}); r.Code != http.StatusNoContent {
		t.Errorf("good secret: %d %s", r.Code, r.Body.String())
	}
	if r := e.do("POST", "/media/events", "", strings.NewReader("{not json"), map[string]string{"Authorization": "Bearer s3cret"}); r.Code != http.StatusBadRequest {
		t.Errorf("garbage: %d", r.Code)
	}
	off := newEnv(t, Config{})
	if r := off.do("POST", "/media/events", "", strings.NewReader(body), map[string]string{"Authorization": "Bearer "}); r.Code != http.StatusUnauthorized {
		t.Errorf("no secret configured: %d", r.Code)
	}
}

func TestParseS3Event(t *testing.T) {
	id := newID()
	ev := `{"Records":[
	 {"eventName":"s3:ObjectCreated:Put","s3":{"bucket":{"name":"raw"},"object":{"key":"` + id + `"}}},
	 {"eventName":"s3:ObjectRemoved:Delete","s3":{"object":{"key":"` + newID() + `"}}},
	 {"eventName":"s3:ObjectCreated:CompleteMultipartUpload","s3":{"object":{"key":"..%2Fetc%2Fpasswd"}}},
	 {"eventName":"ObjectCreated:Post","s3":{"object":{"key":"` + id + `"}}}]}`
	ids, err := ParseS3Event([]byte(ev))
	if err != nil || !slices.Equal(ids, []string{id, id}) {
		t.Fatalf("%v %v", ids, err)
	}
	if _, err := ParseS3Event([]byte(`[1,2]`)); err == nil {
		t.Fatal("an array is no event")
	}
}

func FuzzParseS3Event(f *testing.F) {
	f.Add([]byte(`{"Records":[{"eventName":"s3:ObjectCreated:Put","s3":{"object":{"key":"abc"}}}]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ids, err := ParseS3Event(b)
		for _, id := range ids {
			if err != nil || !ValidID(id) {
				t.Fatalf("returned %q with %v", id, err)
			}
		}
	})
}

// The multipart reader returns the file part and streams it; whatever
// the body, it never panics and never returns a part not named "file".
func FuzzFileParts(f *testing.F) {
	f.Add("--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nbody\r\n--XX--\r\n")
	f.Add("--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nb\r\n--XX--\r\n")
	f.Add("garbage")
	f.Fuzz(func(t *testing.T, body string) {
		p, err := fileParts(strings.NewReader(body), "XX")
		if err != nil {
			return
		}
		defer p.Close()
		if p.FormName() != "file" {
			t.Fatalf("returned part %q", p.FormName())
		}
		var buf [512]byte
		for {
			if _, err := p.Read(buf[:]); err != nil {
				break
			}
		}
	})
}
