package edgechat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
)

// fakeMedia emulates the node's media endpoints as docs/protocol.md
// describes them: POST /media reads the body as it arrives (slowly, so
// that streaming shows), answers 202 and tells the uploader the outcome
// on user/{uid}/events; GET /media/{id}/info answers the status;
// GET /media/{id} redirects to an object store that must not see the
// token, and /preview is served directly.
type fakeMedia struct {
	t     *testing.T
	f     *fakeServer
	store *httptest.Server // the "object store" downloads are redirected to

	maxSize   int64
	quota     bool          // answer 429 media_quota
	outcome   string        // "ready" or "rejected", with the event; "ready-silent" or "rejected-silent" without (only polling tells)
	pollsLeft int           // how many info polls still say "processing"
	chunkWait time.Duration // pause between the chunks the handler reads

	received atomic.Int64 // body bytes the handler has read so far

	mu        sync.Mutex
	uploads   map[string]MediaStatus
	owner     map[string]string
	files     map[string][]byte
	polls     int
	lastReq   *http.Request // headers of the last upload
	storeAuth []string      // Authorization headers the store saw
	nextID    int
}

func newFakeMedia(t *testing.T, f *fakeServer) *fakeMedia {
	fm := &fakeMedia{t: t, f: f, maxSize: 25 << 20, outcome: "ready",
		uploads: map[string]MediaStatus{}, owner: map[string]string{}, files: map[string][]byte{}}
	fm.store = httptest.NewServer(http.HandlerFunc(fm.serveStore))
	t.Cleanup(fm.store.Close)
	f.set(func(f *fakeServer) {
		f.media = http.HandlerFunc(fm.serve)
		f.mediaFill = func(from, id string) (MediaInfo, bool) {
			fm.mu.Lock()
			defer fm.mu.Unlock()
			st, ok := fm.uploads[id]
			return st.MediaInfo, ok && st.Status == MediaStatusReady && fm.owner[id] == from
		}
	})
	return fm
}

func (fm *fakeMedia) set(fn func(fm *fakeMedia)) {
	fm.mu.Lock()
	defer fm.mu.Unlock()
	fn(fm)
}

func writeErr(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = fmt.Fprintf(w, `{"error":{"code":%q,"message":"fake"}}`, code)
}

