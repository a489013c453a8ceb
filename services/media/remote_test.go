package media

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/services/media/store"
)

// remoteFile is what fakeRemote serves for one ID, and how it lies.
type remoteFile struct {
	data, preview []byte
	badSum        bool  // a checksum of other bytes
	size          int64 // when set, the size it claims
	err           error // every request fails with it
}

// fakeRemote is another region's side of the link (the bridge's
// FetchMediaChunk) for unit tests; the link itself is tested in
// bridge/region with two real regions.
type fakeRemote struct {
	mu     sync.Mutex
	files  map[string]*remoteFile
	firsts atomic.Int32  // requests at offset 0
	gate   chan struct{} // when set, requests wait for it
}

func (f *fakeRemote) FetchMediaChunk(ctx context.Context, region, id string, preview bool, off int64, n int) (wire.MediaChunk, error) {
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return wire.MediaChunk{}, ctx.Err()
		}
	}
	f.mu.Lock()
	file := f.files[region+"/"+id]
	f.mu.Unlock()
	if file == nil {
		return wire.MediaChunk{}, fmt.Errorf("fake: %w", wire.ErrNotFound)
	}
	if file.err != nil {
		return wire.MediaChunk{}, file.err
	}
	data, mime := file.data, "image/png"
	if preview {
		data, mime = file.preview, "text/html" // served as octet-stream
	}
	if data == nil {
		return wire.MediaChunk{}, fmt.Errorf("fake: %w", wire.ErrNotFound)
	}
	c := wire.MediaChunk{Size: int64(len(data)), MIME: mime}
	if file.size != 0 {
		c.Size = file.size
	}
	if off == 0 {
		f.firsts.Add(1)
		sum := sha256.Sum256(data)
		if file.badSum {
			sum[0]++
		}
		c.SHA256 = hex.EncodeToString(sum[:])
	}
	c.Data = data[min(off, int64(len(data))):min(off+int64(n), int64(len(data)))]
	return c, nil
}

func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, 2))
	for i := range b {
		b[i] = byte(r.UintN(256))
	}
	return b
}

// remoteID is the i-th media ID of region eu as eu names it.
func remoteID(i int) string { return strings.Repeat(string(rune('a'+i)), 24) }

