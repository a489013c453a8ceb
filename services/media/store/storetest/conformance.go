// Package storetest holds what tests of media stores share: a conformance
// suite every store.Store must pass, and StartMinIO, a real MinIO server
// for the S3 store and for other packages' tests.
package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgechat/edgechat/services/media/store"
)

// Conformance runs the behaviour every store shares against stores
// newStore makes (one per subtest, empty).
func Conformance(t *testing.T, newStore func(t *testing.T) store.Store) {
	t.Run("PutGetStat", func(t *testing.T) { testPutGetStat(t, newStore(t)) })
	t.Run("Overwrite", func(t *testing.T) { testOverwrite(t, newStore(t)) })
	t.Run("Range", func(t *testing.T) { testRange(t, newStore(t)) })
	t.Run("Missing", func(t *testing.T) { testMissing(t, newStore(t)) })
	t.Run("Delete", func(t *testing.T) { testDelete(t, newStore(t)) })
	t.Run("Move", func(t *testing.T) { testMove(t, newStore(t)) })
	t.Run("List", func(t *testing.T) { testList(t, newStore(t)) })
	t.Run("BadKeys", func(t *testing.T) { testBadKeys(t, newStore(t)) })
	t.Run("SizeMismatch", func(t *testing.T) { testSizeMismatch(t, newStore(t)) })
	t.Run("Streams30MB", func(t *testing.T) { testStreams(t, newStore(t), 30<<20) })
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// Put stores data under key and fails the test on an error.
func Put(t testing.TB, s store.Store, tier store.Tier, key string, data []byte, contentType string) store.Object {
	t.Helper()
	obj, err := s.Put(context.Background(), tier, key, bytes.NewReader(data), int64(len(data)), contentType)
	if err != nil {
		t.Fatalf("Put %s %s: %v", tier, key, err)
	}
	return obj
}

// ReadAll gets [offset, offset+length) of key and fails the test on an
// error.
func ReadAll(t testing.TB, s store.Store, tier store.Tier, key string, offset, length int64) ([]byte, store.Object) {
	t.Helper()
	rc, obj, err := s.Get(context.Background(), tier, key, offset, length)
	if err != nil {
		t.Fatalf("Get %s %s [%d,+%d): %v", tier, key, offset, length, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("Get %s %s: read: %v", tier, key, err)
	}
	return b, obj
}

func testPutGetStat(t *testing.T, s store.Store) {
	c := ctx(t)
	data := []byte("a small jpeg, honestly")
	before := time.Now().Add(-time.Minute)
	put := Put(t, s, store.TierRaw, "u/alice/m1.jpg", data, "image/jpeg")
	if put.Key != "u/alice/m1.jpg" || put.Size != int64(len(data)) || put.ContentType != "image/jpeg" || put.ETag == "" {
		t.Fatalf("Put returned %+v", put)
	}
	st, err := s.Stat(c, store.TierRaw, "u/alice/m1.jpg")
	if err != nil {
		t.Fatal(err)
	}
	if st.Key != put.Key || st.Size != put.Size || st.ContentType != "image/jpeg" || st.ETag != put.ETag {
		t.Fatalf("Stat %+v, Put %+v", st, put)
	}
	if st.ModTime.Before(before) || st.ModTime.After(time.Now().Add(time.Minute)) {
		t.Fatalf("ModTime %v is not about now", st.ModTime)
	}
	got, obj := ReadAll(t, s, store.TierRaw, "u/alice/m1.jpg", 0, -1)
	if !bytes.Equal(got, data) {
		t.Fatalf("Get = %q, want %q", got, data)
	}
	if obj.Size != st.Size || obj.ETag != st.ETag || obj.ContentType != st.ContentType {
		t.Fatalf("Get's Object %+v, Stat %+v", obj, st)
	}
	// Tiers are separate.
	if _, err := s.Stat(c, store.TierProcessed, "u/alice/m1.jpg"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Stat in another tier: %v, want ErrNotFound", err)
	}
	// Unknown size, empty content type.
	obj2, err := s.Put(c, store.TierProcessed, "u/alice/m1.webp", strings.NewReader("webp!"), -1, "")
	if err != nil {
		t.Fatal(err)
	}
	if obj2.Size != 5 || obj2.ContentType == "" {
		t.Fatalf("Put of unknown size returned %+v", obj2)
	}
	if got, _ := ReadAll(t, s, store.TierProcessed, "u/alice/m1.webp", 0, -1); string(got) != "webp!" {
		t.Fatalf("Get = %q", got)
	}
	// Empty object.
	Put(t, s, store.TierRaw, "empty", nil, "text/plain")
	if got, obj := ReadAll(t, s, store.TierRaw, "empty", 0, -1); len(got) != 0 || obj.Size != 0 {
		t.Fatalf("empty object: %q %+v", got, obj)
	}
}

func testOverwrite(t *testing.T, s store.Store) {
	a := Put(t, s, store.TierRaw, "k", []byte("first version"), "text/plain")
	b := Put(t, s, store.TierRaw, "k", []byte("second version!"), "text/markdown")
	if a.ETag == b.ETag {
		t.Fatalf("different bytes, same ETag %q", a.ETag)
	}
	got, obj := ReadAll(t, s, store.TierRaw, "k", 0, -1)
	if string(got) != "second version!" || obj.ContentType != "text/markdown" || obj.ETag != b.ETag {
		t.Fatalf("after overwrite: %q %+v", got, obj)
	}
	c := Put(t, s, store.TierRaw, "k2", []byte("second version!"), "text/markdown")
	if c.ETag != b.ETag {
		t.Fatalf("same bytes, ETags %q and %q", b.ETag, c.ETag)
	}
}

func testRange(t *testing.T, s store.Store) {
	data := []byte("0123456789abcdefghij")
	Put(t, s, store.TierProcessed, "r", data, "application/octet-stream")
	for _, tc := range []struct {
		off, n int64
		want   string
	}{
		{0, -1, string(data)},
		{3, 4, "3456"},
		{3, -1, string(data[3:])},
		{15, 100, "fghij"},
		{19, 1, "j"},
		{0, 1, "0"},
		{5, 0, ""},
	} {
		got, obj := ReadAll(t, s, store.TierProcessed, "r", tc.off, tc.n)
		if string(got) != tc.want {
			t.Errorf("Get [%d,+%d) = %q, want %q", tc.off, tc.n, got, tc.want)
		}
		if obj.Size != int64(len(data)) {
			t.Errorf("Get [%d,+%d): Object.Size %d, want the whole object's %d", tc.off, tc.n, obj.Size, len(data))
		}
	}
	c := ctx(t)
	for _, tc := range [][2]int64{{20, -1}, {20, 1}, {21, 5}, {-1, 3}, {0, -2}} {
		rc, _, err := s.Get(c, store.TierProcessed, "r", tc[0], tc[1])
		if err == nil {
			rc.Close()
		}
		if !errors.Is(err, store.ErrInvalidRange) {
			t.Errorf("Get [%d,+%d): %v, want ErrInvalidRange", tc[0], tc[1], err)
		}
	}
	Put(t, s, store.TierProcessed, "e", nil, "")
	for _, n := range []int64{-1, 0, 5} {
		if got, _ := ReadAll(t, s, store.TierProcessed, "e", 0, n); len(got) != 0 {
			t.Errorf("empty object [0,+%d) = %q", n, got)
		}
	}
}

func testMissing(t *testing.T, s store.Store) {
	c := ctx(t)
	if _, err := s.Stat(c, store.TierRaw, "nope/x"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Stat: %v, want ErrNotFound", err)
	}
	if rc, _, err := s.Get(c, store.TierRaw, "nope/x", 0, -1); !errors.Is(err, store.ErrNotFound) {
		if err == nil {
			rc.Close()
		}
		t.Errorf("Get: %v, want ErrNotFound", err)
	}
	if rc, _, err := s.Get(c, store.TierRaw, "nope/x", 5, 10); !errors.Is(err, store.ErrNotFound) {
		if err == nil {
			rc.Close()
		}
		t.Errorf("ranged Get: %v, want ErrNotFound", err)
	}
	if err := s.Move(c, store.TierRaw, store.TierCold, "nope/x"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Move: %v, want ErrNotFound", err)
	}
	if err := s.Delete(c, store.TierRaw, "nope/x"); err != nil {
		t.Errorf("Delete of a missing key: %v", err)
	}
	// A key below an object, and an object's "directory".
	Put(t, s, store.TierRaw, "obj", []byte("x"), "")
	if _, err := s.Stat(c, store.TierRaw, "obj/below"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Stat below an object: %v, want ErrNotFound", err)
	}
	Put(t, s, store.TierRaw, "dir/obj", []byte("x"), "")
	if _, err := s.Stat(c, store.TierRaw, "dir"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Stat of a prefix: %v, want ErrNotFound", err)
	}
	if err := s.Delete(c, store.TierRaw, "dir"); err != nil {
		t.Errorf("Delete of a prefix: %v", err)
	}
	if _, err := s.Stat(c, store.TierRaw, "dir/obj"); err != nil {
		t.Errorf("Delete of a prefix removed what is below it: %v", err)
	}
}

func testDelete(t *testing.T, s store.Store) {
	c := ctx(t)
	Put(t, s, store.TierRaw, "a/b/c", []byte("x"), "")
	Put(t, s, store.TierRaw, "a/b2", []byte("y"), "")
	if err := s.Delete(c, store.TierRaw, "a/b/c"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(c, store.TierRaw, "a/b/c"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Stat after Delete: %v", err)
	}
	if got, _ := ReadAll(t, s, store.TierRaw, "a/b2", 0, -1); string(got) != "y" {
		t.Fatalf("neighbour: %q", got)
	}
	if err := s.Delete(c, store.TierRaw, "a/b/c"); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
	// The key can be written again (no directory litter in the way).
	Put(t, s, store.TierRaw, "a/b", []byte("z"), "")
}

func testMove(t *testing.T, s store.Store) {
	c := ctx(t)
	data := bytes.Repeat([]byte("cold media "), 1000)
	put := Put(t, s, store.TierProcessed, "m/1.jpg", data, "image/jpeg")
	if err := s.Move(c, store.TierProcessed, store.TierCold, "m/1.jpg"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(c, store.TierProcessed, "m/1.jpg"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("source after Move: %v, want ErrNotFound", err)
	}
	got, obj := ReadAll(t, s, store.TierCold, "m/1.jpg", 0, -1)
	if !bytes.Equal(got, data) || obj.ContentType != "image/jpeg" || obj.Size != put.Size {
		t.Fatalf("cold copy: %d bytes %+v", len(got), obj)
	}
	if got, _ := ReadAll(t, s, store.TierCold, "m/1.jpg", 11, 4); string(got) != "cold" {
		t.Fatalf("ranged Get from cold: %q", got)
	}
	// Back, over an existing object.
	Put(t, s, store.TierProcessed, "m/1.jpg", []byte("stale"), "text/plain")
	if err := s.Move(c, store.TierCold, store.TierProcessed, "m/1.jpg"); err != nil {
		t.Fatal(err)
	}
	if got, obj := ReadAll(t, s, store.TierProcessed, "m/1.jpg", 0, -1); !bytes.Equal(got, data) || obj.ContentType != "image/jpeg" {
		t.Fatalf("moved back: %d bytes %+v", len(got), obj)
	}
	if _, err := s.Stat(c, store.TierCold, "m/1.jpg"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("cold after moving back: %v", err)
	}
	// To the same tier: nothing happens.
	if err := s.Move(c, store.TierProcessed, store.TierProcessed, "m/1.jpg"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(c, store.TierProcessed, "m/1.jpg"); err != nil {
		t.Fatal(err)
	}
}

func listKeys(t *testing.T, s store.Store, tier store.Tier, prefix string) []string {
	t.Helper()
	var keys []string
	err := s.List(ctx(t), tier, prefix, func(o store.Object) bool {
		if o.Size <= 0 || o.ETag == "" || o.ModTime.IsZero() {
			t.Errorf("List gave %+v", o)
		}
		keys = append(keys, o.Key)
		return true
	})
	if err != nil {
		t.Fatalf("List %s %q: %v", tier, prefix, err)
	}
	sort.Strings(keys)
	return keys
}

func testList(t *testing.T, s store.Store) {
	for _, k := range []string{"l/a/1", "l/a/2", "l/b/1", "l/ab", "l/a-z", "top"} {
		Put(t, s, store.TierRaw, k, []byte("data of "+k), "")
	}
	Put(t, s, store.TierProcessed, "l/a/3", []byte("elsewhere"), "")
	for _, tc := range []struct {
		prefix string
		want   string
	}{
		{"", "l/a-z l/a/1 l/a/2 l/ab l/b/1 top"},
		{"l/a", "l/a-z l/a/1 l/a/2 l/ab"},
		{"l/a/", "l/a/1 l/a/2"},
		{"l/a/1", "l/a/1"},
		{"l/c", ""},
		{"zz/", ""},
	} {
		if got := strings.Join(listKeys(t, s, store.TierRaw, tc.prefix), " "); got != tc.want {
			t.Errorf("List %q = %q, want %q", tc.prefix, got, tc.want)
		}
	}
	n := 0
	if err := s.List(ctx(t), store.TierRaw, "l/", func(store.Object) bool { n++; return false }); err != nil || n != 1 {
		t.Errorf("List stopping at once: %d calls, %v", n, err)
	}
	if err := s.List(ctx(t), store.TierRaw, "../", func(store.Object) bool { return true }); err == nil {
		t.Errorf("List with prefix ../: no error")
	}
}

// BadKeys are keys every store refuses.
var badKeys = []string{"", "/abs", "../x", "a/../b", "a/./b", "..", ".", "a//b", "a/", "a b", "ä", ".hidden", "a/.x", "a\\b", "a\x00b", "C:x", "a?b", strings.Repeat("k", 1025), strings.Repeat("s", 201)}

func testBadKeys(t *testing.T, s store.Store) {
	c := ctx(t)
	for _, k := range badKeys {
		_, err := s.Put(c, store.TierRaw, k, strings.NewReader("x"), 1, "")
		if !errors.Is(err, store.ErrInvalidKey) {
			t.Errorf("Put %q: %v, want ErrInvalidKey", k, err)
		}
		if _, _, err := s.Get(c, store.TierRaw, k, 0, -1); !errors.Is(err, store.ErrInvalidKey) {
			t.Errorf("Get %q: %v, want ErrInvalidKey", k, err)
		}
		if _, err := s.Stat(c, store.TierRaw, k); !errors.Is(err, store.ErrInvalidKey) {
			t.Errorf("Stat %q: %v, want ErrInvalidKey", k, err)
		}
		if err := s.Delete(c, store.TierRaw, k); !errors.Is(err, store.ErrInvalidKey) {
			t.Errorf("Delete %q: %v, want ErrInvalidKey", k, err)
		}
		if err := s.Move(c, store.TierRaw, store.TierCold, k); !errors.Is(err, store.ErrInvalidKey) {
			t.Errorf("Move %q: %v, want ErrInvalidKey", k, err)
		}
	}
	if _, err := s.Put(c, store.Tier("warm"), "k", strings.NewReader("x"), 1, ""); err == nil {
		t.Errorf("Put to an unknown tier: no error")
	}
	// The longest valid key works.
	long := strings.Repeat(strings.Repeat("k", 200)+"/", 4) + strings.Repeat("k", 200)
	if len(long) > 1024 {
		t.Fatalf("test key of %d bytes", len(long))
	}
	Put(t, s, store.TierRaw, long, []byte("x"), "")
}

func testSizeMismatch(t *testing.T, s store.Store) {
	c := ctx(t)
	Put(t, s, store.TierRaw, "k", []byte("original"), "text/plain")
	if _, err := s.Put(c, store.TierRaw, "k", strings.NewReader("short"), 100, ""); err == nil {
		t.Errorf("Put of a reader shorter than its size: no error")
	}
	if _, err := s.Put(c, store.TierRaw, "k", strings.NewReader("longer than five"), 5, ""); err == nil {
		t.Errorf("Put of a reader longer than its size: no error")
	}
	if got, _ := ReadAll(t, s, store.TierRaw, "k", 0, -1); string(got) != "original" {
		t.Errorf("after failed Puts the object is %q", got)
	}
	if keys := listKeys(t, s, store.TierRaw, ""); strings.Join(keys, " ") != "k" {
		t.Errorf("after failed Puts List gives %q", keys)
	}
}

// GenReader yields n pseudo-random bytes without holding them (xorshift),
// the same for the same seed.
type GenReader struct {
	left  int64
	state uint64
	buf   [8]byte
	have  int
}

func NewGenReader(n int64, seed uint64) *GenReader { return &GenReader{left: n, state: seed | 1} }

func (g *GenReader) Read(p []byte) (int, error) {
	if g.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > g.left {
		p = p[:g.left]
	}
	for i := 0; i < len(p); {
		if g.have == 0 {
			g.state ^= g.state << 13
			g.state ^= g.state >> 7
			g.state ^= g.state << 17
			binary.LittleEndian.PutUint64(g.buf[:], g.state)
			g.have = 8
		}
		n := copy(p[i:], g.buf[8-g.have:])
		g.have -= n
		i += n
	}
	g.left -= int64(len(p))
	return len(p), nil
}

// HeapWatch samples HeapInuse until Stop and reports the high-water mark
// above the baseline taken (after a GC) at the start. It runs the GC at
// GOGC=10 meanwhile: HeapInuse counts garbage not yet collected too, and at
// the default GOGC=100 a store holding one 5 MiB part could show twice that.
type HeapWatch struct {
	base, peak uint64
	gcPercent  int
	stop       chan struct{}
	done       sync.WaitGroup
}

func WatchHeap() *HeapWatch {
	gcPercent := debug.SetGCPercent(10)
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	w := &HeapWatch{base: ms.HeapInuse, peak: ms.HeapInuse, gcPercent: gcPercent, stop: make(chan struct{})}
	w.done.Add(1)
	go func() {
		defer w.done.Done()
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			w.peak = max(w.peak, ms.HeapInuse)
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

// Stop ends the sampling and returns the peak growth in bytes.
func (w *HeapWatch) Stop() uint64 {
	close(w.stop)
	w.done.Wait()
	debug.SetGCPercent(w.gcPercent)
	return w.peak - w.base
}

func testStreams(t *testing.T, s store.Store, n int64) {
	const limit = 10 << 20
	for _, tc := range []struct {
		name string
		size int64
	}{{"known size", n}, {"unknown size", -1}} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			c := ctx(t)
			w := WatchHeap()
			obj, err := s.Put(c, store.TierRaw, "big", NewGenReader(n, 42), tc.size, "video/mp4")
			grew := w.Stop()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("Put of %d MiB (%s): heap grew by at most %.1f MiB", n>>20, tc.name, float64(grew)/(1<<20))
			if grew > limit {
				t.Errorf("heap grew by %d bytes during a %d-byte Put: it is not streaming", grew, n)
			}
			if obj.Size != n {
				t.Fatalf("Put returned size %d", obj.Size)
			}
			rc, _, err := s.Get(c, store.TierRaw, "big", 0, -1)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			want, got := sha256.New(), sha256.New()
			io.Copy(want, NewGenReader(n, 42))
			if m, err := io.Copy(got, rc); err != nil || m != n {
				t.Fatalf("read back %d bytes: %v", m, err)
			}
			if !bytes.Equal(want.Sum(nil), got.Sum(nil)) {
				t.Fatal("read back other bytes than were put")
			}
		})
	}
}
