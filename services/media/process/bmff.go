package process

import (
	"encoding/binary"
	"fmt"
	"io"
	"time"
)

// bmffInfo is what we read from an ISO base media file (MP4, MOV, M4A,
// HEIC): the movie duration from mvhd, the display size of the first
// video track from tkhd (its matrix applied, so a portrait phone video
// is taller than wide), and for HEIC the largest ispe (image spatial
// extent) property, which is the primary image's size (the others are
// thumbnails).
type bmffInfo struct {
	duration      time.Duration
	width, height int
}

// BMFF walk limits: real files nest 5-6 deep and have a few hundred
// boxes in the parts we visit; the limits make a crafted file cheap.
const (
	bmffMaxDepth = 10
	bmffMaxBoxes = 10000
)

// containers are the boxes whose children we visit.
var bmffContainers = map[string]bool{
	"moov": true, "trak": true, "meta": true, "iprp": true, "ipco": true,
}

// readBMFF walks the boxes of r (size bytes) and returns what it found.
// A file with no moov/meta box is not an error (the info is empty); a
// box whose size runs outside its parent is.
func readBMFF(r io.ReaderAt, size int64) (bmffInfo, error) {
	w := bmffWalker{r: r}
	err := w.walk(0, size, 0)
	return w.info, err
}

type bmffWalker struct {
	r      io.ReaderAt
	info   bmffInfo
	boxes  int
	gotVid bool
	ispe   int64 // pixels of the largest ispe seen
}

func (w *bmffWalker) walk(start, end int64, depth int) error {
	if depth > bmffMaxDepth {
		return fmt.Errorf("%w: boxes nested deeper than %d", ErrCorrupt, bmffMaxDepth)
	}
	for off := start; off+8 <= end; {
		w.boxes++
		if w.boxes > bmffMaxBoxes {
			return fmt.Errorf("%w: more than %d boxes", ErrCorrupt, bmffMaxBoxes)
		}
		var h [16]byte
		if _, err := w.r.ReadAt(h[:8], off); err != nil {
			return fmt.Errorf("%w: box header at %d: %v", ErrCorrupt, off, err)
		}
		size, typ, hlen := int64(binary.BigEndian.Uint32(h[:4])), string(h[4:8]), int64(8)
		switch size {
		case 0: // to the end of the parent
			size = end - off
		case 1: // 64-bit size follows
			if _, err := w.r.ReadAt(h[8:16], off+8); err != nil {
				return fmt.Errorf("%w: box size at %d: %v", ErrCorrupt, off, err)
			}
			u := binary.BigEndian.Uint64(h[8:16])
			if u > uint64(end-off) {
				return fmt.Errorf("%w: box %q runs past its parent", ErrCorrupt, typ)
			}
			size, hlen = int64(u), 16
		}
		if size < hlen || size > end-off {
			return fmt.Errorf("%w: box %q of size %d at %d (parent ends at %d)", ErrCorrupt, typ, size, off, end)
		}
		body, bodyEnd := off+hlen, off+size
		switch {
		case typ == "meta":
			// A FullBox in ISO BMFF (4 bytes of version and flags before
			// its children); QuickTime's meta is a plain box. Tell them
			// apart by whether a child header follows directly.
			var p [8]byte
			if _, err := w.r.ReadAt(p[:], body); err == nil && binary.BigEndian.Uint32(p[:4]) == 0 {
				body += 4
			}
			if err := w.walk(body, bodyEnd, depth+1); err != nil {
				return err
			}
		case bmffContainers[typ]:
			if err := w.walk(body, bodyEnd, depth+1); err != nil {
				return err
			}
		case typ == "mvhd":
			w.mvhd(body, bodyEnd)
		case typ == "tkhd":
			w.tkhd(body, bodyEnd)
		case typ == "ispe":
			w.ispeBox(body, bodyEnd)
		}
		off = bodyEnd
	}
	return nil
}

func (w *bmffWalker) read(off, end int64, n int) []byte {
	if off+int64(n) > end {
		return nil
	}
	b := make([]byte, n)
	if _, err := w.r.ReadAt(b, off); err != nil {
		return nil
	}
	return b
}

