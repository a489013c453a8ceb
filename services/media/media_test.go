package media

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/services/media/store"
)

func TestUploadQueuesAJobAndTheWorkerFinishesIt(t *testing.T) {
	e := newEnv(t, Config{Worker: true})
	rec := e.upload("alice", "notes.txt", "hello")
	if rec.Status != StatusProcessing || !e.st.has(store.TierRaw, rec.ID) {
		t.Fatalf("after upload: %+v", rec)
	}
	e.svc.workOnce(context.Background())
	got, err := e.svc.Get(rec.ID)
	if err != nil || got.Status != StatusReady || got.Job != nil || got.MIME != "text/plain" || got.OutputSize != 5 {
		t.Fatalf("after processing: %+v, %v", got, err)
	}
	if e.st.has(store.TierRaw, rec.ID) || !e.st.has(store.TierProcessed, rec.ID) {
		t.Fatal("the raw upload should be gone and the processed file there")
	}
	evs := e.pub.events()
	if len(evs) != 1 || !strings.HasPrefix(evs[0], "user/alice/events ") || !strings.Contains(evs[0], `"type":"mediaReady"`) {
		t.Fatalf("events %q", evs)
	}
}

func TestRejectedUploadTellsTheUploader(t *testing.T) {
	e := newEnv(t, Config{Worker: true})
	rec := e.upload("alice", "x.png", "REJECT:executable")
	e.svc.workOnce(context.Background())
	got, _ := e.svc.Get(rec.ID)
	if got.Status != StatusRejected || got.Reason != "executable" || e.st.has(store.TierRaw, rec.ID) {
		t.Fatalf("%+v", got)
	}
	if evs := e.pub.events(); len(evs) != 1 || !strings.Contains(evs[0], `"reason":"executable"`) {
		t.Fatalf("events %q", evs)
	}
}

func TestFailingJobIsRetriedThenRejected(t *testing.T) {
	e := newEnv(t, Config{Worker: true})
	rec := e.upload("alice", "x", "FAIL")
	for range maxAttempts {
		e.svc.workOnce(context.Background())
	}
	got, _ := e.svc.Get(rec.ID)
	if got.Status != StatusRejected || got.Reason != "processing_failed" || e.proc.calls != maxAttempts {
		t.Fatalf("%+v after %d calls", got, e.proc.calls)
	}
}

func TestUploadLimitAndQuota(t *testing.T) {
	e := newEnv(t, Config{MaxSize: 10, QuotaCount: 2, QuotaBytes: 1000})
	// Declared too large: refused before a byte is read.
	if _, err := e.svc.Store(context.Background(), "alice", Upload{Size: 11, Body: strings.NewReader("01234567890")}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("declared 11 > 10: %v", err)
	}
	// Unknown size, too long: refused while streaming, nothing kept.
	_, err := e.svc.Store(context.Background(), "alice", Upload{Size: -1, Body: strings.NewReader("0123456789X")})
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("streamed 11 > 10: %v", err)
	}
	var raw int
	_ = e.st.List(context.Background(), store.TierRaw, "", func(store.Object) bool { raw++; return true })
	if raw != 0 {
		t.Fatalf("%d raw objects left after refused uploads", raw)
	}
	// Exactly at the limit is fine; the streamed refusal stored nothing,
	// so it counted none of the two uploads of the day.
	e.upload("alice", "ok", "0123456789")
	e.upload("alice", "ok", "y")
	if _, err := e.svc.Store(context.Background(), "alice", Upload{Size: 1, Body: strings.NewReader("x")}); !errors.Is(err, ErrQuota) || !errors.Is(err, wire.ErrQuota) {
		t.Fatalf("third upload of the day: %v", err)
	}
	// Tomorrow is another day.
	e.clock.Advance(24 * time.Hour)
	e.upload("alice", "ok", "x")
}

