package process

// A small EXIF reader of our own rather than github.com/dsoprea/go-exif:
// we need six tags (Make, Model, Orientation, DateTimeOriginal,
// OffsetTimeOriginal and whether a GPS IFD exists), and that library
// brings in a logging package, a YAML tag database loaded at init, and
// panics used for control flow, for a parser that has to be fuzzed
// anyway. This one is bounds-checked on every read and fuzzed.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// exifInfo is what we read from an EXIF block.
type exifInfo struct {
	Make, Model string
	Orientation int // 1..8, 0 when absent
	TakenAt     time.Time
	HasGPS      bool
}

// maxExif bounds how much EXIF we hold: a JPEG APP1 segment cannot
// exceed 64 KiB, and PNG eXIf / WebP EXIF chunks get the same limit.
const maxExif = 1 << 16

// findExif returns the TIFF-structured EXIF payload of a JPEG, PNG or
// WebP stream, or nil when there is none. It reads only the headers:
// JPEG segments up to the first scan, PNG chunks up to the first IDAT,
// WebP chunks up to the image data.
func findExif(r io.Reader, mt string) ([]byte, error) {
	br := bufio.NewReader(r)
	switch mt {
	case "image/jpeg":
		return jpegExif(br)
	case "image/png", "image/apng":
		return pngExif(br)
	case "image/webp":
		return webpExif(br)
	}
	return nil, nil
}

func jpegExif(r *bufio.Reader) ([]byte, error) {
	var soi [2]byte
	if _, err := io.ReadFull(r, soi[:]); err != nil || soi != [2]byte{0xff, 0xd8} {
		return nil, fmt.Errorf("%w: jpeg: no SOI", ErrCorrupt)
	}
	for {
		var m [2]byte
		if _, err := io.ReadFull(r, m[:]); err != nil {
			return nil, nil // truncated headers: no EXIF; the decoder will judge
		}
		for m[0] == 0xff && m[1] == 0xff { // fill bytes
			b, err := r.ReadByte()
			if err != nil {
				return nil, nil
			}
			m[1] = b
		}
		if m[0] != 0xff {
			return nil, nil
		}
		switch {
		case m[1] == 0xd8 || (m[1] >= 0xd0 && m[1] <= 0xd7) || m[1] == 0x01:
			continue // no length
		case m[1] == 0xda || m[1] == 0xd9:
			return nil, nil // start of scan / end: no EXIF before the pixels
		}
		var l [2]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return nil, nil
		}
		n := int(binary.BigEndian.Uint16(l[:])) - 2
		if n < 0 {
			return nil, nil
		}
		if m[1] == 0xe1 && n >= 6 {
			seg := make([]byte, n)
			if _, err := io.ReadFull(r, seg); err != nil {
				return nil, nil
			}
			if bytes.HasPrefix(seg, []byte("Exif\x00\x00")) {
				return seg[6:], nil
			}
			continue // XMP and others
		}
		if _, err := r.Discard(n); err != nil {
			return nil, nil
		}
	}
}

func pngExif(r *bufio.Reader) ([]byte, error) {
	var sig [8]byte
	if _, err := io.ReadFull(r, sig[:]); err != nil || string(sig[:]) != "\x89PNG\r\n\x1a\n" {
		return nil, fmt.Errorf("%w: png: bad signature", ErrCorrupt)
	}
	for {
		var h [8]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return nil, nil
		}
		n := int64(binary.BigEndian.Uint32(h[:4]))
		typ := string(h[4:])
		switch {
		case typ == "IDAT" || typ == "IEND":
			return nil, nil
		case typ == "eXIf" && n <= maxExif:
			data := make([]byte, n)
			if _, err := io.ReadFull(r, data); err != nil {
				return nil, nil
			}
			return data, nil
		}
		if _, err := r.Discard(int(min(n+4, 1<<31-1))); err != nil { // data + CRC
			return nil, nil
		}
	}
}

func webpExif(r *bufio.Reader) ([]byte, error) {
	var h [12]byte
	if _, err := io.ReadFull(r, h[:]); err != nil || string(h[:4]) != "RIFF" || string(h[8:]) != "WEBP" {
		return nil, fmt.Errorf("%w: webp: bad RIFF header", ErrCorrupt)
	}
	for {
		var c [8]byte
		if _, err := io.ReadFull(r, c[:]); err != nil {
			return nil, nil
		}
		n := int64(binary.LittleEndian.Uint32(c[4:]))
		if string(c[:4]) == "EXIF" && n <= maxExif {
			data := make([]byte, n)
			if _, err := io.ReadFull(r, data); err != nil {
				return nil, nil
			}
			// Some writers keep the JPEG "Exif\0\0" prefix.
			return bytes.TrimPrefix(data, []byte("Exif\x00\x00")), nil
		}
		if _, err := r.Discard(int(min(n+n&1, 1<<31-1))); err != nil {
			return nil, nil
		}
	}
}

