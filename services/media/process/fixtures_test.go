package process

// Fixtures are made in code: images with hand-written EXIF, PNG text
// chunks, animated GIFs, executable headers, office files with macros.
// Nothing is read from testdata, so each test shows what it feeds in.

import (
	"archive/zip"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/color"
	"image/color/palette"
	"image/gif"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"testing"
)

// Corner colours of the asymmetric test image: each corner is a solid
// quadrant, so JPEG keeps them recognisable and any rotation or flip
// moves a known colour to a known corner.
var (
	cTL = color.RGBA{255, 0, 0, 255}     // top left: red
	cTR = color.RGBA{0, 255, 0, 255}     // top right: green
	cBL = color.RGBA{0, 0, 255, 255}     // bottom left: blue
	cBR = color.RGBA{255, 255, 255, 255} // bottom right: white
)

// quadrants is a w×h image whose four quadrants have the corner colours.
func quadrants(w, h int) *image.RGBA {
	m := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			c := cTL
			switch {
			case x >= w/2 && y < h/2:
				c = cTR
			case x < w/2 && y >= h/2:
				c = cBL
			case x >= w/2 && y >= h/2:
				c = cBR
			}
			m.SetRGBA(x, y, c)
		}
	}
	return m
}

// noisy is a w×h image of pseudo-random pixels, the worst case for
// compression.
func noisy(w, h int) *image.RGBA {
	m := image.NewRGBA(image.Rect(0, 0, w, h))
	s := uint32(1)
	for i := range m.Pix {
		s = s*1664525 + 1013904223
		m.Pix[i] = byte(s >> 24)
		if i%4 == 3 {
			m.Pix[i] = 255
		}
	}
	return m
}

// photo is a w×h image with smooth gradients and some texture, closer to
// a camera picture than noise or flat colour for benchmarks.
func photo(w, h int) *image.RGBA {
	m := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			i := m.PixOffset(x, y)
			m.Pix[i] = byte(x * 255 / w)
			m.Pix[i+1] = byte(y * 255 / h)
			m.Pix[i+2] = byte((x*y/7 + x ^ y) & 0xff)
			m.Pix[i+3] = 255
		}
	}
	return m
}

func encodeJPEG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func encodePNG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// A TIFF/EXIF writer for fixtures, little- or big-endian.
type tiffEntry struct {
	tag, typ uint16
	count    uint32
	data     []byte // the value bytes, in the block's byte order
}

func asciiEntry(tag uint16, s string) tiffEntry {
	return tiffEntry{tag, 2, uint32(len(s) + 1), append([]byte(s), 0)}
}

func shortEntry(bo binary.ByteOrder, tag uint16, v uint16) tiffEntry {
	b := make([]byte, 2)
	bo.PutUint16(b, v)
	return tiffEntry{tag, 3, 1, b}
}

// buildTIFF lays out IFD0, an EXIF IFD and a GPS IFD (each optional
// but IFD0) followed by a data area, with the sub-IFD pointers filled.
func buildTIFF(bo binary.ByteOrder, ifd0, exif, gps []tiffEntry) []byte {
	if len(exif) > 0 {
		ifd0 = append(ifd0, tiffEntry{tagExifIFD, 4, 1, make([]byte, 4)})
	}
	if len(gps) > 0 {
		ifd0 = append(ifd0, tiffEntry{tagGPSIFD, 4, 1, make([]byte, 4)})
	}
	size := func(n int) int { return 2 + 12*n + 4 }
	off0 := 8
	offExif := off0 + size(len(ifd0))
	offGPS := offExif
	if len(exif) > 0 {
		offGPS += size(len(exif))
	}
	dataOff := offGPS
	if len(gps) > 0 {
		dataOff += size(len(gps))
	}
	var data []byte
	ifd := func(es []tiffEntry) []byte {
		b := make([]byte, 2, size(len(es)))
		bo.PutUint16(b, uint16(len(es)))
		for _, e := range es {
			ent := make([]byte, 12)
			bo.PutUint16(ent, e.tag)
			bo.PutUint16(ent[2:], e.typ)
			bo.PutUint32(ent[4:], e.count)
			switch {
			case e.tag == tagExifIFD:
				bo.PutUint32(ent[8:], uint32(offExif))
			case e.tag == tagGPSIFD:
				bo.PutUint32(ent[8:], uint32(offGPS))
			case len(e.data) <= 4:
				copy(ent[8:], e.data)
			default:
				bo.PutUint32(ent[8:], uint32(dataOff+len(data)))
				data = append(data, e.data...)
			}
			b = append(b, ent...)
		}
		return append(b, 0, 0, 0, 0) // no next IFD
	}
	out := []byte("II*\x00\x08\x00\x00\x00")
	if bo == binary.BigEndian {
		out = []byte("MM\x00*\x00\x00\x00\x08")
	}
	out = append(out, ifd(ifd0)...)
	if len(exif) > 0 {
		out = append(out, ifd(exif)...)
	}
	if len(gps) > 0 {
		out = append(out, ifd(gps)...)
	}
	return append(out, data...)
}