// A claim holds until its lease ends; then another worker takes over,
// and the first can no longer finish the job.
func TestClaimLeaseAndTakeover(t *testing.T) {
	e := newEnv(t, Config{Worker: true, SharedStore: true, JobLease: time.Minute})
	rec := e.upload("alice", "x", "slow")
	ctx := context.Background()
	if _, err := e.svc.propose(ctx, wire.CmdMediaClaim, claimCmd{ID: rec.ID, Node: "n1", At: e.clock.Now(), Lease: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.propose(ctx, wire.CmdMediaClaim, claimCmd{ID: rec.ID, Node: "n2", At: e.clock.Now().Add(30 * time.Second), Lease: time.Minute}); !errors.Is(err, ErrClaimLost) {
		t.Fatalf("claim while held: %v", err)
	}
	if _, err := e.svc.propose(ctx, wire.CmdMediaClaim, claimCmd{ID: rec.ID, Node: "n2", At: e.clock.Now().Add(61 * time.Second), Lease: time.Minute}); err != nil {
		t.Fatalf("claim after the lease: %v", err)
	}
	res := &Record{Kind: "file"}
	if _, err := e.svc.propose(ctx, wire.CmdMediaDone, doneCmd{ID: rec.ID, Node: "n1", Attempt: 1, Result: res}); !errors.Is(err, ErrClaimLost) {
		t.Fatalf("the first worker finished a job it lost: %v", err)
	}
	if _, err := e.svc.propose(ctx, wire.CmdMediaDone, doneCmd{ID: rec.ID, Node: "n2", Attempt: 2, Result: res}); err != nil {
		t.Fatalf("the holder could not finish: %v", err)
	}
	if _, err := e.svc.propose(ctx, wire.CmdMediaDone, doneCmd{ID: rec.ID, Node: "n2", Attempt: 2, Result: res}); !errors.Is(err, ErrClaimLost) {
		t.Fatalf("a job finished twice: %v", err)
	}
}

func TestAttachGrantsAndFills(t *testing.T) {
	e := newEnv(t, Config{Worker: true})
	rec := e.upload("alice", "notes.txt", "hello")
	ctx := context.Background()
	m := wire.Media{ID: rec.ID}
	if err := e.svc.Attach(ctx, "alice", &m, "bob", ""); !errors.Is(err, wire.ErrMediaNotReady) || !errors.Is(err, wire.ErrInvalid) {
		t.Fatalf("attach while processing: %v", err)
	}
	e.svc.workOnce(ctx)
	if err := e.svc.Attach(ctx, "mallory", &wire.Media{ID: rec.ID}, "bob", ""); !errors.Is(err, wire.ErrMediaNotReady) {
		t.Fatalf("someone else's upload: %v", err)
	}
	if err := e.svc.Attach(ctx, "alice", &wire.Media{ID: "nosuchmediaaaaaaaaaaaaaa"}, "bob", ""); !errors.Is(err, wire.ErrMediaNotReady) {
		t.Fatalf("unknown id: %v", err)
	}
	got, _ := e.svc.Get(rec.ID)
	if e.svc.CanRead(got, "bob") {
		t.Fatal("bob reads media never sent to him")
	}
	if err := e.svc.Attach(ctx, "alice", &m, "bob", ""); err != nil {
		t.Fatal(err)
	}
	if m.Name != "notes.txt" || m.Mime != "text/plain" || m.Size != 5 || m.Kind != "file" {
		t.Fatalf("filled media %+v", m)
	}
	got, _ = e.svc.Get(rec.ID)
	if !e.svc.CanRead(got, "bob") || e.svc.CanRead(got, "carol") {
		t.Fatal("after a direct message only the peer gains access")
	}
	if err := e.svc.Attach(ctx, "alice", &wire.Media{ID: rec.ID}, "", "team"); err != nil {
		t.Fatal(err)
	}
	if !e.svc.CanRead(got, "carol") || e.svc.CanRead(got, "dave") {
		t.Fatal("after a group message its members (only) gain access")
	}
}

func TestDownloadAccessAndRange(t *testing.T) {
	e := newEnv(t, Config{Worker: true})
	rec := e.upload("alice", "notes.txt", "hello world")
	e.svc.workOnce(context.Background())
	if err := e.svc.Attach(context.Background(), "alice", &wire.Media{ID: rec.ID}, "bob", ""); err != nil {
		t.Fatal(err)
	}
	path := "/media/" + rec.ID
	if r := e.do("GET", path, "mallory", nil, nil); r.Code != http.StatusNotFound {
		t.Fatalf("stranger: %d", r.Code)
	}
	r := e.do("GET", path, "bob", nil, nil)
	if r.Code != 200 || r.Body.String() != "HELLO WORLD" || r.Header().Get("ETag") == "" ||
		r.Header().Get("Cache-Control") != cacheControl || r.Header().Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("participant: %d %q %v", r.Code, r.Body.String(), r.Header())
	}
	r = e.do("GET", path, "bob", nil, map[string]string{"Range": "bytes=6-"})
	if r.Code != http.StatusPartialContent || r.Body.String() != "WORLD" || r.Header().Get("Content-Range") != "bytes 6-10/11" {
		t.Fatalf("range: %d %q %v", r.Code, r.Body.String(), r.Header())
	}
	etag := r.Header().Get("ETag")
	if r := e.do("GET", path, "bob", nil, map[string]string{"If-None-Match": etag}); r.Code != http.StatusNotModified {
		t.Fatalf("If-None-Match: %d", r.Code)
	}
	r = e.do("GET", path+"/info", "bob", nil, nil)
	if r.Code != 200 || !strings.Contains(r.Body.String(), `"status":"ready"`) || !strings.Contains(r.Body.String(), `"name":"notes.txt"`) {
		t.Fatalf("info: %d %s", r.Code, r.Body.String())
	}
	if r := e.do("GET", path+"/preview", "bob", nil, nil); r.Code != http.StatusNotFound {
		t.Fatalf("preview of a file without one: %d", r.Code)
	}
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		got, _ := e.svc.Get(rec.ID)
		if got.LastReadAt == nil {
			return errors.New("the read is not recorded")
		}
		return nil
	})
}

