package backup

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/edgechat/edgechat/cluster/fsm"
)

// SegmentRef is an archive object the state references: what
// archive.SegmentRefOf reports for a segment index entry.
type SegmentRef struct {
	Key    string // the object key in the archive store
	Size   int64
	SHA256 string // lowercase hex
}

// SegmentReader reads archive objects by key (the node's archive store).
type SegmentReader interface {
	OpenSegment(ctx context.Context, key string) (io.ReadCloser, error)
}

// Source is what a backup is taken from: one node's state and archive.
type Source struct {
	// State opens the full state stream at one applied index
	// (fsm.FSM.OpenState, after the node caught up with the leader).
	State func(ctx context.Context) (size int64, applied uint64, rc io.ReadCloser, err error)
	// RefOf tells which state entries reference a segment
	// (archive.SegmentRefOf); nil: none do.
	RefOf func(key, value []byte) (SegmentRef, bool)
	// Segments reads the referenced segments; needed only when RefOf
	// finds some.
	Segments SegmentReader
	// Info fills the manifest's Node, Leader, Members and Software.
	Info func() Manifest
	Now  func() time.Time
}

// Sink receives a backup's files in order: Begin once the ID is known,
// then the state, the segments and the manifest (last).
type Sink interface {
	Begin(id string) error
	Put(ctx context.Context, name string, r io.Reader, size int64) error
}

// Write takes a backup from src into sink and returns its manifest. The
// state is read once: it goes to the sink while it is hashed and parsed
// for segment references; then each referenced segment is copied and
// checked against its reference (a segment in the archive store that does
// not match fails the backup: it would not restore).
func Write(ctx context.Context, src Source, sink Sink) (*Manifest, error) {
	now := time.Now
	if src.Now != nil {
		now = src.Now
	}
	size, applied, rc, err := src.State(ctx)
	if err != nil {
		return nil, fmt.Errorf("backup: open state: %w", err)
	}
	defer rc.Close()
	m := &Manifest{}
	if src.Info != nil {
		*m = src.Info()
	}
	m.Format, m.Version = FormatName, FormatVersion
	if bi, ok := debug.ReadBuildInfo(); ok && m.Software == "" {
		m.Software = "edgechat " + bi.Main.Version
	}
	m.Created = now().UTC().Truncate(time.Millisecond)
	m.AppliedIndex = applied
	m.ID = newID(m.Created, applied)
	m.Files = nil
	if err := sink.Begin(m.ID); err != nil {
		return nil, err
	}

	refs := map[string]SegmentRef{}
	pr, pw := io.Pipe()
	parsed := make(chan error, 1)
	var streamApplied uint64
	go func() {
		a, err := fsm.ReadState(bufio.NewReaderSize(pr, 64<<10), func(k, v []byte) error {
			if src.RefOf == nil {
				return nil
			}
			if ref, ok := src.RefOf(k, v); ok {
				if err := ValidKey(ref.Key); err != nil {
					return fmt.Errorf("state key %q references a segment: %w", k, err)
				}
				refs[ref.Key] = ref
			}
			return nil
		})
		streamApplied = a
		if err != nil {
			pr.CloseWithError(err)
		} else {
			_, err = io.Copy(io.Discard, pr) // nothing should follow; keep the writer unblocked
		}
		parsed <- err
	}()
	h := sha256.New()
	cr := &countReader{r: io.TeeReader(rc, io.MultiWriter(h, pw))}
	err = sink.Put(ctx, StateName, cr, size)
	pw.CloseWithError(err) // io.EOF for the parser when err is nil
	if perr := <-parsed; err == nil && perr != nil {
		err = fmt.Errorf("backup: state stream: %w", perr)
	}
	if err != nil {
		return nil, err
	}
	if cr.n != size || streamApplied != applied {
		return nil, fmt.Errorf("backup: state stream of %d bytes at index %d, announced %d bytes at %d", cr.n, streamApplied, size, applied)
	}
	m.Files = append(m.Files, File{Name: StateName, Size: size, SHA256: hex.EncodeToString(h.Sum(nil))})

	keys := make([]string, 0, len(refs))
	for k := range refs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if len(keys) > 0 && src.Segments == nil {
		return nil, fmt.Errorf("backup: the state references %d segments and this node cannot read its archive store", len(keys))
	}
	reuser, _ := sink.(segmentReuser)
	for _, k := range keys {
		ref := refs[k]
		if reuser != nil {
			f := File{Name: SegmentDir + ref.Key, Size: ref.Size, SHA256: ref.SHA256}
			if ok, err := reuser.Reuse(ctx, f); err != nil {
				return nil, err
			} else if ok {
				m.Files = append(m.Files, f)
				continue
			}
		}
		f, err := copySegment(ctx, src.Segments, sink, ref)
		if err != nil {
			return nil, err
		}
		m.Files = append(m.Files, f)
	}
	mb := m.Marshal()
	if err := sink.Put(ctx, ManifestName, strings.NewReader(string(mb)), int64(len(mb))); err != nil {
		return nil, err
	}
	return m, nil
}

