package backup

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBackupRestoreDir: a backup into a directory store restores into a
// new data directory with every key, the applied index and the segments,
// without the old cluster's routes and registry.
func TestBackupRestoreDir(t *testing.T) {
	s, segs, src := fixture(t)
	st, m := backupToDir(t, src)
	if m.AppliedIndex != s.index || m.Segments() != 3 || m.Node != "n1" {
		t.Fatalf("manifest %+v, want applied %d and 3 segments", m, s.index)
	}
	// Later writes are not in it.
	s.put("msg/late", "x")
	if id, err := Latest(tctx(t), st); err != nil || id != m.ID {
		t.Fatalf("Latest = %q, %v; want %q", id, err, m.ID)
	}

	data := t.TempDir()
	got, err := Restore(tctx(t), st, m.ID, restoreOpts(data))
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != m.ID {
		t.Fatalf("restored %s, want %s", got.ID, m.ID)
	}
	db := openDB(t, dbPath(data))
	defer db.Close()
	checkRestoredIndex(t, db, m)
	if v, ok := getKey(t, db, "r/msg/0199"); !ok || v != strings.Repeat("x", 199) {
		t.Fatalf("r/msg/0199 = %q, %v", v, ok)
	}
	for _, k := range []string{"r/msg/late", "r/route/n1/a", "r/reg/c1"} {
		if _, ok := getKey(t, db, k); ok {
			t.Errorf("%s restored", k)
		}
	}
	for key, want := range segs {
		b, err := os.ReadFile(filepath.Join(data+"-archive", filepath.FromSlash(key)))
		if err != nil || !bytes.Equal(b, want) {
			t.Errorf("segment %s: %d bytes, %v", key, len(b), err)
		}
	}
	// A second restore into the same directory is refused; one without an
	// archive store for the segments too.
	o := restoreOpts(t.TempDir())
	o.Segments = nil
	if _, err := Restore(tctx(t), st, m.ID, o); err == nil || !strings.Contains(err.Error(), "no archive store") {
		t.Fatalf("restore without an archive store: %v", err)
	}
	if _, err := Restore(tctx(t), st, m.ID, restoreOpts(data)); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("restore over a node: %v, want ErrNotEmpty", err)
	}
}

