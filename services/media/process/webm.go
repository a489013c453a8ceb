package process

import (
	"encoding/binary"
	"errors"
	"io"
	"math"
	"time"
)

// WebM (Matroska) as browsers record it: MediaRecorder writes audio/webm
// with Opus in a live stream, whose Segment and Clusters have an unknown
// size and whose Info has no Duration. webmInfo walks the EBML elements
// (no decoding): the track types, and the duration from Info or, when it
// is absent, the timecode of the last block.

// EBML IDs (with their length marker bits, as written).
const (
	ebmlHeader       = 0x1A45DFA3
	ebmlSegment      = 0x18538067
	ebmlInfo         = 0x1549A966
	ebmlTimecodeScal = 0x2AD7B1
	ebmlDuration     = 0x4489
	ebmlTracks       = 0x1654AE6B
	ebmlTrackEntry   = 0xAE
	ebmlTrackType    = 0x83
	ebmlCluster      = 0x1F43B675
	ebmlTimecode     = 0xE7
	ebmlSimpleBlock  = 0xA3
	ebmlBlockGroup   = 0xA0
	ebmlBlock        = 0xA1
)

// unknownSize is an element size of all ones: it lasts until its parent
// ends (live streams).
const unknownSize = -1

// maxWebMElements bounds the walk (a file of tiny elements must not
// spin a worker).
const maxWebMElements = 1 << 20

var errWebM = errors.New("webm: malformed")

type webmInfo struct {
	audio, video int // tracks by type
	duration     time.Duration
}

// ebmlVint reads a variable-length integer at b: its value without the
// length marker (unknownSize when all ones, if data), and its length.
func ebmlVint(b []byte, data bool) (int64, int, bool) {
	if len(b) == 0 || b[0] == 0 {
		return 0, 0, false
	}
	n := 1
	for mask := byte(0x80); b[0]&mask == 0; mask >>= 1 {
		n++
	}
	if n > 8 || len(b) < n {
		return 0, 0, false
	}
	if !data { // an ID keeps its marker
		var v int64
		for _, c := range b[:n] {
			v = v<<8 | int64(c)
		}
		return v, n, n <= 4
	}
	v := int64(b[0] & (0xff >> n))
	ones := v == int64(0xff>>n)
	for _, c := range b[1:n] {
		v = v<<8 | int64(c)
		ones = ones && c == 0xff
	}
	if ones {
		return unknownSize, n, true
	}
	return v, n, true
}

// readWebM walks the file r of size bytes.
func readWebM(r io.ReaderAt, size int64) (webmInfo, error) {
	var info webmInfo
	var hdr [12]byte
	element := func(off int64) (id, sz int64, hl int, err error) {
		k, err := r.ReadAt(hdr[:min(int64(len(hdr)), size-off)], off)
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, 0, 0, err
		}
		id, n, ok := ebmlVint(hdr[:k], false)
		if !ok {
			return 0, 0, 0, errWebM
		}
		sz, m, ok := ebmlVint(hdr[n:k], true)
		if !ok {
			return 0, 0, 0, errWebM
		}
		return id, sz, n + m, nil
	}
	body := func(off, sz int64, limit int64) ([]byte, error) {
		if sz < 0 || sz > limit || off+sz > size {
			return nil, errWebM
		}
		b := make([]byte, sz)
		_, err := r.ReadAt(b, off)
		return b, err
	}
	be := func(b []byte) uint64 {
		var v uint64
		for _, c := range b {
			v = v<<8 | uint64(c)
		}
		return v
	}
	scale := uint64(1_000_000) // ns per tick, Matroska's default
	duration := -1.0
	var cluster, last uint64
	off := int64(0)
walk:
	for visited := 0; off < size; visited++ {
		if visited > maxWebMElements {
			return info, errWebM
		}
		id, sz, hl, err := element(off)
		if err != nil {
			if off > 0 && errors.Is(err, errWebM) {
				break walk // a truncated last element: keep what was read
			}
			return info, err
		}
		if visited == 0 && id != ebmlHeader {
			return info, errWebM
		}
		data := off + int64(hl)
		switch id {
		case ebmlSegment, ebmlCluster, ebmlTracks, ebmlTrackEntry, ebmlBlockGroup, ebmlInfo:
			off = data // a container: walk its children in line
			continue
		case ebmlTimecodeScal, ebmlTrackType, ebmlTimecode:
			b, err := body(data, sz, 8)
			if err != nil {
				if errors.Is(err, errWebM) {
					break walk // cut short (or the first bytes only): keep what was read
				}
				return info, err
			}
			switch v := be(b); id {
			case ebmlTimecodeScal:
				if v > 0 {
					scale = v
				}
			case ebmlTrackType:
				switch v {
				case 1:
					info.video++
				case 2:
					info.audio++
				}
			case ebmlTimecode:
				cluster = v
			}
		case ebmlDuration:
			b, err := body(data, sz, 8)
			if err != nil {
				if errors.Is(err, errWebM) {
					break walk // cut short (or the first bytes only): keep what was read
				}
				return info, err
			}
			switch len(b) {
			case 4:
				duration = float64(math.Float32frombits(binary.BigEndian.Uint32(b)))
			case 8:
				duration = math.Float64frombits(binary.BigEndian.Uint64(b))
			}
		case ebmlSimpleBlock, ebmlBlock:
			b, err := body(data, min(sz, 12), 12) // track number (vint), then a signed 16-bit timecode
			if err != nil {
				if errors.Is(err, errWebM) {
					break walk // cut short (or the first bytes only): keep what was read
				}
				return info, err
			}
			if _, n, ok := ebmlVint(b, true); ok && len(b) >= n+2 {
				rel := int64(int16(binary.BigEndian.Uint16(b[n:])))
				if t := int64(cluster) + rel; t > 0 && uint64(t) > last {
					last = uint64(t)
				}
			}
		}
		if sz == unknownSize {
			break walk // only containers may be of unknown size
		}
		off = data + sz
	}
	switch {
	case duration > 0 && !math.IsInf(duration, 0) && duration*float64(scale) < float64(math.MaxInt64):
		info.duration = time.Duration(duration * float64(scale))
	case last > 0 && last < math.MaxInt64/scale:
		info.duration = time.Duration(last * scale)
	}
	return info, nil
}
