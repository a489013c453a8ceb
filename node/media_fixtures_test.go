package node_test

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"testing"
)

// Fixtures of the media tests, made in code so that what they hold is
// plain to see.

// halves is a w×h image, red on the left half and blue on the right, so
// that a test can tell how it was turned.
func halves(w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			c := color.RGBA{R: 220, A: 255}
			if x >= w/2 {
				c = color.RGBA{B: 220, A: 255}
			}
			img.Set(x, y, c)
		}
	}
	return img
}

// jpegWithGPS is a w×h JPEG of halves with an EXIF block: orientation 6
// (turn 90° clockwise to show it), a camera make and a GPS position.
func jpegWithGPS(t testing.TB, w, h int) []byte {
	t.Helper()
	var plain bytes.Buffer
	if err := jpeg.Encode(&plain, halves(w, h), &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	exif := exifBlock()
	app1 := []byte{0xFF, 0xE1, 0, 0}
	binary.BigEndian.PutUint16(app1[2:], uint16(len(exif)+2))
	app1 = append(app1, exif...)
	b := plain.Bytes()
	out := append([]byte{}, b[:2]...) // SOI
	out = append(out, app1...)
	return append(out, b[2:]...)
}

// exifBlock is "Exif\0\0" and a little-endian TIFF structure: IFD0 with
// Orientation, Make and a GPS IFD pointer; the GPS IFD with a latitude.
func exifBlock() []byte {
	le := binary.LittleEndian
	var tiff []byte
	u16 := func(v uint16) { tiff = le.AppendUint16(tiff, v) }
	u32 := func(v uint32) { tiff = le.AppendUint32(tiff, v) }
	entry := func(tag, typ uint16, count, value uint32) { u16(tag); u16(typ); u32(count); u32(value) }
	const (
		ifd0     = 8
		ifd0Len  = 2 + 3*12 + 4
		makeOff  = ifd0 + ifd0Len
		makeStr  = "GPSCam\x00"
		gpsOff   = makeOff + 8
		gpsLen   = 2 + 2*12 + 4
		ratOff   = gpsOff + gpsLen
		shortTyp = 3
	)
	tiff = append(tiff, 'I', 'I', 42, 0)
	u32(ifd0)
	u16(3)
	entry(0x010F, 2, uint32(len(makeStr)), makeOff) // Make
	entry(0x0112, shortTyp, 1, 6)                   // Orientation: turn 90° clockwise
	entry(0x8825, 4, 1, gpsOff)                     // GPS IFD
	u32(0)
	tiff = append(tiff, makeStr...)
	tiff = append(tiff, 0) // pad to 8
	u16(2)
	entry(0x0001, 2, 2, uint32('N')) // GPSLatitudeRef "N"
	entry(0x0002, 5, 3, ratOff)      // GPSLatitude
	u32(0)
	for _, v := range []uint32{48, 1, 51, 1, 30, 1} { // 48° 51' 30"
		u32(v)
	}
	return append([]byte("Exif\x00\x00"), tiff...)
}

// pngBytes encodes img as PNG.
func pngBytes(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// pngBomb is a valid PNG signature and IHDR claiming width × height
// pixels, with a tiny IDAT: a decoder that trusted the header would
// allocate gigabytes.
func pngBomb(width, height uint32) []byte {
	chunk := func(typ string, data []byte) []byte {
		var c []byte
		c = binary.BigEndian.AppendUint32(c, uint32(len(data)))
		c = append(c, typ...)
		c = append(c, data...)
		return binary.BigEndian.AppendUint32(c, crc32.ChecksumIEEE(append([]byte(typ), data...)))
	}
	ihdr := binary.BigEndian.AppendUint32(nil, width)
	ihdr = binary.BigEndian.AppendUint32(ihdr, height)
	ihdr = append(ihdr, 8, 2, 0, 0, 0) // 8-bit RGB
	out := []byte("\x89PNG\r\n\x1a\n")
	out = append(out, chunk("IHDR", ihdr)...)
	out = append(out, chunk("IDAT", []byte{0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01})...)
	return append(out, chunk("IEND", nil)...)
}

// elfBinary is the start of an x86-64 ELF executable.
func elfBinary() []byte {
	b := []byte{0x7f, 'E', 'L', 'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0x3e, 0}
	return append(b, bytes.Repeat([]byte{0}, 200)...)
}

// eicar is the EICAR anti-virus test file.
const eicar = `X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`
