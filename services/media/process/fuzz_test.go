package process

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"testing"
)

// Fuzz tests for every parser of outside input. Each must neither panic
// nor return a rejection outside the documented set; `go test` runs the
// seeds, `go test -fuzz=FuzzX` explores.

func FuzzDetect(f *testing.F) {
	for _, s := range [][]byte{encodePNG(f, quadrants(4, 4)), encodeJPEG(f, quadrants(4, 4)), []byte("\x7fELF"),
		[]byte("#!/bin/sh\n"), []byte("@echo off"), []byte("MZ"), docxWithMacros(f, true), oleFile("VBA"),
		mp4File(1, 1, 1, 1, false), opusFile(1), webpFixture(f, "alpha"), []byte("%PDF-"), {}} {
		f.Add(s, "a.jpg", "image/jpeg")
	}
	f.Fuzz(func(t *testing.T, head []byte, name, ct string) {
		d, err := detectBytes(Config{}, head, name, ct)
		if err != nil {
			if r := Reason(err); r != "executable" {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if d.Kind == "" || d.MIME == "" || d.Ext == "" {
			t.Fatalf("incomplete detection %+v", d)
		}
	})
}

func FuzzWalkGIF(f *testing.F) {
	f.Add(animatedGIF(f, 3, 2, 3))
	f.Add([]byte("GIF89a\x01\x00\x01\x00\x80\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := walkGIF(bufio.NewReader(bytes.NewReader(b)), 1<<20, 100, 1<<22)
		if err == nil && (got.Frames == 0 || got.Frames > 100) {
			t.Fatalf("accepted %+v", got)
		}
		if r := Reason(err); err != nil && r != "corrupt" && r != "too_many_frames" && r != "too_many_pixels" {
			t.Fatalf("unexpected error %v", err)
		}
	})
}

func FuzzParseExif(f *testing.F) {
	f.Add(cameraExif(binary.LittleEndian, 6))
	f.Add(cameraExif(binary.BigEndian, 8))
	f.Add([]byte("II*\x00\x08\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		info, _ := parseExif(b)
		if info.Orientation < 0 || info.Orientation > 8 {
			t.Fatalf("orientation %d", info.Orientation)
		}
	})
}

func FuzzFindExif(f *testing.F) {
	f.Add(exifJPEG(f, quadrants(4, 4), 6), uint8(0))
	f.Add(metaPNG(f, quadrants(4, 4), 6), uint8(1))
	f.Add(webpWithExif(f), uint8(2))
	mimes := []string{"image/jpeg", "image/png", "image/webp"}
	f.Fuzz(func(t *testing.T, b []byte, which uint8) {
		raw, err := findExif(bytes.NewReader(b), mimes[int(which)%3])
		if err == nil && len(raw) > maxExif {
			t.Fatalf("%d bytes of EXIF", len(raw))
		}
		if raw != nil {
			parseExif(raw)
		}
	})
}

func FuzzReadBMFF(f *testing.F) {
	f.Add(mp4File(1000, 5000, 1920, 1080, true))
	f.Add(heicFile(4032, 3024))
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := readBMFF(bytes.NewReader(b), int64(len(b)))
		if err != nil && Reason(err) != "corrupt" {
			t.Fatalf("unexpected error %v", err)
		}
		if info.duration < 0 || info.width < 0 || info.height < 0 {
			t.Fatalf("negative %+v", info)
		}
	})
}

func FuzzOggMP3(f *testing.F) {
	f.Add(opusFile(48000))
	f.Add(append([]byte{0xff, 0xfb, 0x90, 0x00}, make([]byte, 500)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		if d := oggDuration(b, b); d < 0 {
			t.Fatal(d)
		}
		if d := mp3Duration(b, int64(len(b))); d < 0 {
			t.Fatal(d)
		}
	})
}

func FuzzOLE(f *testing.F) {
	f.Add(oleFile("VBA"))
	f.Add(oleFile("WordDocument"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, err := oleHasMacros(bytes.NewReader(b), int64(len(b)))
		if err != nil && Reason(err) != "corrupt" {
			t.Fatalf("unexpected error %v", err)
		}
	})
}

func FuzzParseClamdReply(f *testing.F) {
	for _, s := range []string{"stream: OK\x00", "stream: Eicar-Signature FOUND\x00", "INSTREAM size limit exceeded. ERROR\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := parseClamdReply(s)
		switch Reason(err) {
		case "", "infected", "scan_unavailable":
		default:
			t.Fatalf("unexpected %v", err)
		}
		if err == nil && !bytes.Contains([]byte(s), []byte("stream: OK")) {
			t.Fatalf("%q accepted as clean", s)
		}
	})
}