func (fm *fakeMedia) serve(w http.ResponseWriter, r *http.Request) {
	user, _ := TokenSubject(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")
	switch {
	case r.Method == http.MethodPost && len(parts) == 1:
		fm.upload(w, r, user)
	case r.Method == http.MethodGet && len(parts) == 3 && parts[2] == "info":
		fm.mu.Lock()
		st, ok := fm.uploads[parts[1]]
		fm.polls++
		if ok && fm.owner[parts[1]] != user {
			ok = false
		}
		if ok && fm.pollsLeft > 0 {
			fm.pollsLeft--
			st = MediaStatus{MediaInfo: MediaInfo{ID: st.ID, Name: st.Name, Size: st.Size}, Status: MediaStatusProcessing}
		}
		fm.mu.Unlock()
		if !ok {
			writeErr(w, 404, "not_found")
			return
		}
		_ = json.NewEncoder(w).Encode(st)
	case r.Method == http.MethodGet && len(parts) == 3 && parts[2] == "preview":
		_, _ = io.WriteString(w, "preview of "+parts[1])
	case r.Method == http.MethodGet && len(parts) == 2:
		fm.mu.Lock()
		_, ok := fm.files[parts[1]]
		fm.mu.Unlock()
		if !ok {
			writeErr(w, 404, "not_found")
			return
		}
		// As with an S3 store: a presigned URL on another host (here
		// another port of the same one, which Go's own redirect policy
		// would still send the token to).
		http.Redirect(w, r, fm.store.URL+"/bucket/"+parts[1]+"?X-Amz-Signature=secret", http.StatusFound)
	default:
		writeErr(w, 404, "not_found")
	}
}

func (fm *fakeMedia) upload(w http.ResponseWriter, r *http.Request, user string) {
	fm.mu.Lock()
	fm.lastReq = r.Clone(context.Background())
	maxSize, quota, outcome, wait := fm.maxSize, fm.quota, fm.outcome, fm.chunkWait
	fm.mu.Unlock()
	switch {
	case r.ContentLength < 0 || len(r.TransferEncoding) > 0:
		writeErr(w, 411, "length_required")
		return
	case r.ContentLength > maxSize:
		writeErr(w, 413, "media_too_large") // before reading anything, like the node
		return
	case quota:
		w.Header().Set("Retry-After", "3600")
		writeErr(w, 429, "media_quota")
		return
	}
	var body bytes.Buffer
	buf := make([]byte, 8<<10)
	for {
		n, err := r.Body.Read(buf)
		body.Write(buf[:n])
		fm.received.Add(int64(n))
		if err == io.EOF {
			break
		}
		if err != nil { // the client gave up (a short reader, a cancelled ctx)
			writeErr(w, 400, "bad_request")
			return
		}
		time.Sleep(wait)
	}
	fm.mu.Lock()
	fm.nextID++
	id := fmt.Sprintf("m%03dxyz", fm.nextID)
	name := r.URL.Query().Get("name")
	info := MediaInfo{ID: id, Mime: "image/jpeg", Kind: MediaImage, Name: name, Size: int64(body.Len()), Width: 2560, Height: 1920, Placeholder: "data:image/jpeg;base64,AAAA", Preview: true}
	st := MediaStatus{MediaInfo: info, Status: MediaStatusReady}
	if strings.HasPrefix(outcome, "rejected") {
		st = MediaStatus{MediaInfo: MediaInfo{ID: id, Name: name, Size: int64(body.Len())}, Status: MediaStatusRejected, Reason: "executable"}
	}
	fm.uploads[id] = st
	fm.owner[id] = user
	fm.files[id] = body.Bytes()
	fm.mu.Unlock()
	// The event goes out before the 202: a client that only starts
	// listening once it knows the ID would miss it.
	var ev []byte
	switch outcome {
	case "ready":
		ev, _ = json.Marshal(map[string]any{"type": "mediaReady", "mediaId": id, "media": info})
	case "rejected":
		ev, _ = json.Marshal(map[string]any{"type": "mediaRejected", "mediaId": id, "reason": "executable"})
	}
	if ev != nil {
		_ = fm.f.srv.Publish("user/"+user+"/events", ev, false, 1)
		time.Sleep(20 * time.Millisecond) // let it overtake the answer
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_, _ = fmt.Fprintf(w, `{"mediaId":%q,"status":"processing"}`, id)
}

func (fm *fakeMedia) serveStore(w http.ResponseWriter, r *http.Request) {
	fm.mu.Lock()
	fm.storeAuth = append(fm.storeAuth, r.Header.Get("Authorization"))
	data, ok := fm.files[strings.TrimPrefix(r.URL.Path, "/bucket/")]
	fm.mu.Unlock()
	if !ok || r.URL.Query().Get("X-Amz-Signature") != "secret" {
		w.WriteHeader(403)
		return
	}
	_, _ = w.Write(data)
}

// gatedReader is an upload source that hands out its data only as fast
// as the server takes it: before each read it waits until the server has
// received everything but the last window bytes handed out. An SDK that
// read the whole source before sending would never see the server get
// anything, and the read times out.
type gatedReader struct {
	data     []byte
	pos      int
	window   int64
	received *atomic.Int64
	stalled  error
}

func (g *gatedReader) Read(p []byte) (int, error) {
	if g.pos >= len(g.data) {
		return 0, io.EOF
	}
	deadline := time.Now().Add(5 * time.Second)
	for int64(g.pos)-g.received.Load() > g.window {
		if time.Now().After(deadline) {
			g.stalled = fmt.Errorf("read %d bytes of the source while the server had received %d: the body is not streamed", g.pos, g.received.Load())
			return 0, g.stalled
		}
		time.Sleep(time.Millisecond)
	}
	n := copy(p[:min(len(p), 16<<10)], g.data[g.pos:])
	g.pos += n
	return n, nil
}

type progressLog struct {
	mu    sync.Mutex
	calls [][2]int64
}

func (l *progressLog) record(sent, total int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, [2]int64{sent, total})
}

func (l *progressLog) check(t *testing.T, total int64) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.calls) < 2 {
		t.Fatalf("%d progress calls, want several", len(l.calls))
	}
	prev := int64(0)
	for i, c := range l.calls {
		if c[1] != total || c[0] <= prev || c[0] > total {
			t.Fatalf("progress call %d = %v after %d: want sent growing up to total %d", i, c, prev, total)
		}
		prev = c[0]
	}
	if prev != total {
		t.Fatalf("progress stopped at %d of %d", prev, total)
	}
}

