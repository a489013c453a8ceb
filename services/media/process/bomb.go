package process

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
	"io"
	"os"

	"golang.org/x/image/webp"
)

// Bounds is what the header says about an image's size, read without
// decoding pixels.
type Bounds struct {
	Width, Height int
	Frames        int   // 1 but for animated GIFs
	TotalPixels   int64 // over all frames
}

// CheckBomb refuses an image whose header promises more pixels than
// Config allows, before anything is decoded: a 50,000 × 50,000 PNG is a
// few hundred bytes on the wire and 10 GB once decoded. JPEG, PNG and
// WebP are measured with their DecodeConfig (the header only); GIF
// frames are counted by walking the block structure without decoding
// LZW data; HEIC by its ispe box. A JPEG's scans are counted too (a
// progressive JPEG of a few hundred kilobytes may hold thousands, each
// a walk over every block: hours of CPU). Other kinds pass with zero
// Bounds.
func CheckBomb(cfg Config, path string, d Detection) (Bounds, error) {
	if d.Kind != KindImage && !isHEIC(d.MIME) {
		return Bounds{}, nil
	}
	cfg = cfg.withDefaults()
	f, err := os.Open(path)
	if err != nil {
		return Bounds{}, fmt.Errorf("check bomb: %w", err)
	}
	defer f.Close()
	b, err := readBounds(f, d.MIME, cfg)
	if err != nil {
		return b, err
	}
	return b, checkBounds(cfg, b)
}

func readBounds(f *os.File, mt string, cfg Config) (Bounds, error) {
	var (
		c   image.Config
		err error
	)
	r := bufio.NewReader(f)
	switch mt {
	case "image/jpeg":
		if c, err = jpeg.DecodeConfig(r); err == nil {
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				return Bounds{}, fmt.Errorf("check bomb: %w", err)
			}
			if err := checkJPEGScans(bufio.NewReader(f), cfg.MaxScans); err != nil {
				return Bounds{}, err
			}
		}
	case "image/png", "image/apng":
		c, err = png.DecodeConfig(r)
	case "image/webp":
		c, err = webp.DecodeConfig(r)
	case "image/gif":
		return walkGIF(r, cfg.MaxPixels, cfg.MaxFrames, cfg.MaxTotalPixels)
	default:
		if isHEIC(mt) {
			st, err := f.Stat()
			if err != nil {
				return Bounds{}, fmt.Errorf("check bomb: %w", err)
			}
			info, err := readBMFF(f, st.Size())
			if err != nil {
				return Bounds{}, err
			}
			return Bounds{Width: info.width, Height: info.height, Frames: 1,
				TotalPixels: int64(info.width) * int64(info.height)}, nil
		}
		return Bounds{}, nil
	}
	if err != nil {
		return Bounds{}, fmt.Errorf("%w: %s header: %v", ErrCorrupt, mt, err)
	}
	px := int64(c.Width) * int64(c.Height)
	return Bounds{Width: c.Width, Height: c.Height, Frames: 1, TotalPixels: px}, nil
}

func checkBounds(cfg Config, b Bounds) error {
	if b.Width < 0 || b.Height < 0 {
		return fmt.Errorf("%w: negative size", ErrCorrupt)
	}
	if px := int64(b.Width) * int64(b.Height); px > cfg.MaxPixels {
		return fmt.Errorf("%w: %d×%d is %d pixels, limit %d", ErrTooManyPixels, b.Width, b.Height, px, cfg.MaxPixels)
	}
	if b.Frames > cfg.MaxFrames {
		return fmt.Errorf("%w: %d frames, limit %d", ErrTooManyFrames, b.Frames, cfg.MaxFrames)
	}
	if b.TotalPixels > cfg.MaxTotalPixels {
		return fmt.Errorf("%w: %d pixels over all frames, limit %d", ErrTooManyFrames, b.TotalPixels, cfg.MaxTotalPixels)
	}
	return nil
}

