package store

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Local keeps objects as files under dir/{raw,processed,cold}/KEY.
//
// Each file holds a small header and then the object's bytes (see
// localHeader), so that data, size, ETag and content type are replaced by
// one rename and can never disagree after a crash, which a data file plus
// a sidecar file (two renames) could.
type Local struct {
	root string
}

var _ Store = (*Local)(nil)

// NewLocal opens (creating when missing) a local store of the media
// tiers rooted at dir.
func NewLocal(dir string) (*Local, error) { return NewLocalTiers(dir, AllTiers()...) }

// NewLocalTiers opens a local store rooted at dir, creating the
// directories of tiers (another tier's is created by its first Put).
func NewLocalTiers(dir string, tiers ...Tier) (*Local, error) {
	if dir == "" {
		return nil, errors.New("store: local: empty directory")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("store: local %s: %w", dir, err)
	}
	for _, t := range tiers {
		if err := os.MkdirAll(filepath.Join(abs, string(t)), 0o755); err != nil {
			return nil, fmt.Errorf("store: local: create tier %s: %w", t, err)
		}
	}
	return &Local{root: abs}, nil
}

// RemoveTemps deletes the temporary files of Puts that never finished
// (a process killed while an upload streamed in, or while a job stored
// its outputs) from every tier, and returns how many it deleted. Nothing
// else names them: call it only while nothing Puts into the store (a
// node at start, holding its data directory).
func (l *Local) RemoveTemps() (int, error) {
	n := 0
	ents, err := os.ReadDir(l.root)
	if err != nil {
		return 0, fmt.Errorf("store: local: %w", err)
	}
	for _, tier := range ents {
		if !tier.IsDir() {
			continue
		}
		err := filepath.WalkDir(filepath.Join(l.root, tier.Name()), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.Type().IsRegular() && strings.HasPrefix(d.Name(), localTempPrefix) {
				if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return err
				}
				n++
			}
			return nil
		})
		if err != nil {
			return n, fmt.Errorf("store: local: removing temporary files: %w", err)
		}
	}
	return n, nil
}

// Dir returns the directory of tier (operators and tests).
func (l *Local) Dir(tier Tier) string { return filepath.Join(l.root, string(tier)) }

func (l *Local) path(tier Tier, key string) string {
	return filepath.Join(l.root, string(tier), filepath.FromSlash(key))
}

// The header in front of every object's bytes, all integers big-endian:
//
//	0  magic "ECMEDIA1"
//	8  uint32 header length (where the object's bytes start)
//	12 uint64 object size
//	20 32 bytes ETag: hex of the first 16 bytes of the SHA-256 of the bytes
//	52 uint16 content type length, then the content type
//
// The ETag is a strong hash computed while the bytes stream in; it and the
// size are written into their slots before the fsync and rename.
const (
	localMagic      = "ECMEDIA1"
	localFixedLen   = 54
	localETagLen    = 32
	maxContentType  = 255
	defaultCType    = "application/octet-stream"
	localTempPrefix = ".tmp-"
	copyBufSize     = 32 << 10
)

type localHeader struct {
	hdrLen      int64
	size        int64
	etag        string
	contentType string
}

func encodeHeader(contentType string, size int64, etag string) []byte {
	b := make([]byte, localFixedLen+len(contentType))
	copy(b, localMagic)
	binary.BigEndian.PutUint32(b[8:], uint32(len(b)))
	binary.BigEndian.PutUint64(b[12:], uint64(size))
	copy(b[20:52], etag)
	binary.BigEndian.PutUint16(b[52:], uint16(len(contentType)))
	copy(b[localFixedLen:], contentType)
	return b
}

