package process

import (
	"bytes"
	"encoding/binary"
	"os"
	"testing"
	"time"
)

func TestReadBMFF(t *testing.T) {
	mvhd1 := make([]byte, 112) // version 1: 64-bit times
	mvhd1[0] = 1
	binary.BigEndian.PutUint32(mvhd1[20:], 600)
	binary.BigEndian.PutUint64(mvhd1[24:], 600*90)
	tests := []struct {
		name string
		data []byte
		want bmffInfo
		bad  bool
	}{
		{name: "landscape", data: mp4File(1000, 5500, 1920, 1080, false), want: bmffInfo{5500 * time.Millisecond, 1920, 1080}},
		{name: "portrait phone", data: mp4File(600, 600*12, 1920, 1080, true), want: bmffInfo{12 * time.Second, 1080, 1920}},
		{name: "mvhd v1", data: box("moov", box("mvhd", mvhd1)), want: bmffInfo{duration: 90 * time.Second}},
		{name: "unknown duration", data: mp4File(1000, 0xffffffff, 10, 10, false), want: bmffInfo{0, 10, 10}},
		{name: "zero timescale", data: mp4File(0, 100, 10, 10, false), want: bmffInfo{0, 10, 10}},
		{name: "no moov", data: box("ftyp", []byte("isom")), want: bmffInfo{}},
		{name: "box past end", data: append([]byte{0, 0, 1, 0}, "moov"...), bad: true},
		{name: "box too small", data: append([]byte{0, 0, 0, 4}, "moov"...), bad: true},
		{name: "64-bit size", data: append(append([]byte{0, 0, 0, 1}, "free"...), 0, 0, 0, 0, 0, 0, 0, 16), want: bmffInfo{}},
		{name: "deep nesting", data: nest(20), bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readBMFF(bytes.NewReader(tt.data), int64(len(tt.data)))
			if (err != nil) != tt.bad {
				t.Fatalf("err = %v", err)
			}
			if !tt.bad && got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func nest(n int) []byte {
	b := box("mvhd", make([]byte, 32))
	for i := 0; i < n; i++ {
		b = box("moov", b)
	}
	return b
}

func TestOggDuration(t *testing.T) {
	f := opusFile(48000 * 7 / 2)
	if got := oggDuration(f[:512], f); got != 3500*time.Millisecond {
		t.Fatalf("opus: %v", got)
	}
	if got := oggDuration([]byte("nope"), f); got != 0 {
		t.Fatalf("not ogg: %v", got)
	}
	// Vorbis: the rate comes from the identification header.
	id := append([]byte("\x01vorbis\x00\x00\x00\x00\x02"), 0x22, 0x56, 0, 0) // 22050 Hz
	id = append(id, make([]byte, 16)...)
	v := append(oggPage(0, 0, id), oggPage(22050*2, 1, []byte{1})...)
	if got := oggDuration(v, v); got != 2*time.Second {
		t.Fatalf("vorbis: %v", got)
	}
}

func TestMP3Duration(t *testing.T) {
	// MPEG-1 layer III, 128 kbit/s, 44.1 kHz, no padding: 417-byte frames.
	frame := append([]byte{0xff, 0xfb, 0x90, 0x00}, make([]byte, 413)...)
	id3 := []byte("ID3\x04\x00\x00\x00\x00\x00\x0a0123456789")
	cbr := append(id3, bytes.Repeat(frame, 100)...)
	size := int64(len(cbr))
	want := time.Duration(100*417*8) * time.Second / 128000
	if got := mp3Duration(cbr, size); got != want {
		t.Fatalf("cbr: %v, want %v", got, want)
	}
	// VBR with a Xing header after 32 bytes of side info: 1000 frames.
	xing := append([]byte{0xff, 0xfb, 0x90, 0x00}, make([]byte, 32)...)
	xing = append(xing, "Xing\x00\x00\x00\x01\x00\x00\x03\xe8"...)
	if got, want := mp3Duration(xing, 1<<20), time.Duration(1000*1152)*time.Second/44100; got != want {
		t.Fatalf("xing: %v, want %v", got, want)
	}
	if got := mp3Duration([]byte("no frames here"), 14); got != 0 {
		t.Fatalf("garbage: %v", got)
	}
}

// An Exif item in the meta box's idat (construction method 1) is
// blanked there; the picture item is not.
func TestBlankHEIFMetadataInIdat(t *testing.T) {
	be := binary.BigEndian
	infe := func(id uint16, typ string) []byte {
		b := be.AppendUint16([]byte{2, 0, 0, 0}, id)
		return box("infe", append(append(be.AppendUint16(b, 0), typ...), 0))
	}
	exif := "Exif\x00\x00MM\x00*GPSLatitude=48.8584"
	iloc := []byte{1, 0, 0, 0, 0x44, 0x00, 0, 2}
	for i, it := range []struct {
		method, off uint16
		n           int
	}{{1, 0, len(exif)}, {1, uint16(len(exif)), 7}} {
		iloc = be.AppendUint16(iloc, uint16(i+1))
		iloc = be.AppendUint16(iloc, it.method)
		iloc = be.AppendUint16(iloc, 0) // data reference index
		iloc = be.AppendUint16(iloc, 1) // one extent
		iloc = be.AppendUint32(iloc, uint32(it.off))
		iloc = be.AppendUint32(iloc, uint32(it.n))
	}
	in := append(box("ftyp", []byte("heic\x00\x00\x00\x00mif1heic")),
		box("meta", []byte{0, 0, 0, 0}, box("iinf", []byte{0, 0, 0, 0, 0, 2}, infe(1, "Exif"), infe(2, "hvc1")),
			box("iloc", iloc), box("idat", []byte(exif+"picture")))...)
	out, err := blankHEIFMetadata(writeFile(t, "h", in), t.TempDir(), ".heic")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(out)
	if len(b) != len(in) || bytes.Contains(b, []byte("GPSLatitude")) || !bytes.Contains(b, []byte("picture")) {
		t.Fatalf("blanked:\n%q\nfrom\n%q", b, in)
	}
}

func FuzzHEIFMetadataSpans(f *testing.F) {
	f.Add(heicFile(4032, 3024))
	f.Fuzz(func(t *testing.T, b []byte) {
		spans, err := heifMetadataSpans(bytes.NewReader(b), int64(len(b)))
		for _, s := range spans {
			if err == nil && (s[0] < 0 || s[1] > int64(len(b)) || s[1] < s[0]) {
				t.Fatalf("span %v outside %d bytes", s, len(b))
			}
		}
	})
}
