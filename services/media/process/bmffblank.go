package process

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
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
func blankBMFFMetadata(path, dir, ext string) (out string, err error) {
	src, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return "", err
	}
	var spans [][2]int64 // box start, box end
	if err := findBlanked(src, 0, st.Size(), "", 0, &spans); err != nil {
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
	for _, s := range spans {
		var h [8]byte
		if _, err := f.ReadAt(h[:], s[0]); err != nil {
			return "", err
		}
		hdr := int64(8)
		if binary.BigEndian.Uint32(h[:4]) == 1 {
			hdr = 16 // a 64-bit size follows the type
		}
		if _, err := f.WriteAt([]byte("free"), s[0]+4); err != nil {
			return "", err
		}
		zero := make([]byte, 32<<10)
		for off := s[0] + hdr; off < s[1]; {
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
		case 0: // to the end of the parent
			size = end - off
		case 1:
			if _, err := r.ReadAt(h[8:16], off+8); err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
			hdr = 16
			if u := binary.BigEndian.Uint64(h[8:16]); u > uint64(end-off) {
				return nil
			} else {
				size = int64(u)
			}
		}
		if size < hdr || size > end-off {
			return nil
		}
		typ := string(h[4:8])
		switch {
		case bmffBlanked[parent][typ]:
			*spans = append(*spans, [2]int64{off, off + size})
		case typ == "moov" && parent == "", typ == "trak" && parent == "moov":
			if err := findBlanked(r, off+hdr, off+size, typ, depth+1, spans); err != nil {
				return err
			}
		}
		off += size
	}
	return nil
}
