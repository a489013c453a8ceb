package process

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Blanking an MP4's metadata without ffmpeg: the boxes that carry it are
// turned into "free" boxes of the same size with zeroed contents, so no
// offset in the file moves (sample tables point into mdat by absolute
// offset) and players skip them. Blanked: a top-level meta or uuid box
// (XMP, makers' data), and udta and meta in moov and in each trak (the
// ©xyz location Android writes, the ISO 6709 location of an iPhone's
// mdta keys, camera make, model and serial, iTunes tags, chapters). A
// timed metadata track (a GoPro's GPS stream) is a track of samples in
// mdat: only a remux drops it.

// bmffBlanked are the boxes blanked, by the parent they sit in ("" the
// top level).
var bmffBlanked = map[string]map[string]bool{
	"":     {"meta": true, "uuid": true, "udta": true},
	"moov": {"udta": true, "meta": true},
	"trak": {"udta": true, "meta": true},
}

// blankBMFFMetadata writes to a new file in dir a copy of the MP4 at path
// with its metadata boxes blanked, and returns the new file's path.
func blankBMFFMetadata(path, dir, ext string) (string, error) {
	return blankCopy(path, dir, ext, func(src io.ReaderAt, size int64) ([][2]int64, error) {
		var spans [][2]int64 // box start, box end
		err := findBlanked(src, 0, size, "", 0, &spans)
		return spans, err
	}, func(f *os.File, s [2]int64) (int64, error) {
		// The box becomes a "free" box, its header kept.
		var h [8]byte
		if _, err := f.ReadAt(h[:], s[0]); err != nil {
			return 0, err
		}
		hdr := int64(8)
		if binary.BigEndian.Uint32(h[:4]) == 1 {
			hdr = 16 // a 64-bit size follows the type
		}
		_, err := f.WriteAt([]byte("free"), s[0]+4)
		return s[0] + hdr, err
	})
}

// blankCopy writes to a new file in dir a copy of the file at path with
// the spans find gives zeroed, each from where prepare says (after
// prepare's own change to the span, if any; nil: the whole span), and
// returns the new file's path. Nothing is left behind on an error.
func blankCopy(path, dir, ext string, find func(io.ReaderAt, int64) ([][2]int64, error),
	prepare func(*os.File, [2]int64) (int64, error)) (out string, err error) {
	src, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return "", err
	}
	spans, err := find(src, st.Size())
	if err != nil {
		return "", err
	}
	f, err := os.CreateTemp(dir, "media-*"+ext)
	if err != nil {
		return "", err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(f.Name())
			out = ""
		}
	}()
	if _, err := io.Copy(f, src); err != nil {
		return "", err
	}
	zero := make([]byte, 32<<10)
	for _, s := range spans {
		from := s[0]
		if prepare != nil {
			if from, err = prepare(f, s); err != nil {
				return "", err
			}
		}
		for off := from; off < s[1]; {
			n := min(int64(len(zero)), s[1]-off)
			if _, err := f.WriteAt(zero[:n], off); err != nil {
				return "", err
			}
			off += n
		}
	}
	return f.Name(), nil
}

// findBlanked appends the spans of the boxes to blank in [start, end),
// the children of a box of type parent. A box whose size runs outside
// its parent ends the walk of that parent (what follows is not boxes).
func findBlanked(r io.ReaderAt, start, end int64, parent string, depth int, spans *[][2]int64) error {
	if depth > 2 {
		return nil
	}
	var err error
	walkErr := eachBox(r, start, end, func(typ string, box, body, boxEnd int64) bool {
		switch {
		case bmffBlanked[parent][typ]:
			*spans = append(*spans, [2]int64{box, boxEnd})
		case typ == "moov" && parent == "", typ == "trak" && parent == "moov":
			err = findBlanked(r, body, boxEnd, typ, depth+1, spans)
		}
		return err == nil
	})
	return errors.Join(walkErr, err)
}

// blankHEIFMetadata writes to a new file in dir a copy of the HEIF at
// path whose Exif items and XMP items (a "mime" item of type
// application/rdf+xml) have their bytes zeroed where iloc puts them (in
// the file, or in the meta box's idat), and returns the new file's
// path. The picture's items and every offset stay as they are. A file
// whose meta box cannot be read is refused as corrupt: serving it would
// serve its metadata.
func blankHEIFMetadata(path, dir, ext string) (string, error) {
	return blankCopy(path, dir, ext, heifMetadataSpans, nil)
}