func TestUploadMediaStreamsAndWaitsForTheEvent(t *testing.T) {
	f := newFakeServer(t)
	fm := newFakeMedia(t, f)
	fm.set(func(fm *fakeMedia) { fm.chunkWait = 200 * time.Microsecond })
	ar, br := newRecorder(), newRecorder()
	var events atomic.Int32
	alice := dialFake(t, f, "alice", ar, func(o *Options) { o.OnEvent = func([]byte) { events.Add(1) } })
	dialFake(t, f, "bob", br, nil)
	alice.mediaPoll = time.Hour // only the event can end the wait

	data := bytes.Repeat([]byte("0123456789abcdef"), (3<<20)/16) // 3 MiB
	src := &gatedReader{data: data, window: 256 << 10, received: &fm.received}
	var prog progressLog
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	info, err := alice.UploadMedia(ctx, src, int64(len(data)), "IMG 0042.jpg", "image/jpeg", prog.record)
	if src.stalled != nil {
		t.Fatal(src.stalled)
	}
	if err != nil {
		t.Fatal(err)
	}
	if info.ID == "" || info.Kind != MediaImage || info.Name != "IMG 0042.jpg" || info.Size != int64(len(data)) || info.Width != 2560 || !info.Preview {
		t.Fatalf("info %+v", info)
	}
	prog.check(t, int64(len(data)))
	fm.mu.Lock()
	req := fm.lastReq
	fm.mu.Unlock()
	if req.ContentLength != int64(len(data)) || req.Header.Get("Content-Type") != "image/jpeg" || req.URL.Query().Get("name") != "IMG 0042.jpg" {
		t.Fatalf("upload request: length %d, type %q, query %q", req.ContentLength, req.Header.Get("Content-Type"), req.URL.RawQuery)
	}
	fm.mu.Lock()
	stored := fm.files[info.ID]
	fm.mu.Unlock()
	if !bytes.Equal(stored, data) {
		t.Fatal("the server did not receive the file intact")
	}
	testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if n := events.Load(); n != 1 {
			return fmt.Errorf("OnEvent got %d events, want the media event", n)
		}
		return nil
	})

	// Send it; bob gets the server's description.
	m, err := alice.SendMedia(ctx, "bob", info, "the view")
	if err != nil {
		t.Fatal(err)
	}
	if m.Type != "media" || m.Media == nil || m.Media.ID != info.ID || m.Body != "the view" {
		t.Fatalf("sent %+v", m)
	}
	f.mu.Lock()
	payload := string(f.lastPayload)
	f.mu.Unlock()
	if !strings.Contains(payload, `"media":{"id":"`+info.ID+`"}`) {
		t.Fatalf("published %s: only the media ID should go out", payload)
	}
	br.waitCount(t, m.ID, 1)
	br.mu.Lock()
	got := br.msgs[0]
	br.mu.Unlock()
	if got.Media == nil || *got.Media != info || got.Body != "the view" {
		t.Fatalf("bob got %+v (media %+v)", got, got.Media)
	}
}