// secret marks metadata that must never reach an output.
const secret = "SECRETMETA"

// cameraExif is an EXIF block with make, model, orientation, a
// DateTimeOriginal with offset and a GPS position.
func cameraExif(bo binary.ByteOrder, orientation uint16) []byte {
	rational := func(vals ...uint32) []byte {
		b := make([]byte, 4*len(vals))
		for i, v := range vals {
			bo.PutUint32(b[4*i:], v)
		}
		return b
	}
	return buildTIFF(bo,
		[]tiffEntry{asciiEntry(tagMake, "EdgeCam"), asciiEntry(tagModel, "EdgeCam X1 "+secret), shortEntry(bo, tagOrientation, orientation)},
		[]tiffEntry{asciiEntry(tagDateTimeOrig, "2024:05:17 14:03:22"), asciiEntry(tagOffsetTimeOrig, "+02:00")},
		[]tiffEntry{
			{0x0000, 1, 4, []byte{2, 3, 0, 0}}, // GPSVersionID
			asciiEntry(0x0001, "N"),
			{0x0002, 5, 3, rational(48, 1, 51, 1, 2403, 100)}, // GPSLatitude
		})
}

// withJPEGSegments inserts segments (marker, payload) right after SOI.
func withJPEGSegments(j []byte, segs ...[]byte) []byte {
	out := append([]byte(nil), j[:2]...)
	for _, s := range segs {
		out = append(out, s...)
	}
	return append(out, j[2:]...)
}

func jpegSegment(marker byte, payload []byte) []byte {
	s := []byte{0xff, marker, 0, 0}
	binary.BigEndian.PutUint16(s[2:], uint16(len(payload)+2))
	return append(s, payload...)
}

// exifJPEG is img as a JPEG carrying EXIF (orientation o, GPS), an XMP
// packet, an ICC profile segment and a comment.
func exifJPEG(t testing.TB, img image.Image, o uint16) []byte {
	return withJPEGSegments(encodeJPEG(t, img),
		jpegSegment(0xe1, append([]byte("Exif\x00\x00"), cameraExif(binary.LittleEndian, o)...)),
		jpegSegment(0xe1, []byte("http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta>"+secret+"</x:xmpmeta>")),
		jpegSegment(0xe2, []byte("ICC_PROFILE\x00\x01\x01"+secret)),
		jpegSegment(0xfe, []byte("comment "+secret)),
	)
}

func pngChunk(typ string, data []byte) []byte {
	c := make([]byte, 8, 12+len(data))
	binary.BigEndian.PutUint32(c, uint32(len(data)))
	copy(c[4:], typ)
	c = append(c, data...)
	crc := crc32.ChecksumIEEE(c[4:])
	return binary.BigEndian.AppendUint32(c, crc)
}

// withPNGChunks inserts chunks after IHDR (signature 8 + IHDR 25 bytes).
func withPNGChunks(p []byte, chunks ...[]byte) []byte {
	out := append([]byte(nil), p[:33]...)
	for _, c := range chunks {
		out = append(out, c...)
	}
	return append(out, p[33:]...)
}