func copySegment(ctx context.Context, segs SegmentReader, sink Sink, ref SegmentRef) (File, error) {
	rc, err := segs.OpenSegment(ctx, ref.Key)
	if err != nil {
		return File{}, fmt.Errorf("backup: segment %s: %w", ref.Key, err)
	}
	defer rc.Close()
	h := sha256.New()
	name := SegmentDir + ref.Key
	if err := sink.Put(ctx, name, &hashCheck{r: rc, h: h, left: ref.Size, ref: ref}, ref.Size); err != nil {
		return File{}, err
	}
	return File{Name: name, Size: ref.Size, SHA256: ref.SHA256}, nil
}

// hashCheck passes a segment through and, at its end, fails the read when
// its bytes do not match the reference, so the sink never completes a
// damaged copy.
type hashCheck struct {
	r    io.Reader
	h    hash.Hash
	left int64
	ref  SegmentRef
}

func (c *hashCheck) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.h.Write(p[:n])
	c.left -= int64(n)
	if c.left < 0 {
		return n, fmt.Errorf("%w: segment %s in the archive store is larger than its index entry says (%d bytes)", ErrDamaged, c.ref.Key, c.ref.Size)
	}
	if err == io.EOF && c.left > 0 {
		return n, fmt.Errorf("%w: segment %s in the archive store is %d bytes short", ErrDamaged, c.ref.Key, c.left)
	}
	// Checked as the last byte arrives: sinks stop reading at the size.
	if c.left == 0 && (n > 0 || err == io.EOF) {
		if got := hex.EncodeToString(c.h.Sum(nil)); got != c.ref.SHA256 {
			return n, fmt.Errorf("%w: segment %s in the archive store has SHA-256 %s, its index entry says %s", ErrDamaged, c.ref.Key, got, c.ref.SHA256)
		}
	}
	return n, err
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// segmentReuser is a sink that can take a segment from an earlier backup
// instead of the archive store (StoreSink with Prev).
type segmentReuser interface {
	Reuse(ctx context.Context, f File) (bool, error)
}

// StoreSink writes a backup into a store under its ID.
type StoreSink struct {
	Store Store
	// Prev, when set, is an earlier complete backup in the same store:
	// a segment it holds with the same name, size and SHA-256 is copied
	// inside the store (a hard link in a directory, a server-side copy
	// on S3) instead of being read from the archive store again.
	// Segments are immutable, so between backups most are the same; each
	// backup still holds all of its files and stands alone.
	Prev   *Manifest
	Reused int // segments taken from Prev
	id     string
}

// storeCopier is a store that copies a file inside itself.
type storeCopier interface {
	CopyFile(ctx context.Context, from, to string) error
}

func (s *StoreSink) Reuse(ctx context.Context, f File) (bool, error) {
	c, ok := s.Store.(storeCopier)
	if s.Prev == nil || !ok {
		return false, nil
	}
	if !slices.Contains(s.Prev.Files, f) {
		return false, nil
	}
	// A directory store's copy may have been damaged since it was
	// written (a bad block, a file changed by hand), and a hard link
	// would carry the damage into this backup, which restore would then
	// refuse: read it first, and take a copy that no longer matches from
	// the archive store. (An S3 store checks its objects itself, and
	// reading one back would cost what reading the archive store does.)
	if _, local := s.Store.(*DirStore); local && !s.prevIntact(ctx, f) {
		return false, nil
	}
	if err := c.CopyFile(ctx, s.Prev.ID+"/"+f.Name, s.id+"/"+f.Name); err != nil {
		return false, nil // gone since (pruned): read it from the archive
	}
	s.Reused++
	return true, nil
}

// prevIntact reports whether Prev's copy of f has f's size and SHA-256.
func (s *StoreSink) prevIntact(ctx context.Context, f File) bool {
	rc, err := s.Store.Open(ctx, s.Prev.ID+"/"+f.Name)
	if err != nil {
		return false
	}
	defer rc.Close()
	_, err = io.Copy(io.Discard, checked(ctxReader{ctx, rc}, f, s.Prev.ID))
	return err == nil
}