func TestUploadMediaRejected(t *testing.T) {
	f := newFakeServer(t)
	fm := newFakeMedia(t, f)
	fm.set(func(fm *fakeMedia) { fm.outcome = "rejected" })
	alice := dialFake(t, f, "alice", nil, nil)
	alice.mediaPoll = time.Hour
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := alice.UploadMedia(ctx, strings.NewReader("MZ\x90\x00"), 4, "setup.exe", "", nil)
	var re *MediaRejectedError
	if !errors.As(err, &re) || re.Reason != "executable" || re.MediaID == "" || !errors.Is(err, ErrRefused) {
		t.Fatalf("err %v, want a *MediaRejectedError for executable", err)
	}
	fm.mu.Lock()
	ct := fm.lastReq.Header.Get("Content-Type")
	fm.mu.Unlock()
	if ct != "application/octet-stream" {
		t.Fatalf("content type %q without a claim", ct)
	}
	// A rejected upload cannot be sent.
	if _, err := alice.SendMedia(ctx, "bob", MediaInfo{ID: re.MediaID}, ""); !errors.Is(err, ErrInvalidMessage) {
		t.Fatalf("sending a rejected upload: %v", err)
	}
}

// No event (the connection was down when it was published): the status
// poll finds the outcome, as ready and as rejected.
func TestUploadMediaPollsWhenTheEventIsMissed(t *testing.T) {
	f := newFakeServer(t)
	fm := newFakeMedia(t, f)
	fm.set(func(fm *fakeMedia) { fm.outcome, fm.pollsLeft = "ready-silent", 2 })
	alice := dialFake(t, f, "alice", nil, nil)
	alice.mediaPoll = 20 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := alice.UploadMedia(ctx, strings.NewReader("hello"), 5, "a.jpg", "image/jpeg", nil)
	if err != nil || info.ID == "" || info.Kind != MediaImage || info.Size != 5 {
		t.Fatalf("got %+v, %v", info, err)
	}
	fm.mu.Lock()
	polls := fm.polls
	fm.mu.Unlock()
	if polls != 3 {
		t.Fatalf("%d polls, want 3 (two processing, then ready)", polls)
	}
	st, err := alice.MediaStatus(ctx, info.ID)
	if err != nil || st.Status != MediaStatusReady || st.MediaInfo != info {
		t.Fatalf("status %+v, %v", st, err)
	}

	// Rejected, found by polling after one "processing".
	fm.set(func(fm *fakeMedia) { fm.outcome, fm.pollsLeft = "rejected-silent", 1 })
	_, err = alice.UploadMedia(ctx, strings.NewReader("junk"), 4, "b.bin", "", nil)
	var re *MediaRejectedError
	if !errors.As(err, &re) || re.Reason != "executable" {
		t.Fatalf("err %v, want rejected as executable", err)
	}

	// A ctx that ends while processing: the error says so and the ID is kept.
	fm.set(func(fm *fakeMedia) { fm.pollsLeft = 1 << 30 })
	sctx, scancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer scancel()
	info, err = alice.UploadMedia(sctx, strings.NewReader("slow"), 4, "c.jpg", "", nil)
	if !errors.Is(err, context.DeadlineExceeded) || info.ID == "" {
		t.Fatalf("got %+v, %v; want the ID and a deadline error", info, err)
	}
}