// metaPNG is img as a PNG with tEXt, iTXt, zTXt-free eXIf (orientation
// o) and iCCP-like chunks.
func metaPNG(t testing.TB, img image.Image, o uint16) []byte {
	return withPNGChunks(encodePNG(t, img),
		pngChunk("tEXt", []byte("Comment\x00"+secret)),
		pngChunk("iTXt", []byte("XML:com.adobe.xmp\x00\x00\x00\x00\x00<x:xmpmeta>"+secret+"</x:xmpmeta>")),
		pngChunk("eXIf", cameraExif(binary.BigEndian, o)),
	)
}

// hugePNG is a PNG signature and an IHDR claiming w×h, nothing else.
func hugePNG(w, h uint32) []byte {
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr, w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 2 // 8-bit RGB
	return append([]byte("\x89PNG\r\n\x1a\n"), pngChunk("IHDR", ihdr)...)
}

// animatedGIF is a w×h GIF of n frames of different colours, with a
// comment extension carrying the secret after the colour table.
func animatedGIF(t testing.TB, w, h, n int) []byte {
	t.Helper()
	g := &gif.GIF{LoopCount: 0}
	for i := 0; i < n; i++ {
		m := image.NewPaletted(image.Rect(0, 0, w, h), palette.Plan9)
		for p := range m.Pix {
			m.Pix[p] = uint8(10 + 40*i)
		}
		m.Pix[0] = 0 // a black top-left corner on every frame
		g.Image = append(g.Image, m)
		g.Delay = append(g.Delay, 10)
	}
	var b bytes.Buffer
	if err := gif.EncodeAll(&b, g); err != nil {
		t.Fatal(err)
	}
	raw := b.Bytes()
	// The frames carry local tables (no global one): the header is 13
	// bytes. Put the comment right after it.
	at := 13
	if raw[10]&0x80 != 0 {
		at += 3 << (raw[10]&7 + 1)
	}
	com := append([]byte{0x21, 0xfe, byte(len(secret))}, secret...)
	com = append(com, 0)
	return append(append(append([]byte(nil), raw[:at]...), com...), raw[at:]...)
}