func TestUploadHTTP(t *testing.T) {
	e := newEnv(t, Config{MaxSize: 64})
	r := e.do("POST", "/media?name=a.txt", "alice", strings.NewReader("hello"), map[string]string{"Content-Type": "text/plain"})
	if r.Code != http.StatusAccepted || !strings.Contains(r.Body.String(), `"status":"processing"`) {
		t.Fatalf("raw body: %d %s", r.Code, r.Body.String())
	}
	// multipart with another field first
	body := "--XX\r\nContent-Disposition: form-data; name=\"caption\"\r\n\r\nhi\r\n" +
		"--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../../etc/passwd\"\r\nContent-Type: text/plain\r\n\r\nfile body\r\n--XX--\r\n"
	r = e.do("POST", "/media", "alice", strings.NewReader(body), map[string]string{"Content-Type": "multipart/form-data; boundary=XX"})
	if r.Code != http.StatusAccepted {
		t.Fatalf("multipart: %d %s", r.Code, r.Body.String())
	}
	for _, tc := range []struct {
		name, ctype string
		body        io.Reader
		want        int
	}{
		{"too large", "text/plain", strings.NewReader(strings.Repeat("x", 65)), http.StatusRequestEntityTooLarge},
		{"empty", "text/plain", strings.NewReader(""), http.StatusBadRequest},
		{"multipart with an empty file", "multipart/form-data; boundary=XX", strings.NewReader("--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"empty.txt\"\r\nContent-Type: text/plain\r\n\r\n\r\n--XX--\r\n"), http.StatusBadRequest},
		{"multipart without file", "multipart/form-data; boundary=XX", strings.NewReader("--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nb\r\n--XX--\r\n"), http.StatusBadRequest},
		{"multipart garbage", "multipart/form-data; boundary=XX", strings.NewReader("not multipart at all"), http.StatusBadRequest},
		{"multipart without boundary", "multipart/form-data", strings.NewReader("x"), http.StatusBadRequest},
	} {
		if r := e.do("POST", "/media", "alice", tc.body, map[string]string{"Content-Type": tc.ctype}); r.Code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, r.Code, r.Body.String(), tc.want)
		}
	}
	if r := e.do("POST", "/media", "", strings.NewReader("x"), nil); r.Code != http.StatusUnauthorized {
		t.Errorf("no principal: %d", r.Code)
	}
}

func TestCleanName(t *testing.T) {
	for in, want := range map[string]string{
		"../../etc/passwd":       "passwd",
		`C:\Users\a\photo.jpg`:   "photo.jpg",
		" spaced name.png ":      "spaced name.png",
		"bell\x07.txt":           "bell.txt",
		strings.Repeat("é", 200): strings.Repeat("é", 127),
		"":                       "",
	} {
		if got := cleanName(in); got != want {
			t.Errorf("cleanName(%q) = %q, want %q", in, got, want)
		}
	}
}
