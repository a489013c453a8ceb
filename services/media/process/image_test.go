package process

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/color/palette"
	"image/gif"
	"image/png"
	"io"
	"os"
	"strings"
	"testing"
)

// metaMarkers must not appear in anything served: EXIF and XMP headers,
// ICC profiles, PNG metadata chunks, GIF comments, and the secret the
// fixtures plant in every metadata field.
var metaMarkers = []string{"Exif", "http://ns.adobe.com/xap", "ICC_PROFILE", "tEXt", "iTXt", "zTXt", "eXIf", "iCCP", "EdgeCam", secret}

func assertClean(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range metaMarkers {
		if bytes.Contains(b, []byte(m)) {
			t.Errorf("%s contains %q", path, m)
		}
	}
	// No GPS IFD either: with no EXIF block there is no TIFF header.
	if bytes.Contains(b, []byte("II*\x00")) || bytes.Contains(b, []byte("MM\x00*")) {
		t.Errorf("%s contains a TIFF header", path)
	}
}

func decodeFile(t *testing.T, path string) image.Image {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, _, err := image.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// near reports whether c is within tol of want on every channel (JPEG
// moves colours a little).
func near(c color.Color, want color.RGBA, tol int) bool {
	r, g, b, _ := c.RGBA()
	d := func(a uint32, w uint8) bool { x := int(a>>8) - int(w); return x >= -tol && x <= tol }
	return d(r, want.R) && d(g, want.G) && d(b, want.B)
}

// corners returns the colours a few pixels in from each corner.
func corners(img image.Image) [4]color.Color {
	b := img.Bounds()
	in := 2
	return [4]color.Color{img.At(b.Min.X+in, b.Min.Y+in), img.At(b.Max.X-1-in, b.Min.Y+in),
		img.At(b.Min.X+in, b.Max.Y-1-in), img.At(b.Max.X-1-in, b.Max.Y-1-in)}
}

func TestProcessImageOrientation(t *testing.T) {
	// The stored image is 40×20 with corners TL red, TR green, BL blue,
	// BR white. For each EXIF orientation, what must be at the displayed
	// corners (TL, TR, BL, BR) and the displayed size.
	tests := []struct {
		o    uint16
		w, h int
		want [4]color.RGBA
	}{
		{1, 40, 20, [4]color.RGBA{cTL, cTR, cBL, cBR}},
		{2, 40, 20, [4]color.RGBA{cTR, cTL, cBR, cBL}},
		{3, 40, 20, [4]color.RGBA{cBR, cBL, cTR, cTL}},
		{4, 40, 20, [4]color.RGBA{cBL, cBR, cTL, cTR}},
		{5, 20, 40, [4]color.RGBA{cTL, cBL, cTR, cBR}},
		{6, 20, 40, [4]color.RGBA{cBL, cTL, cBR, cTR}},
		{7, 20, 40, [4]color.RGBA{cBR, cTR, cBL, cTL}},
		{8, 20, 40, [4]color.RGBA{cTR, cBR, cTL, cBL}},
	}
	for _, format := range []string{"image/jpeg", "image/png"} {
		for _, tt := range tests {
			t.Run(format+"/"+string(rune('0'+tt.o)), func(t *testing.T) {
				var data []byte
				if format == "image/jpeg" {
					data = exifJPEG(t, quadrants(40, 20), tt.o)
				} else {
					data = metaPNG(t, quadrants(40, 20), tt.o)
				}
				res, err := Process(context.Background(), Config{TempDir: t.TempDir(), FFmpeg: "none"}, writeFile(t, "up", data), "x", "")
				if err != nil {
					t.Fatal(err)
				}
				if res.Width != tt.w || res.Height != tt.h {
					t.Fatalf("result size %d×%d, want %d×%d", res.Width, res.Height, tt.w, tt.h)
				}
				img := decodeFile(t, res.Output)
				if b := img.Bounds(); b.Dx() != tt.w || b.Dy() != tt.h {
					t.Fatalf("output %v, want %d×%d", b, tt.w, tt.h)
				}
				for i, c := range corners(img) {
					if !near(c, tt.want[i], 40) {
						t.Errorf("corner %d is %v, want %v", i, c, tt.want[i])
					}
				}
				assertClean(t, res.Output)
				assertClean(t, res.Preview)
				if res.Camera != "EdgeCam X1 "+secret || res.TakenAt.IsZero() {
					t.Errorf("metadata not read: %+v", res)
				}
				if !strings.Contains(strings.Join(res.Notes, "|"), "GPS") {
					t.Errorf("notes do not say GPS was removed: %q", res.Notes)
				}
			})
		}
	}
}

func TestProcessPNGNamedJPG(t *testing.T) {
	p := writeFile(t, "upload", metaPNG(t, quadrants(40, 20), 1))
	res, err := Process(context.Background(), Config{TempDir: t.TempDir()}, p, "holiday.jpg", "image/jpeg")
	if err != nil {
		t.Fatal(err)
	}
	if res.MIME != "image/png" || res.Ext != ".png" || res.OutputMIME != "image/png" || res.OutputExt != ".png" {
		t.Fatalf("got %+v", res)
	}
	b, _ := os.ReadFile(res.Output)
	if _, err := png.Decode(bytes.NewReader(b)); err != nil {
		t.Fatalf("output is not a PNG: %v", err)
	}
	if !strings.Contains(strings.Join(res.Notes, "|"), "content is image/png") {
		t.Errorf("notes: %q", res.Notes)
	}
	assertClean(t, res.Output)
}

func TestProcessImageScales(t *testing.T) {
	cfg := Config{TempDir: t.TempDir(), MaxDimension: 64, PreviewSide: 16}
	p := writeFile(t, "up", exifJPEG(t, quadrants(200, 100), 6))
	res, err := Process(context.Background(), cfg, p, "a.jpg", "image/jpeg")
	if err != nil {
		t.Fatal(err)
	}
	if res.Width != 32 || res.Height != 64 {
		t.Fatalf("served %d×%d, want 32×64", res.Width, res.Height)
	}
	if b := decodeFile(t, res.Output).Bounds(); b.Dx() != 32 || b.Dy() != 64 {
		t.Fatalf("output %v", b)
	}
	prev := decodeFile(t, res.Preview)
	if b := prev.Bounds(); b.Dx() != 8 || b.Dy() != 16 || res.PreviewMIME != "image/jpeg" {
		t.Fatalf("preview %v %s", b, res.PreviewMIME)
	}
	if !near(corners(prev)[0], cBL, 60) {
		t.Errorf("preview not upright: TL %v", corners(prev)[0])
	}
}

func TestPlaceholder(t *testing.T) {
	for name, img := range map[string]image.Image{
		"flat": quadrants(300, 200), "noise": noisy(320, 240), "tall": noisy(10, 320), "1px": quadrants(1, 1),
	} {
		ph := placeholder(img, 600)
		if !strings.HasPrefix(ph, "data:image/png;base64,") || len(ph) > 600 {
			t.Errorf("%s: %d bytes: %.60s", name, len(ph), ph)
		}
		t.Logf("%s: %d bytes", name, len(ph))
	}
	if ph := placeholder(noisy(320, 240), 50); ph != "" {
		t.Errorf("an impossible budget gives no placeholder, got %d bytes", len(ph))
	}
}

func TestProcessGIF(t *testing.T) {
	p := writeFile(t, "up", animatedGIF(t, 30, 20, 3))
	res, err := Process(context.Background(), Config{TempDir: t.TempDir()}, p, "a.gif", "image/gif")
	if err != nil {
		t.Fatal(err)
	}
	if res.Frames != 3 || res.OutputMIME != "image/gif" || res.PreviewMIME == "" {
		t.Fatalf("got %+v", res)
	}
	f, _ := os.Open(res.Output)
	defer f.Close()
	g, err := gif.DecodeAll(f)
	if err != nil || len(g.Image) != 3 {
		t.Fatalf("output: %v frames, %v", len(g.Image), err)
	}
	assertClean(t, res.Output)
	assertClean(t, res.Preview)
	prev := decodeFile(t, res.Preview)
	if prev.Bounds().Dx() != 30 {
		t.Errorf("preview %v", prev.Bounds())
	}
	// Frames are filled with palette entries 10, 50, 90.
	first := color.RGBAModel.Convert(palette.Plan9[10]).(color.RGBA)
	if c := prev.At(15, 10); !near(c, first, 24) {
		t.Errorf("preview is not the first frame: %v, want %v", c, first)
	}
}

// A GIF larger than MaxDimension is its first frame, scaled down, as PNG.
func TestProcessGIFLargerThanMaxDimension(t *testing.T) {
	p := writeFile(t, "up", animatedGIF(t, 100, 20, 3))
	res, err := Process(context.Background(), Config{TempDir: t.TempDir(), MaxDimension: 64}, p, "a.gif", "image/gif")
	if err != nil {
		t.Fatal(err)
	}
	if res.MIME != "image/gif" || res.OutputMIME != "image/png" || res.OutputExt != ".png" || res.Width != 64 || res.Height != 13 {
		t.Fatalf("got %+v", res)
	}
	img := decodeFile(t, res.Output)
	if b := img.Bounds(); b.Dx() != 64 || b.Dy() != 13 {
		t.Fatalf("output %v", b)
	}
	assertClean(t, res.Output)
	first := color.RGBAModel.Convert(palette.Plan9[10]).(color.RGBA)
	if c := img.At(32, 6); !near(c, first, 24) {
		t.Errorf("output is not the first frame: %v, want %v", c, first)
	}
}

func TestProcessWebP(t *testing.T) {
	for kind, want := range map[string]string{"lossy": "image/jpeg", "lossless": "image/png", "alpha": "image/png"} {
		p := writeFile(t, "up", webpFixture(t, kind))
		res, err := Process(context.Background(), Config{TempDir: t.TempDir()}, p, "w.webp", "image/webp")
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		if res.MIME != "image/webp" || res.OutputMIME != want || res.Width != 1 {
			t.Errorf("%s: got %+v, want output %s", kind, res, want)
		}
	}
	// An EXIF orientation in a WebP is applied too, and dropped.
	res, err := Process(context.Background(), Config{TempDir: t.TempDir()}, writeFile(t, "up", webpWithExif(t)), "w.webp", "")
	if err != nil || res.Camera == "" {
		t.Fatalf("%+v %v", res, err)
	}
	assertClean(t, res.Output)
}

func TestProcessImageCorrupt(t *testing.T) {
	dir := t.TempDir()
	full := encodeJPEG(t, noisy(64, 64))
	p := writeFile(t, "up", full[:len(full)/2])
	_, err := Process(context.Background(), Config{TempDir: dir}, p, "a.jpg", "")
	if Reason(err) != "corrupt" {
		t.Fatalf("err = %v", err)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("left %d files behind", len(left))
	}
}

func TestHEICDecoderHook(t *testing.T) {
	called := false
	cfg := Config{TempDir: t.TempDir(), HEICDecoder: func(io.Reader) (image.Image, error) {
		called = true
		return quadrants(40, 30), nil
	}}
	res, err := Process(context.Background(), cfg, writeFile(t, "up", heicFile(40, 30)), "IMG.HEIC", "image/heic")
	if err != nil || !called || res.Kind != KindImage || res.OutputMIME != "image/png" {
		t.Fatalf("%+v %v called=%v", res, err, called)
	}
	// Without a decoder, HEIC is a file with its dimensions read.
	res, err = Process(context.Background(), Config{TempDir: t.TempDir()}, writeFile(t, "up", heicFile(4032, 3024)), "IMG.HEIC", "")
	if err != nil || res.Kind != KindFile || res.Width != 4032 || res.Output == "" {
		t.Fatalf("%+v %v", res, err)
	}
}
