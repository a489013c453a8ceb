// Package processtest holds media files made for tests of the media
// pipeline (services/media/process and the node's media tests): inputs
// that are hard to come by as files, built byte by byte.
package processtest

import "bytes"

// JPEGScanBomb is a valid progressive grayscale JPEG of w×h pixels with
// scans AC scans after its DC scan, each skipping every block with a few
// bytes of end-of-band runs: a decoder walks every block of the image
// for each scan, so a few bytes a scan cost milliseconds of CPU each
// (libjpeg-turbo's LJT-01-003).
func JPEGScanBomb(w, h, scans int) []byte {
	var (
		out  []byte
		acc  byte
		bits uint
	)
	put := func(v uint32, n uint) {
		for i := int(n) - 1; i >= 0; i-- {
			acc = acc<<1 | byte(v>>uint(i))&1
			if bits++; bits == 8 {
				out = append(out, acc)
				if acc == 0xff {
					out = append(out, 0) // byte stuffing
				}
				acc, bits = 0, 0
			}
		}
	}
	flush := func() {
		for bits != 0 {
			put(1, 1)
		}
	}
	seg := func(marker byte, p ...byte) {
		out = append(out, 0xff, marker, byte((len(p)+2)>>8), byte(len(p)+2))
		out = append(out, p...)
	}
	out = append(out, 0xff, 0xd8)
	seg(0xdb, append([]byte{0}, bytes.Repeat([]byte{1}, 64)...)...)
	seg(0xc2, 8, byte(h>>8), byte(h), byte(w>>8), byte(w), 1, 1, 0x11, 0) // SOF2: progressive, one component
	oneCode := make([]byte, 16)
	oneCode[0] = 1                                               // one code of length 1: "0"
	seg(0xc4, append(append([]byte{0x00}, oneCode...), 0x00)...) // DC: difference 0
	seg(0xc4, append(append([]byte{0x10}, oneCode...), 0xe0)...) // AC: an end-of-band run of 2^14 + 14 bits
	blocks := ((w + 7) / 8) * ((h + 7) / 8)
	seg(0xda, 1, 1, 0x00, 0, 0, 0) // the DC scan
	for range blocks {
		put(0, 1)
	}
	flush()
	for range scans {
		seg(0xda, 1, 1, 0x00, 1, 63, 0) // an AC scan of coefficients 1-63
		for k := 0; k < blocks; k += 32767 {
			put(0, 1)
			put(0x3fff, 14) // a run of 32767 blocks
		}
		flush()
	}
	return append(out, 0xff, 0xd9)
}