func TestUploadMediaRefusals(t *testing.T) {
	f := newFakeServer(t)
	fm := newFakeMedia(t, f)
	fm.set(func(fm *fakeMedia) { fm.maxSize = 1 << 20 })
	alice := dialFake(t, f, "alice", nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Too large: refused from the declared length, before the body is read.
	big := int64(64 << 20)
	_, err := alice.UploadMedia(ctx, io.LimitReader(zeros{}, big), big, "big.bin", "", nil)
	var ae *APIError
	if !errors.Is(err, ErrMediaTooLarge) || !errors.As(err, &ae) || ae.Status != 413 {
		t.Fatalf("too large: %v", err)
	}
	if got := fm.received.Load(); got != 0 {
		t.Fatalf("the server read %d bytes of a refused upload", got)
	}

	fm.set(func(fm *fakeMedia) { fm.quota = true })
	_, err = alice.UploadMedia(ctx, strings.NewReader("x"), 1, "x", "", nil)
	if !errors.Is(err, ErrMediaQuota) || !errors.As(err, &ae) || ae.RetryAfter != time.Hour || errors.Is(err, ErrMediaTooLarge) {
		t.Fatalf("quota: %v (%+v)", err, ae)
	}
	fm.set(func(fm *fakeMedia) { fm.quota = false })

	for name, tc := range map[string]struct {
		r    io.Reader
		size int64
	}{
		"no reader":    {nil, 4},
		"no size":      {strings.NewReader("abc"), 0},
		"short reader": {strings.NewReader("abc"), 10},
	} {
		if _, err := alice.UploadMedia(ctx, tc.r, tc.size, "n", "", nil); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", name, err)
		}
	}

	// A longer reader: only size bytes go.
	info, err := alice.UploadMedia(ctx, strings.NewReader("abcdef"), 3, "n", "", nil)
	if err != nil || info.Size != 3 {
		t.Fatalf("longer reader: %+v, %v", info, err)
	}
	if _, err := alice.SendMessage(ctx, Message{To: "bob", Type: "media"}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("media message without media: %v", err)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func TestDownloadMediaKeepsTheTokenHome(t *testing.T) {
	f := newFakeServer(t)
	fm := newFakeMedia(t, f)
	alice := dialFake(t, f, "alice", nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	data := []byte("the processed picture")
	info, err := alice.UploadMedia(ctx, bytes.NewReader(data), int64(len(data)), "p.jpg", "image/jpeg", nil)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	n, err := alice.DownloadMedia(ctx, info.ID, &out, false)
	if err != nil || n != int64(len(data)) || !bytes.Equal(out.Bytes(), data) {
		t.Fatalf("download: %d %q, %v", n, out.String(), err)
	}
	fm.mu.Lock()
	auth := fm.storeAuth
	fm.mu.Unlock()
	if len(auth) != 1 || auth[0] != "" {
		t.Fatalf("the store saw Authorization %q; it must get no token", auth)
	}
	out.Reset()
	if _, err := alice.DownloadMedia(ctx, info.ID, &out, true); err != nil || out.String() != "preview of "+info.ID {
		t.Fatalf("preview: %q, %v", out.String(), err)
	}
	if _, err := alice.DownloadMedia(ctx, "nope", &out, false); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown media: %v", err)
	}
	if _, err := alice.DownloadMedia(ctx, "../etc", &out, false); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("bad id: %v", err)
	}
}

func TestMessageDecodesMedia(t *testing.T) {
	var m Message
	raw := `{"id":"7211938138472448003","from":"alice","to":"bob","cid":"c-9","type":"media","body":"the view","media":{"id":"k3v9","mime":"image/jpeg","kind":"image","name":"IMG_0042.jpg","size":482113,"width":2560,"height":1920,"durationMs":0,"placeholder":"data:image/jpeg;base64,AA","preview":true}}`
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		t.Fatal(err)
	}
	want := MediaInfo{ID: "k3v9", Mime: "image/jpeg", Kind: "image", Name: "IMG_0042.jpg", Size: 482113, Width: 2560, Height: 1920, Placeholder: "data:image/jpeg;base64,AA", Preview: true}
	if m.Media == nil || *m.Media != want || m.Time.IsZero() {
		t.Fatalf("decoded %+v", m.Media)
	}
}