// heifMetadataSpans finds the byte ranges of a HEIF's Exif and XMP items.
func heifMetadataSpans(r io.ReaderAt, size int64) ([][2]int64, error) {
	corrupt := func(what string) error { return fmt.Errorf("%w: heif %s", ErrCorrupt, what) }
	// The top-level meta box (a full box: 4 bytes of version and flags).
	var metaStart, metaEnd int64 = -1, -1
	if err := eachBox(r, 0, size, func(typ string, _, body, end int64) bool {
		if typ == "meta" {
			metaStart, metaEnd = body+4, end
			return false
		}
		return true
	}); err != nil {
		return nil, err
	}
	if metaStart < 0 {
		return nil, nil // no items: nothing to blank
	}
	var iinf, iloc []byte
	idat := int64(-1)
	if err := eachBox(r, metaStart, metaEnd, func(typ string, _, body, end int64) bool {
		switch typ {
		case "iinf", "iloc":
			if end-body > 1<<20 {
				return true // read below as missing
			}
			b := make([]byte, end-body)
			if _, err := r.ReadAt(b, body); err != nil {
				return true
			}
			if typ == "iinf" {
				iinf = b
			} else {
				iloc = b
			}
		case "idat":
			idat = body
		}
		return true
	}); err != nil {
		return nil, err
	}
	if iinf == nil || iloc == nil {
		return nil, nil
	}
	// iinf: the items whose bytes are metadata.
	p := &byteParser{b: iinf}
	version := p.u8()
	p.skip(3)
	count := int(p.u16())
	if version != 0 {
		count = count<<16 | int(p.u16()) // a 32-bit count
	}
	meta := map[uint32]bool{}
	for i := 0; i < count && p.ok(); i++ {
		bsize, typ := int(p.u32()), p.str4()
		if bsize < 8 || typ != "infe" {
			return nil, corrupt("item info")
		}
		e := &byteParser{b: p.take(bsize - 8)}
		v := e.u8()
		e.skip(3)
		if v < 2 {
			continue // old item infos name no item type
		}
		id := uint32(e.u16())
		if v >= 3 {
			id = id<<16 | uint32(e.u16())
		}
		e.skip(2) // protection index
		itemType := e.str4()
		e.cstr() // name
		if itemType == "Exif" || itemType == "mime" && strings.Contains(e.cstr(), "rdf+xml") {
			meta[id] = true
		}
	}
	if !p.ok() {
		return nil, corrupt("item info")
	}
	if len(meta) == 0 {
		return nil, nil
	}
	// iloc: where those items' bytes are.
	p = &byteParser{b: iloc}
	version = p.u8()
	p.skip(3)
	sizes := p.u16()
	offSize, lenSize, baseSize, idxSize := int(sizes>>12), int(sizes>>8&15), int(sizes>>4&15), int(sizes&15)
	if version == 0 {
		idxSize = 0
	}
	n := int(p.u16())
	if version == 2 {
		n = n<<16 | int(p.u16())
	}
	var spans [][2]int64
	for i := 0; i < n && p.ok(); i++ {
		id := uint32(p.u16())
		if version == 2 {
			id = id<<16 | uint32(p.u16())
		}
		method := 0
		if version == 1 || version == 2 {
			method = int(p.u16() & 15)
		}
		p.skip(2) // data reference index
		base := p.uint(baseSize)
		extents := int(p.u16())
		for j := 0; j < extents && p.ok(); j++ {
			p.uint(idxSize)
			off, length := p.uint(offSize), p.uint(lenSize)
			if !meta[id] {
				continue
			}
			start := int64(base + off)
			switch method {
			case 0:
			case 1:
				if idat < 0 {
					return nil, corrupt("item in a missing idat")
				}
				start += idat
			default:
				return nil, corrupt("metadata item made of other items")
			}
			end := start + int64(length)
			if length == 0 {
				end = size // to the end of the file
			}
			if start < 0 || start > size || end > size || end < start {
				return nil, corrupt("item outside the file")
			}
			spans = append(spans, [2]int64{start, end})
		}
	}
	if !p.ok() {
		return nil, corrupt("item locations")
	}
	return spans, nil
}

// eachBox calls fn with the type, start, body start and end of each box
// in [start, end), until fn returns false or the boxes end (a box running
// outside its parent ends the walk).
func eachBox(r io.ReaderAt, start, end int64, fn func(typ string, box, body, end int64) bool) error {
	for off, n := start, 0; off+8 <= end; n++ {
		if n > bmffMaxBoxes {
			return fmt.Errorf("%w: more than %d boxes", ErrCorrupt, bmffMaxBoxes)
		}
		var h [16]byte
		if _, err := r.ReadAt(h[:8], off); err != nil {
			return err
		}
		size, hdr := int64(binary.BigEndian.Uint32(h[:4])), int64(8)
		switch size {
		case 0:
			size = end - off
		case 1:
			if _, err := r.ReadAt(h[8:16], off+8); err != nil {
				return nil
			}
			u := binary.BigEndian.Uint64(h[8:16])
			if u > uint64(end-off) {
				return nil
			}
			size, hdr = int64(u), 16
		}
		if size < hdr || size > end-off {
			return nil
		}
		if !fn(string(h[4:8]), off, off+hdr, off+size) {
			return nil
		}
		off += size
	}
	return nil
}

// byteParser reads big-endian fields; past the end it reads zeros and
// ok reports false.
type byteParser struct {
	b   []byte
	bad bool
}

func (p *byteParser) ok() bool { return !p.bad }

func (p *byteParser) take(n int) []byte {
	if n < 0 || n > len(p.b) {
		p.bad, p.b = true, nil
		return nil
	}
	out := p.b[:n]
	p.b = p.b[n:]
	return out
}

func (p *byteParser) skip(n int) { p.take(n) }

func (p *byteParser) uint(n int) uint64 {
	var v uint64
	for _, c := range p.take(n) {
		v = v<<8 | uint64(c)
	}
	return v
}

func (p *byteParser) u8() uint8   { return uint8(p.uint(1)) }
func (p *byteParser) u16() uint16 { return uint16(p.uint(2)) }
func (p *byteParser) u32() uint32 { return uint32(p.uint(4)) }
func (p *byteParser) str4() string {
	return string(p.take(4))
}

// cstr reads a NUL-terminated string (all that is left without one).
func (p *byteParser) cstr() string {
	i := bytes.IndexByte(p.b, 0)
	if i < 0 {
		s := string(p.b)
		p.b = nil
		return s
	}
	s := string(p.b[:i])
	p.b = p.b[i+1:]
	return s
}
