package process

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"
)

// xhtmlScript runs in a browser that renders the XML document it is in.
const xhtmlScript = `<h:script xmlns:h="http://www.w3.org/1999/xhtml">alert(document.domain)</h:script>`

func TestProcessKinds(t *testing.T) {
	tests := []struct {
		name, claim string
		data        []byte
		kind, out   string
		dur         time.Duration
	}{
		{name: "pdf", claim: "a.pdf", data: []byte("%PDF-1.5\n%âãÏÓ\n"), kind: KindPDF, out: "application/pdf"},
		{name: "opus", claim: "voice.opus", data: opusFile(48000 * 4), kind: KindAudio, out: "audio/ogg", dur: 4 * time.Second},
		{name: "m4a", claim: "v.m4a", data: append(box("ftyp", []byte("M4A \x00\x00\x00\x00M4A isom")), mp4File(44100, 44100*3, 0, 0, false)[28:]...),
			kind: KindAudio, out: "audio/x-m4a", dur: 3 * time.Second},
		{name: "svg served as download", claim: "x.svg", data: []byte(`<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>`),
			kind: KindFile, out: "application/octet-stream"},
		// Every XML type a browser would render, whatever its name.
		{name: "rss served as download", claim: "", data: []byte(`<?xml version="1.0"?><rss version="2.0">` + xhtmlScript + `</rss>`),
			kind: KindFile, out: "application/octet-stream"},
		{name: "atom served as download", claim: "", data: []byte(`<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom">` + xhtmlScript + `</feed>`),
			kind: KindFile, out: "application/octet-stream"},
		{name: "kml served as download", claim: "", data: []byte(`<?xml version="1.0"?><kml xmlns="http://www.opengis.net/kml/2.2">` + xhtmlScript + `</kml>`),
			kind: KindFile, out: "application/octet-stream"},
		{name: "html served as download", claim: "", data: []byte(`<!DOCTYPE html><html><script>alert(1)</script></html>`),
			kind: KindFile, out: "application/octet-stream"},
		{name: "text served as text", claim: "notes.txt", data: []byte("just words, nothing more\n"), kind: KindFile, out: "text/plain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeFile(t, "f", tt.data)
			res, err := Process(context.Background(), Config{TempDir: t.TempDir()}, p, tt.claim, "")
			if err != nil {
				t.Fatal(err)
			}
			if res.Kind != tt.kind || res.OutputMIME != tt.out || res.Duration != tt.dur || res.Output != p {
				t.Fatalf("got %+v", res)
			}
		})
	}
}

func TestProcessRejections(t *testing.T) {
	tests := []struct {
		name   string
		data   []byte
		claim  string
		reason string
		step   Step
	}{
		{"elf", []byte("\x7fELF\x02\x01\x01"), "cat.png", "executable", StepDetect},
		{"bomb", hugePNG(50000, 50000), "big.png", "too_many_pixels", StepCheckBomb},
		{"eicar", eicar(), "a.txt", "infected", StepScan},
		{"macro", docxWithMacros(t, true), "a.docx", "macro", StepScan},
		{"corrupt png", hugePNG(10, 10), "a.png", "corrupt", StepImage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			var steps []Step
			var failed Step
			cfg := Config{TempDir: dir, Observe: func(s Step, d time.Duration, err error) {
				steps = append(steps, s)
				if err != nil {
					failed = s
				}
			}}
			_, err := Process(context.Background(), cfg, writeFile(t, "f", tt.data), tt.claim, "")
			if Reason(err) != tt.reason || failed != tt.step || steps[len(steps)-1] != tt.step {
				t.Fatalf("err %v (reason %q), failed at %q after %v", err, Reason(err), failed, steps)
			}
			if left, _ := os.ReadDir(dir); len(left) != 0 {
				t.Errorf("left %d files", len(left))
			}
		})
	}
}

func TestProcessCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Process(ctx, Config{TempDir: t.TempDir()}, writeFile(t, "f", encodePNG(t, quadrants(4, 4))), "a.png", "")
	if !errors.Is(err, context.Canceled) || Reason(err) != "" {
		t.Fatalf("err = %v", err)
	}
}

func TestProcessObservesEveryStep(t *testing.T) {
	var steps []Step
	cfg := Config{TempDir: t.TempDir(), Observe: func(s Step, _ time.Duration, _ error) { steps = append(steps, s) }}
	if _, err := Process(context.Background(), cfg, writeFile(t, "f", encodeJPEG(t, quadrants(8, 8))), "a.jpg", ""); err != nil {
		t.Fatal(err)
	}
	want := []Step{StepDetect, StepCheckBomb, StepScan, StepMetadata, StepImage}
	if len(steps) != len(want) {
		t.Fatalf("steps %v, want %v", steps, want)
	}
	for i := range want {
		if steps[i] != want[i] {
			t.Fatalf("steps %v, want %v", steps, want)
		}
	}
}