func (w *bmffWalker) mvhd(off, end int64) {
	b := w.read(off, end, 32)
	if b == nil {
		return
	}
	var scale uint32
	var dur uint64
	if b[0] == 1 { // version 1: 64-bit times
		scale, dur = binary.BigEndian.Uint32(b[20:]), binary.BigEndian.Uint64(b[24:])
	} else {
		scale, dur = binary.BigEndian.Uint32(b[12:]), uint64(binary.BigEndian.Uint32(b[16:]))
	}
	// All ones means "unknown"; anything over a week is not a chat
	// upload's duration either.
	if scale == 0 || dur == 1<<64-1 || dur == 1<<32-1 || dur/uint64(scale) > 7*24*3600 {
		return
	}
	w.info.duration = ticks(dur, uint64(scale))
}

func (w *bmffWalker) tkhd(off, end int64) {
	if w.gotVid {
		return
	}
	n := 84 // version 0: flags 4, times 8, id 4, res 4, dur 4, res 8, layer.. 8, matrix 36, w 4, h 4
	b := w.read(off, end, n)
	if b == nil {
		return
	}
	if b[0] == 1 {
		n = 96
		if b = w.read(off, end, n); b == nil {
			return
		}
	}
	mx := b[n-44 : n-8]
	width, height := int(binary.BigEndian.Uint32(b[n-8:])>>16), int(binary.BigEndian.Uint32(b[n-4:])>>16)
	if width == 0 || height == 0 {
		return // an audio track
	}
	// matrix {a b u; c d v; x y w}: a rotation by 90° or 270° has a = d = 0.
	if binary.BigEndian.Uint32(mx[0:]) == 0 && binary.BigEndian.Uint32(mx[16:]) == 0 {
		width, height = height, width
	}
	w.info.width, w.info.height, w.gotVid = width, height, true
}

func (w *bmffWalker) ispeBox(off, end int64) {
	b := w.read(off, end, 12)
	if b == nil {
		return
	}
	width, height := binary.BigEndian.Uint32(b[4:]), binary.BigEndian.Uint32(b[8:])
	if px := int64(width) * int64(height); px > w.ispe && width < 1<<30 && height < 1<<30 {
		w.ispe = px
		w.info.width, w.info.height = int(width), int(height)
	}
}

// oggDuration reads the granule position of the last Ogg page and
// divides it by the stream's sample rate (48 kHz for Opus, less its
// pre-skip; the rate in the identification header for Vorbis). head is
// the first bytes of the file, tail the last. It returns 0 when it
// cannot tell.
func oggDuration(head, tail []byte) time.Duration {
	if len(head) < 28+19 || string(head[:4]) != "OggS" {
		return 0
	}
	var rate, preskip uint64
	p := head[28:]
	switch {
	case string(p[:8]) == "OpusHead":
		rate, preskip = 48000, uint64(binary.LittleEndian.Uint16(p[10:]))
	case string(p[:7]) == "\x01vorbis" && len(p) >= 16:
		rate = uint64(binary.LittleEndian.Uint32(p[12:]))
	}
	if rate == 0 {
		return 0
	}
	for i := len(tail) - 27; i >= 0; i-- {
		if string(tail[i:i+4]) != "OggS" || tail[i+4] != 0 {
			continue
		}
		g := binary.LittleEndian.Uint64(tail[i+6:])
		if g == 1<<64-1 || g < preskip { // no packet ends on this page
			continue
		}
		if (g-preskip)/rate > 7*24*3600 {
			return 0
		}
		return ticks(g-preskip, rate)
	}
	return 0
}

// ticks converts n ticks of a clock of rate per second to a Duration
// without overflowing for any rate below 2^32; beyond a week (no chat
// upload lasts that long; the header lies) it returns 0.
func ticks(n, rate uint64) time.Duration {
	if rate == 0 || n/rate > 7*24*3600 {
		return 0
	}
	return time.Duration(n/rate)*time.Second + time.Duration(n%rate*uint64(time.Second)/rate)
}