// A media of another region: recorded under {id}@eu with the
// recipient's grant; fetched once however many ask, in chunks, into the
// store under eu/{id}; served like local media, with an active type
// served as octet-stream. Bytes that do not match the checksum or the
// size the message said, a file above MaxSize, an unreachable region and
// a refusal are each a clear answer, and nothing is stored.
func TestRemoteMediaFetch(t *testing.T) {
	e := newEnv(t, Config{MaxSize: 1 << 20})
	ctx := context.Background()
	good := randomBytes(600<<10, 1) // three chunks
	rem := &fakeRemote{gate: make(chan struct{}), files: map[string]*remoteFile{
		"eu/" + remoteID(0): {data: good, preview: []byte("preview bytes")},
		"eu/" + remoteID(1): {data: randomBytes(1000, 2), badSum: true},
		"eu/" + remoteID(2): {data: randomBytes(1000, 3)},  // the message says 999
		"eu/" + remoteID(3): {data: randomBytes(2<<20, 4)}, // above MaxSize
		"eu/" + remoteID(4): {err: fmt.Errorf("link down: %w", wire.ErrUnavailable)},
	}}
	e.svc.SetRemote(rem)

	m := &wire.Media{ID: remoteID(0), Mime: "image/png", Kind: "image", Size: int64(len(good)), Width: 3, Height: 2, Preview: true}
	if err := e.svc.AttachRemote(ctx, "us", "eu", "alice@eu", m, "bob", "", 77); err != nil {
		t.Fatal(err)
	}
	id := remoteID(0) + "@eu"
	if m.ID != id {
		t.Fatalf("media ID here: %q, want %q", m.ID, id)
	}
	// The prefetch waits at the gate; more readers join it.
	var wg sync.WaitGroup
	recs := make([]Record, 5)
	errs := make([]error, 5)
	for i := range recs {
		wg.Go(func() { recs[i], errs[i] = e.svc.fetchRemote(ctx, id) })
	}
	close(rem.gate)
	wg.Wait()
	for i := range recs {
		if errs[i] != nil || !recs[i].Fetched || recs[i].Node != "n1" || recs[i].OutputSize != int64(len(good)) {
			t.Fatalf("fetch %d: %+v, %v", i, recs[i], errs[i])
		}
	}
	if n := rem.firsts.Load(); n != 2 { // the file and its preview, once
		t.Fatalf("%d first chunks asked, want 2", n)
	}
	if !e.st.has(store.TierProcessed, "eu/"+remoteID(0)) || !e.st.has(store.TierProcessed, "eu/"+remoteID(0)+".preview") {
		t.Fatal("not in the store under eu/{id}")
	}
	w := e.do("GET", "/media/"+id, "bob", nil, nil)
	if w.Code != http.StatusOK || !bytes.Equal(w.Body.Bytes(), good) || w.Header().Get("Content-Type") != "image/png" {
		t.Fatalf("bob's GET: %d, %d bytes, %q", w.Code, w.Body.Len(), w.Header().Get("Content-Type"))
	}
	w = e.do("GET", "/media/"+id+"/preview", "bob", nil, nil)
	if w.Code != http.StatusOK || w.Body.String() != "preview bytes" || w.Header().Get("Content-Type") != previewUnknown {
		t.Fatalf("preview: %d %q %q", w.Code, w.Body.String(), w.Header().Get("Content-Type"))
	}
	if w := e.do("GET", "/media/"+id, "carol", nil, nil); w.Code != http.StatusNotFound {
		t.Fatalf("carol: %d", w.Code)
	}

	for _, c := range []struct {
		i      int
		size   int64
		status int
		code   string
	}{
		{1, 1000, http.StatusServiceUnavailable, codeMediaUnavailable}, // bad checksum
		{2, 999, http.StatusServiceUnavailable, codeMediaUnavailable},  // not the size the message said
		{3, 2 << 20, http.StatusRequestEntityTooLarge, codeTooLarge},
		{4, 10, http.StatusServiceUnavailable, codeMediaUnavailable},
		{5, 10, http.StatusNotFound, "not_found"}, // eu refuses: not sent to us, or gone
	} {
		m := &wire.Media{ID: remoteID(c.i), Mime: "text/html", Kind: "file", Size: c.size}
		if err := e.svc.AttachRemote(ctx, "us", "eu", "alice@eu", m, "", "team", 78); err != nil {
			t.Fatal(err)
		}
		if m.Mime != previewUnknown {
			t.Errorf("media %d recorded as %q", c.i, m.Mime)
		}
		if _, err := e.svc.fetchRemote(ctx, m.ID); err == nil {
			t.Fatalf("media %d fetched", c.i)
		}
		w := e.do("GET", "/media/"+m.ID, "alice", nil, nil) // a member of team
		if w.Code != c.status || !strings.Contains(w.Body.String(), c.code) {
			t.Errorf("media %d: %d %s, want %d %s", c.i, w.Code, w.Body.String(), c.status, c.code)
		}
		if c.status == http.StatusServiceUnavailable && w.Header().Get("Retry-After") != "30" {
			t.Errorf("media %d: Retry-After %q", c.i, w.Header().Get("Retry-After"))
		}
		if e.st.has(store.TierProcessed, "eu/"+remoteID(c.i)) {
			t.Errorf("media %d stored", c.i)
		}
		if rec, _ := e.svc.Get(m.ID); rec.Fetched {
			t.Errorf("media %d recorded as fetched", c.i)
		}
	}
	for _, bad := range []*wire.Media{
		{ID: "short"}, {ID: remoteID(6) + "@"}, {ID: remoteID(6), Size: -1}, {ID: remoteID(6), Placeholder: strings.Repeat("x", 9000)},
	} {
		if err := e.svc.AttachRemote(ctx, "us", "eu", "alice@eu", bad, "bob", "", 79); !errors.Is(err, wire.ErrInvalid) {
			t.Errorf("AttachRemote(%+v) = %v, want invalid", bad.ID, err)
		}
	}
}

// The other way round: a chunk of a local media for another region,
// with the checksum of the whole file at offset 0; and the grants the
// bridge checks.
func TestMediaChunkForAnotherRegion(t *testing.T) {
	e := newEnv(t, Config{})
	ctx := context.Background()
	rec := e.upload("alice", "a.txt", "hello, other region")
	e.svc.workOnce(ctx)
	if err := e.svc.AttachSent(ctx, "alice", &wire.Media{ID: rec.ID}, "bob@us", "", 5); err != nil {
		t.Fatal(err)
	}
	users, groups, err := e.svc.MediaGrants(rec.ID)
	if err != nil || len(users) != 1 || users[0] != "bob@us" || len(groups) != 0 {
		t.Fatalf("grants: %v %v %v", users, groups, err)
	}
	want, _ := e.svc.Get(rec.ID)
	file := e.do("GET", "/media/"+rec.ID, "alice", nil, nil).Body.Bytes()
	c, err := e.svc.MediaChunk(ctx, rec.ID, false, 0, 5)
	sum := sha256.Sum256(file)
	if err != nil || c.Size != want.OutputSize || !bytes.Equal(c.Data, file[:5]) || c.SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("chunk at 0: %+v, %v", c, err)
	}
	c, err = e.svc.MediaChunk(ctx, rec.ID, false, 5, RemoteChunk)
	if err != nil || !bytes.Equal(c.Data, file[5:]) || c.SHA256 != "" {
		t.Fatalf("chunk at 5: %+v, %v", c, err)
	}
	for _, bad := range []struct {
		id  string
		off int64
	}{{rec.ID, 1 << 30}, {"abcdefghijklmnopqrstuvwx", 0}, {rec.ID, -1}} {
		if _, err := e.svc.MediaChunk(ctx, bad.id, false, bad.off, 10); !errors.Is(err, wire.ErrNotFound) {
			t.Errorf("chunk of %s at %d: %v, want not found", bad.id, bad.off, err)
		}
	}
	if _, err := e.svc.MediaChunk(ctx, rec.ID, true, 0, 10); !errors.Is(err, wire.ErrNotFound) {
		t.Errorf("preview of a text file: %v", err)
	}
}