func readHeader(f *os.File) (localHeader, error) {
	var fixed [localFixedLen]byte
	if _, err := io.ReadFull(io.NewSectionReader(f, 0, localFixedLen), fixed[:]); err != nil {
		return localHeader{}, fmt.Errorf("store: local %s: read header: %w", f.Name(), err)
	}
	if string(fixed[:8]) != localMagic {
		return localHeader{}, fmt.Errorf("store: local %s: not an object file (bad magic)", f.Name())
	}
	h := localHeader{
		hdrLen: int64(binary.BigEndian.Uint32(fixed[8:])),
		size:   int64(binary.BigEndian.Uint64(fixed[12:])),
		etag:   string(fixed[20:52]),
	}
	ctLen := int64(binary.BigEndian.Uint16(fixed[52:]))
	if h.hdrLen != localFixedLen+ctLen || h.size < 0 {
		return localHeader{}, fmt.Errorf("store: local %s: corrupt header", f.Name())
	}
	ct := make([]byte, ctLen)
	if _, err := io.ReadFull(io.NewSectionReader(f, localFixedLen, ctLen), ct); err != nil {
		return localHeader{}, fmt.Errorf("store: local %s: read content type: %w", f.Name(), err)
	}
	h.contentType = string(ct)
	return h, nil
}

// openObject opens key's file and reads its header; a missing file (or a
// missing directory on the way) is ErrNotFound.
func (l *Local) openObject(tier Tier, key string) (*os.File, Object, localHeader, error) {
	f, err := os.Open(l.path(tier, key))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return nil, Object{}, localHeader{}, fmt.Errorf("%w: %s %s", ErrNotFound, tier, key)
		}
		return nil, Object{}, localHeader{}, fmt.Errorf("store: local: open %s %s: %w", tier, key, err)
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%w: %s %s is a directory", ErrNotFound, tier, key)
	}
	var h localHeader
	if err == nil {
		h, err = readHeader(f)
	}
	if err == nil && fi.Size() != h.hdrLen+h.size {
		err = fmt.Errorf("store: local %s: size %d in the header, %d in the file", f.Name(), h.size, fi.Size()-h.hdrLen)
	}
	if err != nil {
		f.Close()
		return nil, Object{}, localHeader{}, err
	}
	return f, Object{Key: key, Size: h.size, ContentType: h.contentType, ETag: h.etag, ModTime: fi.ModTime()}, h, nil
}

// ctxReader fails reads once ctx is done, so that a Put of a slow or
// endless reader stops with its context.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Put writes r to a temporary file in the key's directory, fsyncs it and
// renames it over the key, so readers see the old or the new object, never
// a part.
func (l *Local) Put(ctx context.Context, tier Tier, key string, r io.Reader, size int64, contentType string) (Object, error) {
	if err := checkTierKey(tier, key); err != nil {
		return Object{}, err
	}
	if size < -1 {
		return Object{}, fmt.Errorf("store: local put %s %s: negative size %d", tier, key, size)
	}
	if contentType == "" {
		contentType = defaultCType
	}
	if len(contentType) > maxContentType {
		return Object{}, fmt.Errorf("store: local put %s %s: content type longer than %d bytes", tier, key, maxContentType)
	}
	dst := l.path(tier, key)
	f, err := createTemp(filepath.Dir(dst))
	if err != nil {
		return Object{}, fmt.Errorf("store: local put %s %s: %w", tier, key, err)
	}
	tmp := f.Name()
	obj, err := writeObject(ctx, f, r, size, contentType)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err == nil {
		err = syncDir(filepath.Dir(dst))
	}
	if err != nil {
		os.Remove(tmp)
		return Object{}, fmt.Errorf("store: local put %s %s: %w", tier, key, err)
	}
	obj.Key = key
	return obj, nil
}

// writeObject streams r into f behind a header and fills in the size and
// ETag slots at the end. It holds one copy buffer, never the object.
func writeObject(ctx context.Context, f *os.File, r io.Reader, size int64, contentType string) (Object, error) {
	hdr := encodeHeader(contentType, 0, strings.Repeat("0", localETagLen))
	if _, err := f.Write(hdr); err != nil {
		return Object{}, err
	}
	h := sha256.New()
	src := io.Reader(ctxReader{ctx, r})
	if size >= 0 {
		// One byte more than announced tells a too-long reader apart.
		src = io.LimitReader(src, size+1)
	}
	n, err := io.CopyBuffer(io.MultiWriter(f, h), src, make([]byte, copyBufSize))
	if err != nil {
		return Object{}, fmt.Errorf("read object: %w", err)
	}
	if size >= 0 && n != size {
		return Object{}, fmt.Errorf("announced %d bytes, the reader gave %s", size, lenWord(n, size))
	}
	etag := etagOf(h)
	var slots [8 + localETagLen]byte
	binary.BigEndian.PutUint64(slots[:8], uint64(n))
	copy(slots[8:], etag)
	if _, err := f.WriteAt(slots[:], 12); err != nil {
		return Object{}, err
	}
	if err := f.Sync(); err != nil {
		return Object{}, err
	}
	fi, err := f.Stat()
	if err != nil {
		return Object{}, err
	}
	return Object{Size: n, ContentType: contentType, ETag: etag, ModTime: fi.ModTime()}, nil
}

