package process

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/edgechat/edgechat/services/media/process/processtest"
)

func TestCheckBomb(t *testing.T) {
	gif3 := animatedGIF(t, 20, 10, 3)
	tests := []struct {
		name   string
		data   []byte
		mime   string
		cfg    Config
		want   Bounds
		reason string
	}{
		{name: "png ok", data: encodePNG(t, quadrants(30, 20)), mime: "image/png", want: Bounds{30, 20, 1, 600}},
		{name: "jpeg ok", data: encodeJPEG(t, quadrants(30, 20)), mime: "image/jpeg", want: Bounds{30, 20, 1, 600}},
		{name: "webp ok", data: webpFixture(t, "lossless"), mime: "image/webp", want: Bounds{1, 1, 1, 1}},
		{name: "png 50000 square", data: hugePNG(50000, 50000), mime: "image/png", reason: "too_many_pixels"},
		{name: "png just over", data: hugePNG(10001, 5000), mime: "image/png", reason: "too_many_pixels"},
		{name: "png at limit", data: hugePNG(10000, 5000), mime: "image/png", want: Bounds{10000, 5000, 1, 50_000_000}},
		{name: "jpeg over small limit", data: encodeJPEG(t, quadrants(30, 20)), mime: "image/jpeg", cfg: Config{MaxPixels: 599}, reason: "too_many_pixels"},
		{name: "gif 3 frames", data: gif3, mime: "image/gif", want: Bounds{20, 10, 3, 600}},
		{name: "gif frame limit", data: gif3, mime: "image/gif", cfg: Config{MaxFrames: 2}, reason: "too_many_frames"},
		{name: "gif total pixels", data: gif3, mime: "image/gif", cfg: Config{MaxTotalPixels: 500}, reason: "too_many_frames"},
		{name: "gif canvas", data: gif3, mime: "image/gif", cfg: Config{MaxPixels: 199}, reason: "too_many_pixels"},
		{name: "gif truncated", data: gif3[:40], mime: "image/gif", reason: "corrupt"},
		{name: "png garbage", data: []byte("\x89PNG\r\n\x1a\nnope"), mime: "image/png", reason: "corrupt"},
		{name: "jpeg scans at the limit", data: processtest.JPEGScanBomb(64, 48, 2), mime: "image/jpeg", cfg: Config{MaxScans: 3}, want: Bounds{64, 48, 1, 64 * 48}},
		{name: "jpeg scans over the limit", data: processtest.JPEGScanBomb(64, 48, 3), mime: "image/jpeg", cfg: Config{MaxScans: 3}, reason: "too_many_scans"},
		{name: "jpeg thousands of scans", data: processtest.JPEGScanBomb(4000, 4000, 3000), mime: "image/jpeg", reason: "too_many_scans"},
		// Stuffed 0xFF bytes in the entropy data are no markers: one scan.
		{name: "noisy baseline jpeg, one scan", data: encodeJPEG(t, noisy(200, 200)), mime: "image/jpeg", cfg: Config{MaxScans: 1}, want: Bounds{200, 200, 1, 40000}},
		{name: "heic ispe", data: heicFile(4032, 3024), mime: "image/heic", want: Bounds{4032, 3024, 1, 4032 * 3024}},
		{name: "heic bomb", data: heicFile(60000, 60000), mime: "image/heic", reason: "too_many_pixels"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeFile(t, "f", tt.data)
			got, err := CheckBomb(tt.cfg, p, Detection{Kind: KindImage, MIME: tt.mime})
			if tt.reason != "" {
				if Reason(err) != tt.reason {
					t.Fatalf("err = %v, want reason %q", err, tt.reason)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

// heicFile is an ftyp and a meta box with a thumbnail and a primary ispe.
func heicFile(w, h uint32) []byte {
	ispe := func(w, h uint32) []byte {
		b := make([]byte, 12)
		binary.BigEndian.PutUint32(b[4:], w)
		binary.BigEndian.PutUint32(b[8:], h)
		return box("ispe", b)
	}
	return append(box("ftyp", []byte("heic\x00\x00\x00\x00mif1heic")),
		box("meta", []byte{0, 0, 0, 0}, box("hdlr", make([]byte, 24)),
			box("iprp", box("ipco", ispe(320, 240), ispe(w, h))))...)
}

// A GIF of many frames is refused at the frame over the limit, without
// reading the rest: the walker must not need the whole file.
func TestWalkGIFStopsEarly(t *testing.T) {
	one := animatedGIF(t, 4, 4, 2)
	// Repeat the second frame's blocks a million times, lazily.
	r := bufio.NewReader(&repeatReader{head: one[:len(one)-1], n: 1 << 30})
	_, err := walkGIF(r, 1<<20, 1000, 1<<40)
	if Reason(err) != "too_many_frames" {
		t.Fatalf("err = %v", err)
	}
}

// repeatReader yields head then zero-padded frame blocks forever: each
// "frame" is an image descriptor with an empty data stream.
type repeatReader struct {
	head []byte
	n    int
	buf  bytes.Buffer
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if len(r.head) > 0 {
		n := copy(p, r.head)
		r.head = r.head[n:]
		return n, nil
	}
	if r.buf.Len() == 0 {
		r.buf.Write([]byte{0x2c, 0, 0, 0, 0, 4, 0, 4, 0, 0, 2, 0})
	}
	return r.buf.Read(p)
}
