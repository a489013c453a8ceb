package archive

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/klauspost/compress/zstd"

	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/services/archive/segment"
	"github.com/edgechat/edgechat/services/media/store"
)

// sealedError says that a message is not hot: its body is in a sealed
// segment of conversation Conv. Readers meet it inside a Badger
// transaction and read the segment after it (no object-store I/O holds
// a transaction open).
type sealedError struct {
	Conv string
	ID   snowflake.ID
}

func (e *sealedError) Error() string {
	return "archive: message " + strconv.FormatUint(uint64(e.ID), 10) + " of " + e.Conv + " is sealed"
}

// tierReader reads sealed messages: segment indexes (trailer and block
// index) of recently read segments, and decoded blocks in a byte-bounded
// LRU, so paging back through a conversation fetches each block once.
type tierReader struct {
	store  SegmentStore
	blocks *segment.Cache

	mu      sync.Mutex
	readers map[string]*segment.Reader // by object key; dropped whole when full (they are small and cheap to reopen)

	decoders sync.Pool // *zstd.Decoder

	fetch func(ctx context.Context, key string) (io.ReadCloser, error) // from a peer; nil: none
	log   *slog.Logger

	// unrefSince: when collectOrphans first saw each object unreferenced
	// (see there). In memory: a restart only delays deletions.
	orphanMu   sync.Mutex
	unrefSince map[string]time.Time
}

// defaultSegmentCacheBytes bounds the decoded blocks a node keeps.
const defaultSegmentCacheBytes = 32 << 20

// maxOpenSegments bounds the segment indexes a node keeps open.
const maxOpenSegments = 1024

func newTierReader(st SegmentStore, cacheBytes int64) *tierReader {
	return &tierReader{store: st, blocks: segment.NewCache(cacheBytes), readers: map[string]*segment.Reader{}}
}

// open returns the reader of ref's object, checking its trailer and index.
func (t *tierReader) open(ctx context.Context, ref SegmentRef) (*segment.Reader, error) {
	t.mu.Lock()
	r, ok := t.readers[ref.Key]
	t.mu.Unlock()
	if ok {
		return r, nil
	}
	// A cached reader serves later requests too: block reads go through
	// the context of the request that makes them (see block).
	rr := t.rangeReader(ctx, ref)
	r, err := segment.Open(rr, ref.Size)
	if errors.Is(err, ErrSegmentMissing) && t.fetch != nil && !t.store.Shared() {
		if ferr := t.fetchFromPeer(ctx, ref); ferr != nil {
			return nil, t.wrap(ref, fmt.Errorf("%w (and from the other nodes: %w)", err, ferr))
		}
		r, err = segment.Open(rr, ref.Size)
	}
	if err != nil {
		return nil, t.wrap(ref, t.cut(ctx, ref, err))
	}
	if r.Count != ref.Count || snowflake.ID(r.FirstID()) != ref.FirstID || snowflake.ID(r.LastID()) != ref.LastID || r.Conversation != ref.Conv {
		return nil, fmt.Errorf("%w: %s does not hold what its index entry says", ErrSegmentCorrupt, ref.Key)
	}
	t.mu.Lock()
	if len(t.readers) >= maxOpenSegments {
		clear(t.readers)
	}
	t.readers[ref.Key] = r
	t.mu.Unlock()
	return r, nil
}

// fetchFromPeer copies ref's object from another node into the local
// store, checking its size and SHA-256 against the index entry.
func (t *tierReader) fetchFromPeer(ctx context.Context, ref SegmentRef) error {
	rc, err := t.fetch(ctx, ref.Key)
	if err != nil {
		return err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, ref.Size+1))
	if err != nil {
		return err
	}
	if int64(len(data)) != ref.Size || sha256.Sum256(data) != ref.SHA256 {
		return fmt.Errorf("%w: %s from a peer: %d bytes that do not match the index entry", ErrSegmentCorrupt, ref.Key, len(data))
	}
	if err := t.store.Put(ctx, ref.Key, data); err != nil {
		return err
	}
	if t.log != nil {
		t.log.Info("segment copied from a peer", "key", ref.Key, "bytes", len(data))
	}
	return nil
}