// EXIF tags we read.
const (
	tagMake           = 0x010f
	tagModel          = 0x0110
	tagOrientation    = 0x0112
	tagExifIFD        = 0x8769
	tagGPSIFD         = 0x8825
	tagDateTimeOrig   = 0x9003
	tagOffsetTimeOrig = 0x9011
)

var errExif = errors.New("exif")

// parseExif reads the tags of exifInfo from a TIFF-structured EXIF
// block. Every offset is checked against the block; IFD0 and the EXIF
// sub-IFD are the only directories visited, so there is no loop to
// guard against.
func parseExif(b []byte) (exifInfo, error) {
	var info exifInfo
	if len(b) < 8 {
		return info, fmt.Errorf("%w: short header", errExif)
	}
	var bo binary.ByteOrder
	switch string(b[:2]) {
	case "II":
		bo = binary.LittleEndian
	case "MM":
		bo = binary.BigEndian
	default:
		return info, fmt.Errorf("%w: byte order %q", errExif, b[:2])
	}
	if bo.Uint16(b[2:]) != 42 {
		return info, fmt.Errorf("%w: not TIFF", errExif)
	}
	var exifIFD uint32
	var dateTime, offset string
	err := walkIFD(b, bo, bo.Uint32(b[4:]), func(tag, typ uint16, count uint32, val []byte) {
		switch tag {
		case tagMake:
			info.Make = asciiValue(typ, val)
		case tagModel:
			info.Model = asciiValue(typ, val)
		case tagOrientation:
			if typ == 3 && count >= 1 {
				if o := int(bo.Uint16(val)); o >= 1 && o <= 8 {
					info.Orientation = o
				}
			}
		case tagExifIFD:
			if typ == 4 || typ == 13 {
				exifIFD = bo.Uint32(val)
			}
		case tagGPSIFD:
			info.HasGPS = true
		}
	})
	if err != nil {
		return info, err
	}
	if exifIFD != 0 {
		err = walkIFD(b, bo, exifIFD, func(tag, typ uint16, _ uint32, val []byte) {
			switch tag {
			case tagDateTimeOrig:
				dateTime = asciiValue(typ, val)
			case tagOffsetTimeOrig:
				offset = asciiValue(typ, val)
			}
		})
		if err != nil {
			return info, err
		}
	}
	info.TakenAt = exifTime(dateTime, offset)
	return info, nil
}

// typeSize is the byte size of one value of each TIFF field type.
var typeSize = [...]uint32{1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}

// walkIFD calls fn with each entry of the IFD at off and its value
// bytes (inline or at the offset the entry points to, bounds-checked).
// Entries with an unknown type or a value outside b are skipped.
func walkIFD(b []byte, bo binary.ByteOrder, off uint32, fn func(tag, typ uint16, count uint32, val []byte)) error {
	if uint64(off)+2 > uint64(len(b)) {
		return fmt.Errorf("%w: IFD offset %d outside %d bytes", errExif, off, len(b))
	}
	n := uint64(bo.Uint16(b[off:]))
	start := uint64(off) + 2
	if start+12*n > uint64(len(b)) {
		return fmt.Errorf("%w: IFD of %d entries truncated", errExif, n)
	}
	for i := uint64(0); i < n; i++ {
		e := b[start+12*i : start+12*i+12]
		tag, typ, count := bo.Uint16(e), bo.Uint16(e[2:]), bo.Uint32(e[4:])
		if int(typ) >= len(typeSize) || typeSize[typ] == 0 {
			continue
		}
		size := uint64(count) * uint64(typeSize[typ])
		var val []byte
		if size <= 4 {
			val = e[8 : 8+size]
		} else {
			vo := uint64(bo.Uint32(e[8:]))
			if vo+size > uint64(len(b)) {
				continue
			}
			val = b[vo : vo+size]
		}
		if len(val) < 4 && (typ == 4 || typ == 13) || len(val) < 2 && typ == 3 {
			continue
		}
		fn(tag, typ, count, val)
	}
	return nil
}

// asciiValue is an ASCII field without its NUL terminator and padding,
// with non-printable bytes dropped (the value ends up in JSON and UIs).
func asciiValue(typ uint16, val []byte) string {
	if typ != 2 {
		return ""
	}
	if i := bytes.IndexByte(val, 0); i >= 0 {
		val = val[:i]
	}
	s := strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == 0xfffd {
			return -1
		}
		return r
	}, strings.ToValidUTF8(string(val), ""))
	return strings.TrimSpace(s)
}

// exifTime parses "2006:01:02 15:04:05" with an optional "+02:00"
// offset. Without an offset the camera's local time is not
// recoverable; it is returned as if it were UTC (documented on Result).
func exifTime(dt, offset string) time.Time {
	if dt == "" {
		return time.Time{}
	}
	if offset != "" {
		if t, err := time.Parse("2006:01:02 15:04:05-07:00", dt+offset); err == nil {
			return t
		}
	}
	t, err := time.Parse("2006:01:02 15:04:05", dt)
	if err != nil {
		return time.Time{}
	}
	return t
}