// TestDamagedBackupRefused: a flipped byte in the state, a segment or the
// manifest, a truncated or extended file, a missing segment: Restore
// says which file and writes nothing.
func TestDamagedBackupRefused(t *testing.T) {
	_, _, src := fixture(t)
	flip := func(p string, at func(size int) int) func(t *testing.T) {
		return func(t *testing.T) {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			b[at(len(b))] ^= 0x01
			if err := os.WriteFile(p, b, 0o640); err != nil {
				t.Fatal(err)
			}
		}
	}
	truncate := func(p string) func(t *testing.T) {
		return func(t *testing.T) {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(p, fi.Size()-1); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tc := range []struct {
		name   string
		damage func(dir string) func(t *testing.T)
		want   string // in the error
	}{
		{"state byte", func(d string) func(*testing.T) {
			return flip(filepath.Join(d, StateName), func(n int) int { return n / 2 })
		}, "state has SHA-256"},
		{"state header", func(d string) func(*testing.T) { return flip(filepath.Join(d, StateName), func(int) int { return 0 }) }, "state has SHA-256"},
		{"segment byte", func(d string) func(*testing.T) {
			return flip(filepath.Join(d, "segments/g/g1/5-9.seg"), func(n int) int { return n - 1 })
		}, "segments/g/g1/5-9.seg has SHA-256"},
		{"manifest digest", func(d string) func(*testing.T) {
			return func(t *testing.T) {
				p := filepath.Join(d, ManifestName)
				b, _ := os.ReadFile(p)
				i := bytes.Index(b, []byte(`"sha256": "`)) + len(`"sha256": "`)
				if b[i] == 'a' {
					b[i] = 'b'
				} else {
					b[i] = 'a'
				}
				os.WriteFile(p, b, 0o640)
			}
		}, "state has SHA-256"},
		{"manifest syntax", func(d string) func(*testing.T) {
			return flip(filepath.Join(d, ManifestName), func(int) int { return 0 })
		}, "manifest"},
		{"manifest size", func(d string) func(*testing.T) {
			return func(t *testing.T) {
				p := filepath.Join(d, ManifestName)
				b, _ := os.ReadFile(p)
				b = bytes.Replace(b, []byte(`"size": 11,`), []byte(`"size": 12,`), 1)
				os.WriteFile(p, b, 0o640)
			}
		}, "truncated"},
		{"state truncated", func(d string) func(*testing.T) { return truncate(filepath.Join(d, StateName)) }, "state is truncated"},
		{"segment truncated", func(d string) func(*testing.T) {
			return truncate(filepath.Join(d, "segments/d/alice/bob/1-10.seg"))
		}, "1-10.seg is truncated"},
		{"segment extended", func(d string) func(*testing.T) {
			return func(t *testing.T) {
				f, _ := os.OpenFile(filepath.Join(d, "segments/g/g1/5-9.seg"), os.O_APPEND|os.O_WRONLY, 0)
				f.Write([]byte("!"))
				f.Close()
			}
		}, "longer than"},
		{"segment missing", func(d string) func(*testing.T) {
			return func(t *testing.T) { os.Remove(filepath.Join(d, "segments/g/g1/5-9.seg")) }
		}, "5-9.seg is missing"},
		{"manifest missing", func(d string) func(*testing.T) {
			return func(t *testing.T) { os.Remove(filepath.Join(d, ManifestName)) }
		}, "no manifest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := NewDirStore(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			m, err := Write(tctx(t), src, &StoreSink{Store: st})
			if err != nil {
				t.Fatal(err)
			}
			tc.damage(filepath.Join(st.root, m.ID))(t)
			data := t.TempDir()
			_, err = Restore(tctx(t), st, m.ID, restoreOpts(data))
			if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("restore of a damaged backup: %v; want ErrDamaged mentioning %q", err, tc.want)
			}
			t.Logf("refused: %v", err)
			for _, d := range []string{data, data + "-archive"} {
				if ents, _ := os.ReadDir(d); len(ents) != 0 {
					t.Fatalf("restore of a damaged backup wrote %v in %s", ents, d)
				}
			}
			if _, err := Verify(tctx(t), st, m.ID, testRefOf); !errors.Is(err, ErrDamaged) {
				t.Fatalf("Verify: %v", err)
			}
		})
	}
}

// TestWriteRefusesDamagedArchiveSegment: a segment whose bytes differ
// from its index entry fails the backup (it would not restore).
func TestWriteRefusesDamagedArchiveSegment(t *testing.T) {
	_, segs, src := fixture(t)
	segs["g/g1/5-9.seg"] = []byte("segment twO")
	st, _ := NewDirStore(t.TempDir())
	_, err := Write(tctx(t), src, &StoreSink{Store: st})
	if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "5-9.seg") {
		t.Fatalf("Write with a damaged archive segment: %v", err)
	}
	if _, err := Latest(tctx(t), st); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a failed backup left a complete one: %v", err)
	}
	delete(segs, "g/g1/5-9.seg")
	if _, err := Write(tctx(t), src, &StoreSink{Store: st}); err == nil || !strings.Contains(err.Error(), "5-9.seg") {
		t.Fatalf("Write with a missing archive segment: %v", err)
	}
}

// TestTarStreamRoundTrip: what GET /admin/backup streams, Receive stores
// as the same backup; an error entry, a cut stream or a manifest that
// does not match what was received fail with no manifest written.
func TestTarStreamRoundTrip(t *testing.T) {
	_, _, src := fixture(t)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	var id string
	m, err := Write(tctx(t), src, &TarSink{W: tw, OnID: func(s string) { id = s }})
	if err != nil {
		t.Fatal(err)
	}
	tw.Close()
	if id != m.ID {
		t.Fatalf("OnID got %q, manifest %q", id, m.ID)
	}
	st, _ := NewDirStore(t.TempDir())
	got, err := Receive(tctx(t), bytes.NewReader(buf.Bytes()), id, st)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(tctx(t), st, id, testRefOf); err != nil || got.AppliedIndex != m.AppliedIndex {
		t.Fatalf("received backup: %v", err)
	}

	cases := map[string][]byte{
		"cut": buf.Bytes()[:buf.Len()/2],
	}
	{ // an error entry after the state
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		tw.WriteHeader(&tar.Header{Name: StateName, Size: 3, Mode: 0o600, Typeflag: tar.TypeReg})
		tw.Write([]byte("abc"))
		WriteTarError(tw, errors.New("segment x: disk on fire"))
		cases["error entry"] = b.Bytes()
	}
	{ // a byte of the state changed in transit (the node's manifest no longer matches)
		b := append([]byte(nil), buf.Bytes()...)
		i := bytes.Index(b, []byte("ECSNAP1\n"))
		b[i+20] ^= 1
		cases["changed in transit"] = b
	}
	for name, stream := range cases {
		t.Run(name, func(t *testing.T) {
			st, _ := NewDirStore(t.TempDir())
			_, err := Receive(tctx(t), bytes.NewReader(stream), id, st)
			if err == nil {
				t.Fatal("Receive accepted it")
			}
			t.Logf("refused: %v", err)
			if name == "error entry" && (!errors.Is(err, ErrRemote) || !strings.Contains(err.Error(), "disk on fire")) {
				t.Fatalf("error entry: %v", err)
			}
			if _, err := os.Stat(filepath.Join(st.root, id, ManifestName)); err == nil {
				t.Fatal("a manifest was written")
			}
		})
	}
}

