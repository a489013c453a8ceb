package process

import (
	"bytes"
	"context"
	"encoding/binary"
	"image/jpeg"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestVideoWithoutFFmpeg(t *testing.T) {
	for _, bin := range []string{"none", filepath.Join(t.TempDir(), "no-such-ffmpeg")} {
		p := writeFile(t, "v", mp4File(600, 600*9, 1920, 1080, true))
		res, err := Process(context.Background(), Config{FFmpeg: bin, TempDir: t.TempDir()}, p, "clip.mov", "video/quicktime")
		if err != nil {
			t.Fatal(err)
		}
		if res.Kind != KindVideo || res.MIME != "video/mp4" || res.Ext != ".mp4" || res.Duration != 9*time.Second ||
			res.Width != 1080 || res.Height != 1920 || res.Output == p || res.Preview != "" {
			t.Fatalf("%s: %+v", bin, res)
		}
		// A copy with its metadata boxes blanked; this one has none.
		in, _ := os.ReadFile(p)
		if out, err := os.ReadFile(res.Output); err != nil || !bytes.Equal(in, out) {
			t.Errorf("%s: the served copy differs from a video without metadata boxes (%v)", bin, err)
		}
		if !strings.Contains(strings.Join(res.Notes, "|"), "ffmpeg not available") {
			t.Errorf("notes: %q", res.Notes)
		}
	}
}

// Blanking keeps every offset: the boxes that carry metadata become
// "free" boxes of the same size, zeroed; a 64-bit size and a box running
// to the end of the file are read as such.
func TestBlankBMFFMetadata(t *testing.T) {
	udta := box("udta", box("\xa9xyz", []byte("+48.8584+002.2945/")))
	big := box("meta", []byte("EdgeCam serial 42"))
	big64 := append([]byte{0, 0, 0, 1}, "meta"...)
	big64 = binary.BigEndian.AppendUint64(big64, uint64(16+len("EdgeCam serial 42")))
	big64 = append(big64, "EdgeCam serial 42"...)
	in := bytes.Join([][]byte{box("ftyp", []byte("isom")), box("moov", box("mvhd", make([]byte, 100)),
		box("trak", box("tkhd", make([]byte, 84)), udta), udta, big), big64, box("mdat", []byte("frames"))}, nil)
	p := writeFile(t, "v", in)
	out, err := blankBMFFMetadata(p, t.TempDir(), ".mp4")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(out)
	if len(b) != len(in) || bytes.Contains(b, []byte("48.8584")) || bytes.Contains(b, []byte("EdgeCam")) ||
		bytes.Count(b, []byte("free")) != 4 || !bytes.Contains(b, []byte("mvhd")) || !bytes.HasSuffix(b, box("mdat", []byte("frames"))) {
		t.Fatalf("blanked:\n%q\nfrom\n%q", b, in)
	}
	if info, err := readBMFF(bytes.NewReader(b), int64(len(b))); err != nil {
		t.Fatalf("the blanked file does not parse: %+v %v", info, err)
	}
}

// The ffmpeg path runs where ffmpeg is installed (.ci/run installs it;
// without it the test skips). The clip is made here: 160×120 with a
// sound track and metadata to strip, stored rotated 90° the way phones
// store portrait video (a display matrix, not turned pixels).
func TestVideoWithFFmpeg(t *testing.T) {
	bin, err := exec.LookPath("ffmpeg")
	if err != nil {
		t.Skip("ffmpeg not on PATH")
	}
	dir := t.TempDir()
	plain, src := filepath.Join(dir, "plain.mp4"), filepath.Join(dir, "in.mp4")
	for _, args := range [][]string{
		{"-f", "lavfi", "-i", "testsrc=size=160x120:rate=10", "-f", "lavfi", "-i", "sine=frequency=440",
			"-t", "1", "-metadata", "location=+48.8577+002.2950/", "-metadata", "title=" + secret, "-pix_fmt", "yuv420p", plain},
		// ffmpeg 5 writes a rotate tag on a copied stream as its display
		// matrix (newer ones also take -display_rotation).
		{"-i", plain, "-c", "copy", "-metadata:s:v:0", "rotate=90", src},
	} {
		out, err := exec.Command(bin, append([]string{"-nostdin", "-loglevel", "error", "-y"}, args...)...).CombinedOutput()
		if err != nil {
			t.Skipf("ffmpeg cannot make a test video: %v %s", err, out)
		}
	}
	res, err := Process(context.Background(), Config{TempDir: dir}, src, "in.mp4", "video/mp4")
	if err != nil {
		t.Fatal(err)
	}
	if res.Preview == "" || res.Placeholder == "" || res.Output == src || res.Duration < 900*time.Millisecond {
		t.Fatalf("%+v", res)
	}
	b, _ := os.ReadFile(res.Output)
	if strings.Contains(string(b), secret) || strings.Contains(string(b), "+48.8577") {
		t.Error("remuxed video keeps its metadata")
	}
	// Upright: the preview is portrait, the frame turned by ffmpeg.
	f, err := os.Open(res.Preview)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pc, err := jpeg.DecodeConfig(f)
	if err != nil {
		t.Fatalf("preview: %v", err)
	}
	if pc.Width >= pc.Height || res.Width != 120 || res.Height != 160 {
		t.Errorf("preview %d×%d, media %d×%d: want portrait 120×160", pc.Width, pc.Height, res.Width, res.Height)
	}
	// The copy without metadata keeps what a player needs: the rotation
	// (else it plays sideways), the sound, the length.
	if probe, err := exec.LookPath("ffprobe"); err == nil {
		out, err := exec.Command(probe, "-v", "error", "-show_entries", "stream=codec_type:stream_side_data=rotation",
			"-of", "compact", res.Output).CombinedOutput()
		if err != nil {
			t.Fatalf("ffprobe: %v %s", err, out)
		}
		got := string(out)
		if !strings.Contains(got, "codec_type=video") || !strings.Contains(got, "codec_type=audio") || !strings.Contains(got, "rotation=") {
			t.Errorf("remuxed streams:\n%s", got)
		}
	}
}
