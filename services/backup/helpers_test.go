package backup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/testutil"
)

const cmdPut byte = 0xF0 // payload "key=value": sets r/{key}

func openDB(t testing.TB, dir string) *badger.DB {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil).WithMemTableSize(8 << 20).
		WithBlockCacheSize(4 << 20).WithIndexCacheSize(4 << 20))
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func openDBFunc(dir string) (*badger.DB, error) {
	return badger.Open(badger.DefaultOptions(dir).WithLogger(nil).WithMemTableSize(8 << 20).
		WithBlockCacheSize(4 << 20).WithIndexCacheSize(4 << 20))
}

// testState is an FSM over a temporary Badger, with a put command.
type testState struct {
	f     *fsm.FSM
	db    *badger.DB
	index uint64
}

func newTestState(t testing.TB) *testState {
	t.Helper()
	db := openDB(t, t.TempDir())
	t.Cleanup(func() { _ = db.Close() })
	f := fsm.New(db, testutil.QuietLogger())
	f.Register(cmdPut, func(tx *badger.Txn, _ fsm.Position, p []byte) (any, error) {
		k, v, _ := bytes.Cut(p, []byte("="))
		return nil, tx.Set(append([]byte("r/"), k...), v)
	})
	return &testState{f: f, db: db}
}

// put applies one entry setting r/{k} to v.
func (s *testState) put(k, v string) {
	s.index++
	s.f.Apply(&raft.Log{Index: s.index, Type: raft.LogCommand,
		Data: fsm.EncodeBatch([]fsm.Command{{Type: cmdPut, Payload: []byte(k + "=" + v)}})})
}

// Segment references of the tests: r/seg/{key} = "{size} {sha256}".
func testRefOf(k, v []byte) (SegmentRef, bool) {
	key, ok := bytes.CutPrefix(k, []byte("r/seg/"))
	if !ok {
		return SegmentRef{}, false
	}
	size, sum, _ := strings.Cut(string(v), " ")
	n, _ := strconv.ParseInt(size, 10, 64)
	return SegmentRef{Key: string(key), Size: n, SHA256: sum}, true
}

// memSegments is an archive store in memory.
type memSegments map[string][]byte

func (m memSegments) OpenSegment(_ context.Context, key string) (io.ReadCloser, error) {
	b, ok := m[key]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// addSegment puts a segment in the archive and its reference in the state.
func (s *testState) addSegment(segs memSegments, key string, data []byte) {
	segs[key] = data
	sum := sha256.Sum256(data)
	s.put("seg/"+key, fmt.Sprintf("%d %s", len(data), hex.EncodeToString(sum[:])))
}

// fixture is a state with 200 keys, a route and a registry key (dropped
// at restore) and three segments.
// backupToDir writes a backup of src into a new directory store.
func backupToDir(t *testing.T, src Source) (*DirStore, *Manifest) {
	t.Helper()
	st, err := NewDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m, err := Write(tctx(t), src, &StoreSink{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	return st, m
}

func fixture(t testing.TB) (*testState, memSegments, Source) {
	s := newTestState(t)
	segs := memSegments{}
	for i := range 200 {
		s.put(fmt.Sprintf("msg/%04d", i), strings.Repeat("x", i))
	}
	s.put("route/n1/a", "1")
	s.put("reg/c1", "n1")
	s.addSegment(segs, "d/alice/bob/1-10.seg", bytes.Repeat([]byte("segment one "), 100))
	s.addSegment(segs, "g/g1/5-9.seg", []byte("segment two"))
	s.addSegment(segs, "d/alice/carol/3-4.seg", bytes.Repeat([]byte{0, 1, 2}, 5000))
	src := Source{
		State: func(context.Context) (int64, uint64, io.ReadCloser, error) { return s.f.OpenState() },
		RefOf: testRefOf, Segments: segs,
		Info: func() Manifest { return Manifest{Node: "n1", Leader: "n1", Members: []string{"n1"}} },
	}
	return s, segs, src
}

func tctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// restoreOpts restores into dataDir, the segments into {dataDir}-archive.
func restoreOpts(dataDir string) RestoreOptions {
	segs, err := NewDirStore(dataDir + "-archive")
	if err != nil {
		panic(err)
	}
	return RestoreOptions{DataDir: dataDir, OpenDB: openDBFunc, RefOf: testRefOf, Segments: DirSegments{segs},
		DropPrefixes: []string{"r/route/", "r/reg/"}, Log: testutil.QuietLogger()}
}

func getKey(t testing.TB, db *badger.DB, k string) (string, bool) {
	t.Helper()
	var out string
	err := db.View(func(tx *badger.Txn) error {
		it, err := tx.Get([]byte(k))
		if err != nil {
			return err
		}
		v, err := it.ValueCopy(nil)
		out = string(v)
		return err
	})
	if err == badger.ErrKeyNotFound {
		return "", false
	}
	if err != nil {
		t.Fatal(err)
	}
	return out, true
}

func dbPath(dataDir string) string { return filepath.Join(dataDir, "db") }

func copyAll(w io.Writer, r io.Reader) (int64, error) { return io.Copy(w, r) }

// checkRestoredIndex checks that a state restored from backup m starts
// its new log past the backup's index by at least the clock margin's
// worth of entries (logStartAfter), and not past where it would start
// now.
func checkRestoredIndex(t testing.TB, db *badger.DB, m *Manifest) {
	t.Helper()
	idx, err := fsm.New(db, testutil.QuietLogger()).AppliedIndex()
	least := m.AppliedIndex + uint64(restoreClockMargin/time.Second)*restoreEntryRate
	if err != nil || idx < least || idx > logStartAfter(m, time.Now()) {
		t.Fatalf("applied index %d, %v; want from %d (the backup's %d and two days of entries) to %d",
			idx, err, least, m.AppliedIndex, logStartAfter(m, time.Now()))
	}
}
