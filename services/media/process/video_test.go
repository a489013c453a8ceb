package process

import (
	"context"
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
			res.Width != 1080 || res.Height != 1920 || res.Output != p || res.Preview != "" {
			t.Fatalf("%s: %+v", bin, res)
		}
		if !strings.Contains(strings.Join(res.Notes, "|"), "ffmpeg not available") {
			t.Errorf("notes: %q", res.Notes)
		}
	}
}

// The ffmpeg path runs only where ffmpeg is installed (it is not in CI).
func TestVideoWithFFmpeg(t *testing.T) {
	bin, err := exec.LookPath("ffmpeg")
	if err != nil {
		t.Skip("ffmpeg not on PATH")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "in.mp4")
	out, err := exec.Command(bin, "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10",
		"-t", "1", "-metadata", "location=+48.8577+002.2950/", "-metadata", "title="+secret, "-pix_fmt", "yuv420p", src).CombinedOutput()
	if err != nil {
		t.Skipf("ffmpeg cannot make a test video: %v %s", err, out)
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
}
