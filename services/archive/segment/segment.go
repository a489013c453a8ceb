// Package segment is the file format of a sealed archive segment: the
// messages of one conversation over an ID range, immutable once written,
// kept on object storage (issue 11: tiering the archive). A segment is
// read with range reads: its index sits at the end, so a reader fetches
// the trailer and the index, then only the block that holds the page it
// wants.
//
// Layout (all integers big-endian unless they are uvarints):
//
//	header   "ECSG" version(1)
//	blocks   zstd frames; each holds records: id(8) uvarint(len) body
//	index    uvarint(len(conv)) conv uvarint(count) uvarint(blocks)
//	         then per block: firstID(8) lastID(8) uvarint(offset)
//	         uvarint(length) uvarint(count) uvarint(rawLength) crc32c(4)
//	trailer  indexOffset(8) indexLength(4) crc32c(index)(4) "ECSG"
//
// Messages are in ascending ID order, with no ID twice. Every block and
// the index carry a CRC-32C, so a damaged object is reported
// (ErrCorrupt), never served as messages; the whole object's SHA-256
// (Meta.SHA256) is what the sealer compares after reading an upload back.
package segment

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sort"

	"github.com/klauspost/compress/zstd"
)

const (
	magic   = "ECSG"
	version = 1

	headerLen  = len(magic) + 1
	trailerLen = 8 + 4 + 4 + len(magic)

	// DefaultBlockBytes is the uncompressed size a block is closed at: a
	// history page of 50 chat messages (~300 B each) falls in one or two.
	DefaultBlockBytes = 32 << 10
	// maxBlockBytes bounds what a reader inflates for one block, whatever
	// the index claims, so a damaged or hostile object cannot make it
	// allocate more.
	maxBlockBytes = 4 << 20
	// maxIndexBytes bounds the index a reader accepts.
	maxIndexBytes = 16 << 20
	// MaxBodyBytes bounds one message's stored envelope.
	MaxBodyBytes = 1 << 20
)

var (
	// ErrCorrupt is wrapped by every error about an object that is not a
	// well-formed segment (bad magic, checksum mismatch, truncation,
	// impossible lengths); test with errors.Is.
	ErrCorrupt = errors.New("segment: corrupt")
	// ErrVersion is wrapped when the object is a segment of a version this
	// code does not read.
	ErrVersion = errors.New("segment: unknown version")
	// ErrOrder is returned by Write for messages not in strictly
	// ascending ID order, or an empty or oversized body.
	ErrOrder = errors.New("segment: messages must have ascending unique IDs and bodies of 1 byte to 1 MiB")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Message is one stored message: its ID and its stored envelope.
type Message struct {
	ID   uint64
	Body []byte
}

// Block describes one compressed block of a segment.
type Block struct {
	FirstID, LastID uint64
	Offset, Length  int64 // of the compressed frame in the object
	Count           int
	RawLength       int // uncompressed bytes
	CRC             uint32
}

// Meta describes a written segment.
type Meta struct {
	Conversation    string
	FirstID, LastID uint64
	Count           int
	Size            int64
	SHA256          [sha256.Size]byte
}

// Write encodes msgs (ascending IDs) of conversation conv as a segment.
// blockBytes ≤ 0 means DefaultBlockBytes.
func Write(conv string, msgs []Message, blockBytes int) ([]byte, Meta, error) {
	if len(msgs) == 0 {
		return nil, Meta{}, fmt.Errorf("%w: no messages", ErrOrder)
	}
	if blockBytes <= 0 {
		blockBytes = DefaultBlockBytes
	}
	// A block closes once it reaches blockBytes, so it can hold up to one
	// more body: keep that within what a reader inflates.
	blockBytes = min(blockBytes, maxBlockBytes-MaxBodyBytes-32)
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBetterCompression), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, Meta{}, fmt.Errorf("segment: zstd: %w", err)
	}
	defer enc.Close()

	out := append(make([]byte, 0, 1024), magic...)
	out = append(out, version)
	var blocks []Block
	var raw []byte
	start := 0
	flush := func(end int) {
		frame := enc.EncodeAll(raw, nil)
		blocks = append(blocks, Block{
			FirstID: msgs[start].ID, LastID: msgs[end-1].ID,
			Offset: int64(len(out)), Length: int64(len(frame)),
			Count: end - start, RawLength: len(raw),
			CRC: crc32.Checksum(frame, castagnoli),
		})
		out = append(out, frame...)
		raw, start = raw[:0], end
	}
	for i, m := range msgs {
		if len(m.Body) == 0 || len(m.Body) > MaxBodyBytes || (i > 0 && m.ID <= msgs[i-1].ID) {
			return nil, Meta{}, fmt.Errorf("%w (message %d, id %d)", ErrOrder, i, m.ID)
		}
		raw = binary.BigEndian.AppendUint64(raw, m.ID)
		raw = binary.AppendUvarint(raw, uint64(len(m.Body)))
		raw = append(raw, m.Body...)
		if len(raw) >= blockBytes {
			flush(i + 1)
		}
	}
	if len(raw) > 0 {
		flush(len(msgs))
	}

	idxOff := len(out)
	out = binary.AppendUvarint(out, uint64(len(conv)))
	out = append(out, conv...)
	out = binary.AppendUvarint(out, uint64(len(msgs)))
	out = binary.AppendUvarint(out, uint64(len(blocks)))
	for _, b := range blocks {
		out = binary.BigEndian.AppendUint64(out, b.FirstID)
		out = binary.BigEndian.AppendUint64(out, b.LastID)
		out = binary.AppendUvarint(out, uint64(b.Offset))
		out = binary.AppendUvarint(out, uint64(b.Length))
		out = binary.AppendUvarint(out, uint64(b.Count))
		out = binary.AppendUvarint(out, uint64(b.RawLength))
		out = binary.BigEndian.AppendUint32(out, b.CRC)
	}
	idx := out[idxOff:]
	idxCRC := crc32.Checksum(idx, castagnoli)
	idxLen := len(idx)
	out = binary.BigEndian.AppendUint64(out, uint64(idxOff))
	out = binary.BigEndian.AppendUint32(out, uint32(idxLen))
	out = binary.BigEndian.AppendUint32(out, idxCRC)
	out = append(out, magic...)

	meta := Meta{
		Conversation: conv, FirstID: msgs[0].ID, LastID: msgs[len(msgs)-1].ID,
		Count: len(msgs), Size: int64(len(out)), SHA256: sha256.Sum256(out),
	}
	return out, meta, nil
}