// zipOf builds a zip with the given names and contents.
func zipOf(t testing.TB, files ...string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for i := 0; i+1 < len(files); i += 2 {
		w, err := zw.Create(files[i])
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(files[i+1]))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// docxWithMacros is an OOXML Word document with a VBA project.
func docxWithMacros(t testing.TB, macros bool) []byte {
	files := []string{
		"[Content_Types].xml", `<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>`,
		"_rels/.rels", `<Relationships/>`,
		"word/document.xml", `<w:document/>`,
	}
	if macros {
		files = append(files, "word/vbaProject.bin", "\xd0\xcf\x11\xe0 vba")
	}
	return zipOf(t, files...)
}

// oleFile is a minimal compound file (512-byte sectors): sector 0 is the
// FAT, sector 1 the directory holding a root entry and the named ones.
func oleFile(names ...string) []byte {
	const free, end, fatSect = 0xffffffff, 0xfffffffe, 0xfffffffd
	h := make([]byte, 512)
	copy(h, oleMagic)
	le := binary.LittleEndian
	le.PutUint16(h[0x18:], 0x3e)
	le.PutUint16(h[0x1a:], 3)
	le.PutUint16(h[0x1c:], 0xfffe)
	le.PutUint16(h[0x1e:], 9)
	le.PutUint16(h[0x20:], 6)
	le.PutUint32(h[0x2c:], 1)    // one FAT sector
	le.PutUint32(h[0x30:], 1)    // directory at sector 1
	le.PutUint32(h[0x38:], 4096) // mini stream cutoff
	le.PutUint32(h[0x3c:], end)
	le.PutUint32(h[0x44:], end)
	for i := 0; i < 109; i++ {
		le.PutUint32(h[0x4c+4*i:], free)
	}
	le.PutUint32(h[0x4c:], 0)
	fat := make([]byte, 512)
	for i := 0; i < 128; i++ {
		le.PutUint32(fat[4*i:], free)
	}
	le.PutUint32(fat[0:], fatSect)
	le.PutUint32(fat[4:], end)
	dir := make([]byte, 512)
	entry := func(i int, name string, typ byte) {
		e := dir[128*i : 128*i+128]
		for j, r := range name {
			le.PutUint16(e[2*j:], uint16(r))
		}
		le.PutUint16(e[0x40:], uint16(2*len(name)+2))
		e[0x42] = typ
		le.PutUint32(e[0x44:], free)
		le.PutUint32(e[0x48:], free)
		le.PutUint32(e[0x4c:], free)
	}
	entry(0, "Root Entry", 5)
	for i, n := range names {
		entry(i+1, n, 1)
	}
	return append(append(h, fat...), dir...)
}

// WebP fixtures: the smallest lossy, lossless and lossy-with-alpha
// images (1×1) that browsers' feature tests use; Go has no WebP encoder
// to make them.
func webpFixture(t testing.TB, kind string) []byte {
	t.Helper()
	s := map[string]string{
		"lossy":    "UklGRiIAAABXRUJQVlA4IBYAAAAwAQCdASoBAAEADsD+JaQAA3AAAAAA",
		"lossless": "UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA==",
		"alpha":    "UklGRkoAAABXRUJQVlA4WAoAAAAQAAAAAAAAAAAAQUxQSAwAAAARBxAR/Q9ERP8DAABWUDggGAAAABQBAJ0BKgEAAQAAAP4AAA3AAP7mtQAAAA==",
	}[kind]
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// box is an ISO BMFF box.
func box(typ string, body ...[]byte) []byte {
	b := make([]byte, 8)
	copy(b[4:], typ)
	for _, x := range body {
		b = append(b, x...)
	}
	binary.BigEndian.PutUint32(b, uint32(len(b)))
	return b
}

// mp4File is an MP4 whose movie lasts dur ticks of scale and whose video
// track is w×h, rotated 90° when rotate.
func mp4File(scale, dur uint32, w, h uint16, rotate bool) []byte {
	be := binary.BigEndian
	mvhd := make([]byte, 100)
	be.PutUint32(mvhd[12:], scale)
	be.PutUint32(mvhd[16:], dur)
	tkhd := make([]byte, 84)
	tkhd[3] = 3 // enabled, in movie
	m := tkhd[40:76]
	if rotate { // {0 1 0; -1 0 0; 0 0 1}
		be.PutUint32(m[4:], 0x10000)
		be.PutUint32(m[12:], 0xffff0000)
	} else {
		be.PutUint32(m[0:], 0x10000)
		be.PutUint32(m[16:], 0x10000)
	}
	be.PutUint32(m[32:], 0x40000000)
	be.PutUint32(tkhd[76:], uint32(w)<<16)
	be.PutUint32(tkhd[80:], uint32(h)<<16)
	soun := make([]byte, 84) // an audio track first: no size
	return append(append(
		box("ftyp", []byte("isom\x00\x00\x02\x00isomiso2mp41")),
		box("moov", box("mvhd", mvhd), box("trak", box("tkhd", soun)), box("trak", box("tkhd", tkhd)))...),
		box("mdat", []byte("not really video"))...)
}

// oggPage is one Ogg page holding a single packet.
func oggPage(granule uint64, seq uint32, packet []byte) []byte {
	p := []byte("OggS\x00\x02")
	p = binary.LittleEndian.AppendUint64(p, granule)
	p = binary.LittleEndian.AppendUint32(p, 1)   // serial
	p = binary.LittleEndian.AppendUint32(p, seq) // sequence
	p = append(p, 0, 0, 0, 0, 1, byte(len(packet)))
	return append(p, packet...)
}

// opusFile is an Ogg Opus stream lasting dur (48 kHz, pre-skip 312).
func opusFile(samples uint64) []byte {
	head := append([]byte("OpusHead\x01\x01"), 0x38, 0x01, 0x80, 0xbb, 0, 0, 0, 0, 0)
	tags := []byte("OpusTags\x00\x00\x00\x00\x00\x00\x00\x00")
	f := append(oggPage(0, 0, head), oggPage(0, 1, tags)...)
	f = append(f, oggPage(samples/2, 2, bytes.Repeat([]byte{0xf8}, 100))...)
	return append(f, oggPage(samples+312, 3, bytes.Repeat([]byte{0xf8}, 100))...)
}

// writeFile writes b to a new file in t's temp dir.
func writeFile(t testing.TB, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