func (s *StoreSink) Begin(id string) error { s.id = id; return nil }

func (s *StoreSink) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	return s.Store.Put(ctx, s.id+"/"+name, r, size)
}

// The tar stream of GET /admin/backup: the files in the order Write puts
// them, then manifest.json. A failure after the stream began is sent as
// a last entry named "error" holding the message (HTTP cannot change the
// status any more); a stream without the manifest is incomplete.
const tarError = "error"

// TarSink writes a backup as a tar stream; begin is called with the ID
// before the first byte (the handler sets its headers there).
type TarSink struct {
	W     *tar.Writer
	OnID  func(id string)
	Clock func() time.Time
}

func (t *TarSink) Begin(id string) error {
	if t.OnID != nil {
		t.OnID(id)
	}
	return nil
}

func (t *TarSink) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	now := time.Now
	if t.Clock != nil {
		now = t.Clock
	}
	if err := t.W.WriteHeader(&tar.Header{Name: name, Size: size, Mode: 0o600, ModTime: now(), Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
		return fmt.Errorf("backup: tar: %w", err)
	}
	n, err := io.Copy(t.W, ctxReader{ctx, io.LimitReader(r, size)})
	if err != nil {
		return fmt.Errorf("backup: %s: %w", name, err)
	}
	if n != size {
		return fmt.Errorf("backup: %s: got %d bytes, want %d", name, n, size)
	}
	// The source must end here too (a longer one is a changed file).
	var one [1]byte
	switch k, err := io.ReadFull(r, one[:]); {
	case k > 0:
		return fmt.Errorf("backup: %s: longer than %d bytes", name, size)
	case err != nil && !errors.Is(err, io.EOF):
		return fmt.Errorf("backup: %s: %w", name, err)
	}
	return nil
}

// WriteTarError ends a failed stream with the error entry.
func WriteTarError(tw *tar.Writer, err error) {
	msg := err.Error()
	if tw.WriteHeader(&tar.Header{Name: tarError, Size: int64(len(msg)), Mode: 0o600, Typeflag: tar.TypeReg}) == nil {
		_, _ = io.WriteString(tw, msg)
	}
	_ = tw.Close()
}

// ErrRemote is a failure the node reported inside the backup stream.
var ErrRemote = errors.New("backup: the node failed the backup")

// Receive copies a tar stream from GET /admin/backup into a store under
// id, hashing every file itself, and writes the manifest last, after
// checking that the node's manifest lists exactly the files received
// with the sizes and digests computed here. It returns that manifest.
func Receive(ctx context.Context, r io.Reader, id string, st Store) (*Manifest, error) {
	if err := ValidID(id); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	tr := tar.NewReader(r)
	var got []File
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("backup: the stream ended before the manifest: %w", io.ErrUnexpectedEOF)
		}
		if err != nil {
			return nil, fmt.Errorf("backup: reading the stream: %w", err)
		}
		switch {
		case hdr.Name == tarError:
			b, _ := io.ReadAll(io.LimitReader(tr, 64<<10))
			return nil, fmt.Errorf("%w: %s", ErrRemote, b)
		case hdr.Name == ManifestName:
			b, err := io.ReadAll(io.LimitReader(tr, maxManifestBytes+1))
			if err != nil {
				return nil, fmt.Errorf("backup: reading the manifest: %w", err)
			}
			m, err := ParseManifest(b)
			if err != nil {
				return nil, err
			}
			if m.ID != id || !slices.Equal(m.Files, got) {
				return nil, fmt.Errorf("%w: the node's manifest does not match the files received", ErrDamaged)
			}
			if err := st.Put(ctx, id+"/"+ManifestName, strings.NewReader(string(b)), int64(len(b))); err != nil {
				return nil, err
			}
			return m, nil
		case hdr.Name != StateName && !strings.HasPrefix(hdr.Name, SegmentDir), hdr.Typeflag != tar.TypeReg, hdr.Size < 0:
			return nil, fmt.Errorf("backup: unexpected entry %q in the stream", hdr.Name)
		}
		if hdr.Name != StateName {
			if err := ValidKey(strings.TrimPrefix(hdr.Name, SegmentDir)); err != nil {
				return nil, fmt.Errorf("backup: stream entry %q: %w", hdr.Name, err)
			}
		}
		h := sha256.New()
		if err := st.Put(ctx, id+"/"+hdr.Name, io.TeeReader(tr, h), hdr.Size); err != nil {
			return nil, err
		}
		got = append(got, File{Name: hdr.Name, Size: hdr.Size, SHA256: hex.EncodeToString(h.Sum(nil))})
	}
}