func (t *tierReader) wrap(ref SegmentRef, err error) error {
	switch {
	case errors.Is(err, ErrSegmentMissing):
		return fmt.Errorf("archive: sealed segment %s: %w", ref.Key, err)
	case errors.Is(err, ErrSegmentCorrupt):
		return err
	case errors.Is(err, segment.ErrCorrupt), errors.Is(err, segment.ErrVersion):
		return fmt.Errorf("%w: %s: %w", ErrSegmentCorrupt, ref.Key, err)
	}
	return fmt.Errorf("%w: sealed segment %s: %w", ErrSegmentUnavailable, ref.Key, err)
}

// segmentGetTimeout bounds each ranged GET of a segment: a store that
// does not answer fails the read (503, tried again) rather than hold it
// for as long as the S3 client retries (minutes). A variable for tests.
var segmentGetTimeout = 10 * time.Second

// rangeReader reads ref's object with ranged GETs, each bounded by ctx
// and segmentGetTimeout.
func (t *tierReader) rangeReader(ctx context.Context, ref SegmentRef) *segment.RangeReader {
	return segment.NewRangeReader(ctx, func(ctx context.Context, off, n int64) (io.ReadCloser, error) {
		ctx, cancel := context.WithTimeout(ctx, segmentGetTimeout)
		rc, err := t.store.Get(ctx, ref.Key, off, n)
		if err != nil {
			cancel()
			return nil, err
		}
		return cancelOnClose{rc, cancel}, nil
	})
}

// cancelOnClose ends a GET's context once its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// cut tells a read that came back short (a range past the object's end,
// a body shorter than asked) from a store that failed: the object is
// damaged when its size is not what the index entry says; else err
// stands (a connection cut mid-body is not a damaged segment).
func (t *tierReader) cut(ctx context.Context, ref SegmentRef, err error) error {
	if !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, store.ErrInvalidRange) {
		return err
	}
	size, serr := t.store.Size(ctx, ref.Key)
	switch {
	case serr != nil:
		return fmt.Errorf("%w (and its size: %w)", err, serr)
	case size != ref.Size:
		return fmt.Errorf("%w: %s holds %d bytes, its index entry says %d: %w", ErrSegmentCorrupt, ref.Key, size, ref.Size, err)
	}
	return err
}

// block returns block i of ref's segment, decoded (shared: not to be
// modified). It reads through ctx, whichever request opened r.
func (t *tierReader) block(ctx context.Context, ref SegmentRef, r *segment.Reader, i int) ([]segment.Message, error) {
	if msgs, ok := t.blocks.Get(ref.Key, i); ok {
		return msgs, nil
	}
	r = r.Using(t.rangeReader(ctx, ref))
	dec, _ := t.decoders.Get().(*zstd.Decoder)
	if dec == nil {
		var err error
		if dec, err = segment.NewDecoder(); err != nil {
			return nil, err
		}
	}
	msgs, err := r.ReadBlock(i, dec)
	t.decoders.Put(dec)
	if err != nil {
		t.forget(ref.Key) // a damaged or replaced object: reopen next time
		return nil, t.wrap(ref, t.cut(ctx, ref, err))
	}
	t.blocks.Add(ref.Key, i, msgs)
	return msgs, nil
}

func (t *tierReader) forget(key string) {
	t.mu.Lock()
	delete(t.readers, key)
	t.mu.Unlock()
	t.blocks.Forget(key)
}