// Reader reads a segment through an io.ReaderAt (a local file, or an
// object store's range reads). It holds only the index.
type Reader struct {
	r            io.ReaderAt
	size         int64
	Conversation string
	Count        int
	Blocks       []Block
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

// Open reads and checks the trailer and the index of a segment of size
// bytes.
func Open(r io.ReaderAt, size int64) (*Reader, error) {
	if size < int64(headerLen+trailerLen) {
		return nil, corrupt("%d bytes is too short", size)
	}
	var head [headerLen]byte
	if _, err := r.ReadAt(head[:], 0); err != nil {
		return nil, fmt.Errorf("segment: read header: %w", err)
	}
	if string(head[:len(magic)]) != magic {
		return nil, corrupt("bad magic")
	}
	if head[len(magic)] != version {
		return nil, fmt.Errorf("%w %d", ErrVersion, head[len(magic)])
	}
	var tr [trailerLen]byte
	if _, err := r.ReadAt(tr[:], size-int64(trailerLen)); err != nil {
		return nil, fmt.Errorf("segment: read trailer: %w", err)
	}
	if string(tr[16:]) != magic {
		return nil, corrupt("bad trailer magic (truncated?)")
	}
	idxOff := binary.BigEndian.Uint64(tr[0:8])
	idxLen := binary.BigEndian.Uint32(tr[8:12])
	idxCRC := binary.BigEndian.Uint32(tr[12:16])
	if idxOff < uint64(headerLen) || idxLen > maxIndexBytes || idxOff+uint64(idxLen) != uint64(size-int64(trailerLen)) {
		return nil, corrupt("index at %d+%d does not fit %d bytes", idxOff, idxLen, size)
	}
	idx := make([]byte, idxLen)
	if _, err := r.ReadAt(idx, int64(idxOff)); err != nil {
		return nil, fmt.Errorf("segment: read index: %w", err)
	}
	if crc32.Checksum(idx, castagnoli) != idxCRC {
		return nil, corrupt("index checksum mismatch")
	}
	sr := &Reader{r: r, size: size}
	if err := sr.parseIndex(idx, int64(idxOff)); err != nil {
		return nil, err
	}
	return sr, nil
}

func (sr *Reader) parseIndex(idx []byte, idxOff int64) error {
	br := bytes.NewReader(idx)
	uv := func(what string, max uint64) (uint64, error) {
		v, err := binary.ReadUvarint(br)
		if err != nil || v > max {
			return 0, corrupt("index: bad %s", what)
		}
		return v, nil
	}
	u64 := func() (uint64, error) {
		var b [8]byte
		if _, err := io.ReadFull(br, b[:]); err != nil {
			return 0, corrupt("index truncated")
		}
		return binary.BigEndian.Uint64(b[:]), nil
	}
	n, err := uv("conversation length", 1024)
	if err != nil {
		return err
	}
	conv := make([]byte, n)
	if _, err := io.ReadFull(br, conv); err != nil {
		return corrupt("index truncated")
	}
	sr.Conversation = string(conv)
	count, err := uv("count", uint64(idxOff))
	if err != nil {
		return err
	}
	nb, err := uv("block count", uint64(len(idx)/22))
	if err != nil {
		return err
	}
	sr.Count = int(count)
	sr.Blocks = make([]Block, 0, nb)
	next, total, prevLast := int64(headerLen), 0, uint64(0)
	for i := range int(nb) {
		var b Block
		if b.FirstID, err = u64(); err != nil {
			return err
		}
		if b.LastID, err = u64(); err != nil {
			return err
		}
		off, err := uv("block offset", uint64(idxOff))
		if err != nil {
			return err
		}
		length, err := uv("block length", uint64(idxOff))
		if err != nil {
			return err
		}
		c, err := uv("block count", count)
		if err != nil {
			return err
		}
		rawLen, err := uv("block raw length", maxBlockBytes)
		if err != nil {
			return err
		}
		var crc [4]byte
		if _, err := io.ReadFull(br, crc[:]); err != nil {
			return corrupt("index truncated")
		}
		b.Offset, b.Length, b.Count, b.RawLength, b.CRC = int64(off), int64(length), int(c), int(rawLen), binary.BigEndian.Uint32(crc[:])
		if b.Offset != next || b.Count == 0 || b.FirstID > b.LastID || (i > 0 && b.FirstID <= prevLast) {
			return corrupt("index: block %d out of place", i)
		}
		next, total, prevLast = b.Offset+b.Length, total+b.Count, b.LastID
		sr.Blocks = append(sr.Blocks, b)
	}
	if br.Len() != 0 || next != idxOff || total != sr.Count || sr.Count == 0 {
		return corrupt("index does not describe the blocks")
	}
	return nil
}

// FirstID and LastID bound the segment's messages.
func (sr *Reader) FirstID() uint64 { return sr.Blocks[0].FirstID }
func (sr *Reader) LastID() uint64  { return sr.Blocks[len(sr.Blocks)-1].LastID }

// Using is sr reading its blocks through r: the same object read another
// way (an object store's range reads under another request's context).
func (sr *Reader) Using(r io.ReaderAt) *Reader {
	c := *sr
	c.r = r
	return &c
}

// BlockFor is the index of the block whose range holds id, or of the
// first block after id when none does (len(Blocks) when id is past the
// end).
func (sr *Reader) BlockFor(id uint64) int {
	return sort.Search(len(sr.Blocks), func(i int) bool { return sr.Blocks[i].LastID >= id })
}

// ReadBlock reads, checks and decodes block i. The bodies are slices of
// one buffer owned by the caller.
func (sr *Reader) ReadBlock(i int, dec *zstd.Decoder) ([]Message, error) {
	if i < 0 || i >= len(sr.Blocks) {
		return nil, fmt.Errorf("segment: block %d of %d", i, len(sr.Blocks))
	}
	b := sr.Blocks[i]
	frame := make([]byte, b.Length)
	if _, err := sr.r.ReadAt(frame, b.Offset); err != nil {
		return nil, fmt.Errorf("segment: read block %d: %w", i, err)
	}
	if crc32.Checksum(frame, castagnoli) != b.CRC {
		return nil, corrupt("block %d checksum mismatch", i)
	}
	raw, err := dec.DecodeAll(frame, make([]byte, 0, b.RawLength))
	if err != nil || len(raw) != b.RawLength {
		return nil, corrupt("block %d does not inflate to %d bytes", i, b.RawLength)
	}
	msgs := make([]Message, 0, b.Count)
	prev := uint64(0)
	for len(raw) > 0 {
		if len(raw) < 9 {
			return nil, corrupt("block %d: truncated record", i)
		}
		id := binary.BigEndian.Uint64(raw)
		n, k := binary.Uvarint(raw[8:])
		if k <= 0 || n == 0 || n > MaxBodyBytes || uint64(len(raw)-8-k) < n {
			return nil, corrupt("block %d: bad record length", i)
		}
		if (len(msgs) == 0 && id != b.FirstID) || (len(msgs) > 0 && id <= prev) {
			return nil, corrupt("block %d: IDs out of order", i)
		}
		body := raw[8+k : 8+k+int(n) : 8+k+int(n)]
		msgs = append(msgs, Message{ID: id, Body: body})
		raw, prev = raw[8+k+int(n):], id
	}
	if len(msgs) != b.Count || prev != b.LastID {
		return nil, corrupt("block %d holds %d messages, index says %d", i, len(msgs), b.Count)
	}
	return msgs, nil
}

// NewDecoder is a zstd decoder bounded for segment blocks; one per
// goroutine (or a pool), closed by the caller.
func NewDecoder() (*zstd.Decoder, error) {
	return zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxBlockBytes), zstd.WithDecoderMaxWindow(maxBlockBytes))
}