// Retention ends bob's access to a media of another region that was
// never fetched: it is not fetched any more, and the sweeper removes its
// record (and what marks it missing) although no node holds it.
func TestRemoteMediaExpiredUnfetched(t *testing.T) {
	e := newEnv(t, Config{})
	ctx := context.Background()
	rem := &fakeRemote{files: map[string]*remoteFile{"eu/" + remoteID(0): {err: fmt.Errorf("down: %w", wire.ErrUnavailable)}}}
	e.svc.SetRemote(rem)
	m := &wire.Media{ID: remoteID(0), Mime: "image/png", Size: 10}
	if err := e.svc.AttachRemote(ctx, "us", "eu", "alice@eu", m, "bob", "", 100); err != nil {
		t.Fatal(err)
	}
	// The prefetch AttachRemote started fails while eu is down; wait for
	// it, or a late one would find eu back below and fetch.
	e.svc.bg.Wait()
	if _, err := e.svc.fetchRemote(ctx, m.ID); !errors.Is(err, ErrRemoteUnavailable) {
		t.Fatalf("fetch while eu is down: %v", err)
	}
	if err := e.svc.ExpireSent(ctx, "bob", "alice@eu", "", 200, []string{m.ID}); err != nil {
		t.Fatal(err)
	}
	rem.mu.Lock()
	rem.files["eu/"+remoteID(0)] = &remoteFile{data: []byte("0123456789")} // eu is back
	rem.mu.Unlock()
	if _, err := e.svc.fetchRemote(ctx, m.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("fetch after retention: %v", err)
	}
	if w := e.do("GET", "/media/"+m.ID, "bob", nil, nil); w.Code != http.StatusNotFound {
		t.Fatalf("bob's GET after retention: %d", w.Code)
	}
	e.svc.Sweep(ctx)
	if _, err := e.svc.Get(m.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("record after the sweep: %v", err)
	}
	if err := e.prop.DB.View(func(tx *badger.Txn) error {
		_, err := tx.Get(pendingKey(m.ID))
		return err
	}); !errors.Is(err, badger.ErrKeyNotFound) {
		t.Fatalf("still marked missing: %v", err)
	}
	if n := rem.firsts.Load(); n != 0 {
		t.Fatalf("%d chunks fetched", n)
	}
}

// A media of another region larger than this region's MaxSize (the
// message says its size) is never fetched: not by the prefetch, not by
// the leader's retry every minute, not by a GET, which answers 413 at
// once. Each of them used to read its first chunk from the other region
// again, for ever (the leader every minute), only to refuse it.
func TestRemoteMediaTooLargeNotAsked(t *testing.T) {
	e := newEnv(t, Config{MaxSize: 1 << 20})
	ctx := context.Background()
	rem := &fakeRemote{files: map[string]*remoteFile{"eu/" + remoteID(0): {data: randomBytes(2<<20, 4)}}}
	e.svc.SetRemote(rem)
	m := &wire.Media{ID: remoteID(0), Mime: "image/png", Kind: "image", Size: 2 << 20}
	if err := e.svc.AttachRemote(ctx, "us", "eu", "alice@eu", m, "bob", "", 77); err != nil {
		t.Fatal(err)
	}
	e.svc.fetchPending(ctx)
	e.svc.fetchPending(ctx)
	if w := e.do("GET", "/media/"+m.ID, "bob", nil, nil); w.Code != http.StatusRequestEntityTooLarge || !strings.Contains(w.Body.String(), codeTooLarge) {
		t.Fatalf("GET: %d %s", w.Code, w.Body.String())
	}
	if n := rem.firsts.Load(); n != 0 {
		t.Fatalf("the other region was asked %d times for a file this region will not take", n)
	}
	if rec, _ := e.svc.Get(m.ID); rec.Fetched {
		t.Fatal("recorded as fetched")
	}
}