// message reads message id from ref's segment (a fresh copy).
func (t *tierReader) message(ctx context.Context, ref SegmentRef, id snowflake.ID) ([]byte, error) {
	r, err := t.open(ctx, ref)
	if err != nil {
		return nil, err
	}
	bi := r.BlockFor(uint64(id))
	if bi < len(r.Blocks) {
		msgs, err := t.block(ctx, ref, r, bi)
		if err != nil {
			return nil, err
		}
		if j := sort.Search(len(msgs), func(j int) bool { return msgs[j].ID >= uint64(id) }); j < len(msgs) && msgs[j].ID == uint64(id) {
			return expandSealed(ref.Conv, id, msgs[j].Body)
		}
	}
	return nil, fmt.Errorf("%w: message %d is not in %s", ErrSegmentCorrupt, id, ref.Key)
}

// below appends to out the messages of ref's segment with IDs below
// before, newest first, until out holds n; more tells whether the
// segment has more below the last one appended. The bodies are as the
// segment holds them (compact: see expandSealed).
func (t *tierReader) below(ctx context.Context, ref SegmentRef, before snowflake.ID, n int, out []idBody) (_ []idBody, more bool, err error) {
	r, err := t.open(ctx, ref)
	if err != nil {
		return out, false, err
	}
	bi := min(r.BlockFor(uint64(before)), len(r.Blocks)-1)
	for ; bi >= 0; bi-- {
		msgs, err := t.block(ctx, ref, r, bi)
		if err != nil {
			return out, false, err
		}
		for j := len(msgs) - 1; j >= 0; j-- {
			if msgs[j].ID >= uint64(before) {
				continue
			}
			if len(out) == n {
				return out, true, nil
			}
			out = append(out, idBody{ID: snowflake.ID(msgs[j].ID), Body: append([]byte(nil), msgs[j].Body...)})
		}
	}
	return out, false, nil
}

// idBody is a message of a history page.
type idBody struct {
	ID   snowflake.ID
	Body []byte
}

// findSealed is the segment of conv whose range holds id.
func findSealed(tx *badger.Txn, conv string, id snowflake.ID) (SegmentRef, bool, error) {
	prefix := segIndexPrefix(conv)
	it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
	defer it.Close()
	it.Seek(withID(prefix, uint64(id)))
	if !it.ValidForPrefix(prefix) {
		return SegmentRef{}, false, nil
	}
	ref, err := segRefOf(it.Item())
	if err != nil {
		return SegmentRef{}, false, err
	}
	return ref, ref.FirstID <= id, nil
}

func segRefOf(item *badger.Item) (SegmentRef, error) {
	var ref SegmentRef
	var ok bool
	err := item.Value(func(v []byte) error {
		ref, ok = decodeSegIndex(item.Key(), v)
		return nil
	})
	if err == nil && !ok {
		err = fmt.Errorf("%w: segment index entry %q", ErrBadCommand, item.Key())
	}
	return ref, err
}

// sealedBelow lists the segments of conv holding messages below before,
// newest first, at most n of them.
func sealedBelow(tx *badger.Txn, conv string, before snowflake.ID, n int) ([]SegmentRef, error) {
	if before == 0 {
		return nil, nil
	}
	prefix := segIndexPrefix(conv)
	var out []SegmentRef
	// The segment that spans before (its last ID is at or above it).
	ref, found, err := findSealed(tx, conv, before)
	if err != nil {
		return nil, err
	}
	if found && ref.FirstID < before {
		out = append(out, ref)
	}
	it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix, Reverse: true})
	defer it.Close()
	for it.Seek(withID(prefix, uint64(before)-1)); it.ValidForPrefix(prefix) && len(out) < n; it.Next() {
		ref, err := segRefOf(it.Item())
		if err != nil {
			return nil, err
		}
		out = append(out, ref)
	}
	return out, nil
}

// sealedMessage reads message id of conv from its segment.
func (s *Service) sealedMessage(ctx context.Context, conv string, id snowflake.ID) ([]byte, error) {
	var ref SegmentRef
	var found bool
	if err := s.db.View(func(tx *badger.Txn) error {
		var err error
		ref, found, err = findSealed(tx, conv, id)
		return err
	}); err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("archive: message %d of %s: %w", id, conv, badger.ErrKeyNotFound)
	}
	if s.tier == nil {
		return nil, fmt.Errorf("archive: message %d of %s: %w", id, conv, ErrNoSegments)
	}
	return s.tier.message(ctx, ref, id)
}

