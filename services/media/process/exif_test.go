package process

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"
)

func TestParseExif(t *testing.T) {
	want := exifInfo{Make: "EdgeCam", Model: "EdgeCam X1 " + secret, Orientation: 6, HasGPS: true,
		TakenAt: time.Date(2024, 5, 17, 14, 3, 22, 0, time.FixedZone("", 2*3600))}
	for _, bo := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
		got, err := parseExif(cameraExif(bo, 6))
		if err != nil {
			t.Fatal(err)
		}
		if got.Make != want.Make || got.Model != want.Model || got.Orientation != want.Orientation ||
			got.HasGPS != want.HasGPS || !got.TakenAt.Equal(want.TakenAt) {
			t.Errorf("%v: got %+v, want %+v", bo, got, want)
		}
	}

	le := binary.LittleEndian
	tests := []struct {
		name string
		tiff []byte
		want exifInfo
		bad  bool
	}{
		{name: "no offset: wall clock as UTC", tiff: buildTIFF(le, []tiffEntry{shortEntry(le, tagOrientation, 3)},
			[]tiffEntry{asciiEntry(tagDateTimeOrig, "2020:01:02 03:04:05")}, nil),
			want: exifInfo{Orientation: 3, TakenAt: time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)}},
		{name: "orientation out of range", tiff: buildTIFF(le, []tiffEntry{shortEntry(le, tagOrientation, 9)}, nil, nil)},
		{name: "orientation of wrong type", tiff: buildTIFF(le, []tiffEntry{{tagOrientation, 4, 1, []byte{6, 0, 0, 0}}}, nil, nil)},
		{name: "model with control bytes", tiff: buildTIFF(le, []tiffEntry{asciiEntry(tagModel, "A\x01B\nC  ")}, nil, nil),
			want: exifInfo{Model: "ABC"}},
		{name: "zero date", tiff: buildTIFF(le, nil, []tiffEntry{asciiEntry(tagDateTimeOrig, "0000:00:00 00:00:00")}, nil)},
		{name: "value offset outside", tiff: append([]byte("II*\x00\x08\x00\x00\x00\x01\x00\x0f\x01\x02\x00\x20\x00\x00\x00\xff\xff\x00\x00"), 0, 0, 0, 0)},
		{name: "short", tiff: []byte("II*\x00"), bad: true},
		{name: "bad order", tiff: []byte("XX*\x00\x08\x00\x00\x00"), bad: true},
		{name: "ifd outside", tiff: []byte("II*\x00\xff\x00\x00\x00"), bad: true},
		{name: "ifd truncated", tiff: []byte("II*\x00\x08\x00\x00\x00\x05\x00"), bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseExif(tt.tiff)
			if (err != nil) != tt.bad {
				t.Fatalf("err = %v, bad %v", err, tt.bad)
			}
			if got.Make != tt.want.Make || got.Model != tt.want.Model || got.Orientation != tt.want.Orientation ||
				!got.TakenAt.Equal(tt.want.TakenAt) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestFindExif(t *testing.T) {
	img := quadrants(8, 8)
	tests := []struct {
		name string
		data []byte
		mime string
		want bool
		bad  bool
	}{
		{name: "jpeg app1", data: exifJPEG(t, img, 6), mime: "image/jpeg", want: true},
		{name: "jpeg xmp only", data: withJPEGSegments(encodeJPEG(t, img), jpegSegment(0xe1, []byte("http://ns.adobe.com/xap/1.0/\x00x"))), mime: "image/jpeg"},
		{name: "jpeg plain", data: encodeJPEG(t, img), mime: "image/jpeg"},
		{name: "jpeg not", data: []byte("GIF89a"), mime: "image/jpeg", bad: true},
		{name: "png eXIf", data: metaPNG(t, img, 8), mime: "image/png", want: true},
		{name: "png plain", data: encodePNG(t, img), mime: "image/png"},
		{name: "png eXIf after IDAT ignored", data: append(encodePNG(t, img)[:len(encodePNG(t, img))-12], pngChunk("eXIf", cameraExif(binary.LittleEndian, 6))...), mime: "image/png"},
		{name: "webp EXIF chunk", data: webpWithExif(t), mime: "image/webp", want: true},
		{name: "webp plain", data: webpFixture(t, "lossy"), mime: "image/webp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := findExif(bytes.NewReader(tt.data), tt.mime)
			if (err != nil) != tt.bad {
				t.Fatalf("err = %v", err)
			}
			if (raw != nil) != tt.want {
				t.Fatalf("found %d bytes, want found=%v", len(raw), tt.want)
			}
			if raw != nil {
				if info, err := parseExif(raw); err != nil || info.Make != "EdgeCam" {
					t.Fatalf("parse: %+v %v", info, err)
				}
			}
		})
	}
}

// webpWithExif is the 1×1 lossy WebP as an extended (VP8X) file with
// an EXIF chunk.
func webpWithExif(t testing.TB) []byte {
	vp8 := webpFixture(t, "lossy")[12:] // the VP8 chunk
	exif := cameraExif(binary.LittleEndian, 6)
	chunk := func(typ string, data []byte) []byte {
		c := []byte(typ)
		c = binary.LittleEndian.AppendUint32(c, uint32(len(data)))
		c = append(c, data...)
		if len(data)%2 == 1 {
			c = append(c, 0)
		}
		return c
	}
	vp8x := make([]byte, 10)
	vp8x[0] = 0x08 // EXIF present
	body := append(append(chunk("VP8X", vp8x), vp8...), chunk("EXIF", exif)...)
	out := []byte("RIFF")
	out = binary.LittleEndian.AppendUint32(out, uint32(4+len(body)))
	return append(append(out, "WEBP"...), body...)
}