func lenWord(n, size int64) string {
	if n > size {
		return "more"
	}
	return fmt.Sprint(n)
}

func etagOf(h hash.Hash) string {
	return hex.EncodeToString(h.Sum(nil)[:localETagLen/2])
}

// createTemp creates a temporary file in dir, creating dir first. A
// concurrent Delete may remove the (then empty) directory between the two
// steps, hence the retries.
func createTemp(dir string) (*os.File, error) {
	for attempt := 0; ; attempt++ {
		if err := mkdirAll(dir); err != nil {
			return nil, err
		}
		f, err := os.CreateTemp(dir, localTempPrefix+"*")
		if err == nil || !errors.Is(err, fs.ErrNotExist) || attempt == 3 {
			return f, err
		}
	}
}

func mkdirAll(dir string) error {
	err := os.MkdirAll(dir, 0o755)
	if errors.Is(err, syscall.ENOTDIR) || errors.Is(err, fs.ErrExist) {
		// Locally a key cannot be both an object and a "directory" of
		// other keys ("a" and "a/b"), unlike on S3.
		return fmt.Errorf("a prefix of the key is an object: %w", err)
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// removeEmptyParents removes the directories of path that became empty,
// up to (not including) the tier's directory, so that deleted keys leave
// no directory litter. A directory that is not empty stops it.
func (l *Local) removeEmptyParents(tier Tier, path string) {
	top := l.Dir(tier)
	for dir := filepath.Dir(path); len(dir) > len(top) && strings.HasPrefix(dir, top); dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil {
			return
		}
	}
}

type sectionCloser struct {
	*io.SectionReader
	f *os.File
}

func (s sectionCloser) Close() error { return s.f.Close() }

// Get reads through a SectionReader over the open file: a concurrent Put
// or Move does not disturb it (the old file stays readable until closed).
func (l *Local) Get(ctx context.Context, tier Tier, key string, offset, length int64) (io.ReadCloser, Object, error) {
	if err := checkTierKey(tier, key); err != nil {
		return nil, Object{}, err
	}
	if err := checkRange(offset, length, -1); err != nil {
		return nil, Object{}, err
	}
	if err := ctx.Err(); err != nil {
		return nil, Object{}, err
	}
	f, obj, h, err := l.openObject(tier, key)
	if err != nil {
		return nil, Object{}, err
	}
	if err := checkRange(offset, length, obj.Size); err != nil {
		f.Close()
		return nil, Object{}, fmt.Errorf("store: local get %s %s: %w", tier, key, err)
	}
	n := obj.Size - offset
	if length >= 0 && length < n {
		n = length
	}
	return sectionCloser{io.NewSectionReader(f, h.hdrLen+offset, n), f}, obj, nil
}

func (l *Local) Stat(ctx context.Context, tier Tier, key string) (Object, error) {
	if err := checkTierKey(tier, key); err != nil {
		return Object{}, err
	}
	if err := ctx.Err(); err != nil {
		return Object{}, err
	}
	f, obj, _, err := l.openObject(tier, key)
	if err != nil {
		return Object{}, err
	}
	f.Close()
	return obj, nil
}

func (l *Local) Delete(ctx context.Context, tier Tier, key string) error {
	if err := checkTierKey(tier, key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	p := l.path(tier, key)
	fi, err := os.Lstat(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return nil
		}
		return fmt.Errorf("store: local delete %s %s: %w", tier, key, err)
	}
	if fi.IsDir() {
		return nil // a key prefix, not an object
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("store: local delete %s %s: %w", tier, key, err)
	}
	l.removeEmptyParents(tier, p)
	return nil
}

// Move renames the file into the other tier's directory, which keeps its
// modification time. When the tiers sit on different filesystems (cold
// mounted on a cheaper disk) it copies, fsyncs, renames and deletes
// instead.
func (l *Local) Move(ctx context.Context, from, to Tier, key string) error {
	if err := checkTierKey(from, key); err != nil {
		return err
	}
	if err := checkTierKey(to, key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	src, dst := l.path(from, key), l.path(to, key)
	fi, err := os.Lstat(src)
	if err != nil || !fi.Mode().IsRegular() {
		if err == nil || errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return fmt.Errorf("%w: %s %s", ErrNotFound, from, key)
		}
		return fmt.Errorf("store: local move %s %s: %w", from, key, err)
	}
	if from == to {
		return nil
	}
	for attempt := 0; ; attempt++ {
		if err = mkdirAll(filepath.Dir(dst)); err == nil {
			err = os.Rename(src, dst)
		}
		if errors.Is(err, syscall.EXDEV) {
			err = copyAcross(ctx, src, dst)
			if err == nil {
				err = os.Remove(src)
			}
		}
		if err == nil || attempt == 3 || !errors.Is(err, fs.ErrNotExist) {
			break
		}
		// The source went away (a concurrent Move or Delete), or a
		// concurrent Delete removed the empty destination directory.
		if _, serr := os.Lstat(src); errors.Is(serr, fs.ErrNotExist) {
			return fmt.Errorf("%w: %s %s", ErrNotFound, from, key)
		}
	}
	if err == nil {
		err = syncDir(filepath.Dir(dst))
	}
	if err == nil {
		err = syncDir(filepath.Dir(src))
	}
	if err != nil {
		return fmt.Errorf("store: local move %s %s to %s: %w", from, key, to, err)
	}
	l.removeEmptyParents(from, src)
	return nil
}

// copyAcross copies src to dst atomically (temp, fsync, rename), keeping
// the modification time as a rename would.
func copyAcross(ctx context.Context, src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := createTemp(filepath.Dir(dst))
	if err != nil {
		return err
	}
	_, err = io.CopyBuffer(out, ctxReader{ctx, in}, make([]byte, copyBufSize))
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chtimes(out.Name(), time.Time{}, fi.ModTime())
	}
	if err == nil {
		err = os.Rename(out.Name(), dst)
	}
	if err != nil {
		os.Remove(out.Name())
	}
	return err
}