// resolve turns a read's sealedError into the message read from its
// segment; other errors pass through.
func (s *Service) resolve(ctx context.Context, body []byte, err error) ([]byte, error) {
	var se *sealedError
	if errors.As(err, &se) {
		return s.sealedMessage(ctx, se.Conv, se.ID)
	}
	return body, err
}

// segmentByKey finds the index entry of an object key
// ({d/a/b|g/gid}/{first}-{last}.seg).
func (s *Service) segmentByKey(key string) (SegmentRef, bool, error) {
	conv, last, ok := parseSegmentKey(key)
	if !ok {
		return SegmentRef{}, false, nil
	}
	var ref SegmentRef
	var found bool
	err := s.db.View(func(tx *badger.Txn) error {
		item, err := tx.Get(segIndexKey(conv, last))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		ref, err = segRefOf(item)
		found = err == nil && ref.Key == key
		return err
	})
	return ref, found, err
}

// parseSegmentKey is the conversation and last ID an object key names
// (the inverse of SegmentObjectKey, which it must give back exactly).
func parseSegmentKey(key string) (conv string, last snowflake.ID, ok bool) {
	i := strings.LastIndexByte(key, '/')
	if i < 0 {
		return "", 0, false
	}
	dir, name := key[:i], key[i+1:]
	kind, rest, found := strings.Cut(dir, "/")
	if !found {
		return "", 0, false
	}
	// Rejoin "name/_region" elements into "name@region".
	var ids []string
	for _, el := range strings.Split(rest, "/") {
		if r, isRegion := strings.CutPrefix(el, "_"); isRegion && len(ids) > 0 && (kind == "d" || len(ids) == 1) && !strings.Contains(ids[len(ids)-1], "@") {
			ids[len(ids)-1] += "@" + r
			continue
		}
		ids = append(ids, el)
	}
	switch {
	case kind == "d" && len(ids) == 2:
		conv = "d:" + ids[0] + ":" + ids[1]
	case kind == "g" && len(ids) == 1:
		conv = "g:" + ids[0]
	default:
		return "", 0, false
	}
	name, ok = strings.CutSuffix(name, ".seg")
	firstS, lastS, ok2 := strings.Cut(name, "-")
	f, err1 := strconv.ParseUint(firstS, 10, 64)
	n, err2 := strconv.ParseUint(lastS, 10, 64)
	if !ok || !ok2 || err1 != nil || err2 != nil {
		return "", 0, false
	}
	if want, err := SegmentObjectKey(conv, snowflake.ID(f), snowflake.ID(n)); err != nil || want != key {
		return "", 0, false
	}
	return conv, snowflake.ID(n), true
}

// OpenSegment reads the whole object of a segment the index references,
// for backups. With a store of its own (not shared), a node that installed
// a snapshot lacks the objects sealed before: it copies one from a peer
// as history reads do, checked against the index entry, and keeps it.
func (s *Service) OpenSegment(ctx context.Context, key string) (io.ReadCloser, error) {
	if s.tier == nil {
		return nil, ErrNoSegments
	}
	t := s.tier
	rc, err := t.store.Get(ctx, key, 0, -1)
	if !errors.Is(err, ErrSegmentMissing) || t.fetch == nil || t.store.Shared() {
		return rc, err
	}
	ref, found, ierr := s.segmentByKey(key)
	if ierr != nil || !found {
		return nil, err // not indexed (any more): no peer serves it either
	}
	if ferr := t.fetchFromPeer(ctx, ref); ferr != nil {
		return nil, fmt.Errorf("%w (and from the other nodes: %w)", err, ferr)
	}
	return t.store.Get(ctx, key, 0, -1)
}