// walkGIF counts a GIF's frames and their pixels by walking its blocks
// (GIF89a spec §17-27): extensions and image data are skipped sub-block
// by sub-block, nothing is decompressed. It stops with a rejection as
// soon as a limit is passed, so a GIF of a million frames costs no more
// than reading up to the frame over the limit. Limits <= 0 are not
// checked (the fuzz test passes large ones).
func walkGIF(r *bufio.Reader, maxPixels int64, maxFrames int, maxTotal int64) (Bounds, error) {
	corrupt := func(what string, err error) error {
		if err != nil {
			return fmt.Errorf("%w: gif %s: %v", ErrCorrupt, what, err)
		}
		return fmt.Errorf("%w: gif %s", ErrCorrupt, what)
	}
	var hdr [13]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return Bounds{}, corrupt("header", err)
	}
	if string(hdr[:6]) != "GIF87a" && string(hdr[:6]) != "GIF89a" {
		return Bounds{}, corrupt("signature", nil)
	}
	b := Bounds{Width: int(binary.LittleEndian.Uint16(hdr[6:])), Height: int(binary.LittleEndian.Uint16(hdr[8:]))}
	// The canvas is allocated by decoders that composite frames, so it
	// counts against MaxPixels like a frame.
	if maxPixels > 0 && int64(b.Width)*int64(b.Height) > maxPixels {
		return b, fmt.Errorf("%w: gif canvas %d×%d", ErrTooManyPixels, b.Width, b.Height)
	}
	if hdr[10]&0x80 != 0 {
		if _, err := r.Discard(3 << (hdr[10]&7 + 1)); err != nil {
			return b, corrupt("global colour table", err)
		}
	}
	for {
		intro, err := r.ReadByte()
		if err != nil {
			// A missing trailer after at least one frame is common in
			// the wild and decoders accept it.
			if errors.Is(err, io.EOF) && b.Frames > 0 {
				return b, nil
			}
			return b, corrupt("block", err)
		}
		switch intro {
		case 0x21: // extension: label, then sub-blocks
			if _, err := r.ReadByte(); err != nil {
				return b, corrupt("extension", err)
			}
			if err := skipSubBlocks(r); err != nil {
				return b, corrupt("extension", err)
			}
		case 0x2c: // image descriptor
			var id [9]byte
			if _, err := io.ReadFull(r, id[:]); err != nil {
				return b, corrupt("image descriptor", err)
			}
			w, h := int64(binary.LittleEndian.Uint16(id[4:])), int64(binary.LittleEndian.Uint16(id[6:]))
			b.Frames++
			b.TotalPixels += w * h
			if maxPixels > 0 && w*h > maxPixels {
				return b, fmt.Errorf("%w: gif frame %d is %d×%d", ErrTooManyPixels, b.Frames, w, h)
			}
			if maxFrames > 0 && b.Frames > maxFrames {
				return b, fmt.Errorf("%w: more than %d gif frames", ErrTooManyFrames, maxFrames)
			}
			if maxTotal > 0 && b.TotalPixels > maxTotal {
				return b, fmt.Errorf("%w: gif frames add up to more than %d pixels", ErrTooManyFrames, maxTotal)
			}
			if id[8]&0x80 != 0 {
				if _, err := r.Discard(3 << (id[8]&7 + 1)); err != nil {
					return b, corrupt("local colour table", err)
				}
			}
			if _, err := r.ReadByte(); err != nil { // LZW minimum code size
				return b, corrupt("image data", err)
			}
			if err := skipSubBlocks(r); err != nil {
				return b, corrupt("image data", err)
			}
		case 0x3b: // trailer
			if b.Frames == 0 {
				return b, corrupt("no frame", nil)
			}
			return b, nil
		default:
			return b, corrupt(fmt.Sprintf("unknown block 0x%02x", intro), nil)
		}
	}
}

// skipSubBlocks discards data sub-blocks up to the zero-length
// terminator.
func skipSubBlocks(r *bufio.Reader) error {
	for {
		n, err := r.ReadByte()
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		if _, err := r.Discard(int(n)); err != nil {
			return err
		}
	}
}

// checkJPEGScans counts a JPEG's scans (SOS markers) by walking its
// marker segments and skipping the entropy-coded data after each SOS
// byte by byte (stuffed 0xFF00, restart markers and fill bytes stay
// in it), and refuses more than maxScans (not checked when <= 0). It
// stops at EOI, at the end of the data, or at the first scan over the
// limit; the decoder judges what else is malformed.
func checkJPEGScans(r *bufio.Reader, maxScans int) error {
	if maxScans <= 0 {
		return nil
	}
	scans := 0
	atMarker := false // the 0xFF of a marker was read by the entropy-data walk
	for {
		if !atMarker {
			// The next marker: 0xFF, fill bytes, then its code.
			b, err := r.ReadByte()
			if err != nil {
				return nil
			}
			if b != 0xff {
				continue // not where a marker is expected: left to the decoder
			}
		}
		atMarker = false
		code := byte(0xff)
		for code == 0xff {
			var err error
			if code, err = r.ReadByte(); err != nil {
				return nil
			}
		}
		switch {
		case code == 0xd9: // EOI
			return nil
		case code == 0xd8, code == 0x01, code >= 0xd0 && code <= 0xd7, code == 0x00:
			continue // no length: SOI, TEM, RSTn (0x00: stray stuffing)
		}
		var l [2]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return nil
		}
		n := int(binary.BigEndian.Uint16(l[:])) - 2
		if n < 0 {
			return nil
		}
		if _, err := r.Discard(n); err != nil {
			return nil
		}
		if code != 0xda { // not SOS
			continue
		}
		if scans++; scans > maxScans {
			return fmt.Errorf("%w: more than %d jpeg scans", ErrTooManyScans, maxScans)
		}
		// Entropy-coded data up to the next marker that is neither
		// stuffing nor a restart.
		for !atMarker {
			b, err := r.ReadByte()
			if err != nil {
				return nil
			}
			if b != 0xff {
				continue
			}
			next, err := r.Peek(1)
			if err != nil {
				return nil
			}
			if c := next[0]; c == 0x00 || c >= 0xd0 && c <= 0xd7 {
				_, _ = r.Discard(1)
				continue
			}
			atMarker = true
		}
	}
}