// validPrefix accepts what a key may start with.
func validPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	// Any key starting with prefix must be valid, so prefix+"x" is valid
	// when some key can start with it (a trailing '/' included).
	if err := ValidKey(prefix + "x"); err != nil {
		return fmt.Errorf("prefix %q: %w", prefix, err)
	}
	return nil
}

// List walks only the directory the prefix points into, skipping
// directories no matching key can be in, and reads each file's header.
func (l *Local) List(ctx context.Context, tier Tier, prefix string, fn func(Object) bool) error {
	if !tier.valid() {
		return fmt.Errorf("store: unknown tier %q", tier)
	}
	if err := validPrefix(prefix); err != nil {
		return err
	}
	top := l.Dir(tier)
	base := top
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		base = filepath.Join(top, filepath.FromSlash(prefix[:i]))
	}
	stop := errors.New("stop")
	err := filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
				return nil // the prefix's directory, or one being removed
			}
			return err
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if p == base {
			return nil
		}
		if strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil // temporary files of Puts in progress
		}
		rel, err := filepath.Rel(top, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if d.IsDir() {
			if !strings.HasPrefix(key+"/", prefix) && !strings.HasPrefix(prefix, key+"/") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasPrefix(key, prefix) || ValidKey(key) != nil {
			return nil
		}
		f, obj, _, err := l.openObject(tier, key)
		if errors.Is(err, ErrNotFound) {
			return nil // deleted or moved since the directory was read
		}
		if err != nil {
			return err
		}
		f.Close()
		if !fn(obj) {
			return stop
		}
		return nil
	})
	if err != nil && err != stop {
		return fmt.Errorf("store: local list %s %q: %w", tier, prefix, err)
	}
	return nil
}

// Close releases nothing: Local holds no open files between calls.
func (l *Local) Close() error { return nil }