// TestStatePipeErrors: a state stream that fails half-way fails the
// backup and leaves no state file.
func TestStatePipeErrors(t *testing.T) {
	_, _, src := fixture(t)
	inner := src.State
	src.State = func(ctx context.Context) (int64, uint64, io.ReadCloser, error) {
		size, applied, rc, err := inner(ctx)
		return size, applied, struct {
			io.Reader
			io.Closer
		}{io.MultiReader(io.LimitReader(rc, size/2), failing{}), rc}, err
	}
	st, _ := NewDirStore(t.TempDir())
	if _, err := Write(tctx(t), src, &StoreSink{Store: st}); err == nil {
		t.Fatal("Write succeeded on a broken state stream")
	}
	ids, _ := st.IDs(tctx(t))
	for _, id := range ids {
		if _, err := os.Stat(filepath.Join(st.root, id, StateName)); err == nil {
			t.Fatal("a state file was left")
		}
	}
}

type failing struct{}

func (failing) Read([]byte) (int, error) { return 0, errors.New("disk read error") }

// TestReuseSegmentsOfPreviousBackup: a backup with Prev takes unchanged
// segments from the earlier backup (hard links), reads new ones from the
// archive, and still stands alone once the earlier one is deleted.
func TestReuseSegmentsOfPreviousBackup(t *testing.T) {
	s, segs, src := fixture(t)
	st, _ := NewDirStore(t.TempDir())
	first, err := Write(tctx(t), src, &StoreSink{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	s.addSegment(segs, "g/g1/10-20.seg", []byte("a new segment"))
	// The archive store must not be read for the old segments.
	onlyNew := memSegments{"g/g1/10-20.seg": segs["g/g1/10-20.seg"]}
	src.Segments = onlyNew
	sink := &StoreSink{Store: st, Prev: first}
	second, err := Write(tctx(t), src, sink)
	if err != nil {
		t.Fatal(err)
	}
	if sink.Reused != 3 || second.Segments() != 4 {
		t.Fatalf("reused %d of %d segments, want 3 of 4", sink.Reused, second.Segments())
	}
	a, _ := os.Stat(filepath.Join(st.root, first.ID, "segments/g/g1/5-9.seg"))
	b, _ := os.Stat(filepath.Join(st.root, second.ID, "segments/g/g1/5-9.seg"))
	if !os.SameFile(a, b) {
		t.Error("the reused segment is not a hard link")
	}
	if err := st.Delete(tctx(t), first.ID); err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	if _, err := Restore(tctx(t), st, second.ID, restoreOpts(data)); err != nil {
		t.Fatalf("restore after the earlier backup was deleted: %v", err)
	}
	for key, want := range segs {
		got, err := os.ReadFile(filepath.Join(data+"-archive", filepath.FromSlash(key)))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("segment %s: %v", key, err)
		}
	}
	// A Prev whose files are gone: read from the archive again.
	src.Segments = segs
	sink = &StoreSink{Store: st, Prev: first}
	if _, err := Write(tctx(t), src, sink); err != nil || sink.Reused != 0 {
		t.Fatalf("with a deleted Prev: reused %d, %v", sink.Reused, err)
	}
}
