package process

import (
	"bytes"
	"context"
	"testing"
)

func TestScan(t *testing.T) {
	big := bytes.Repeat([]byte("lorem ipsum "), 10000)
	at := func(pos int) []byte {
		b := append([]byte(nil), big...)
		return append(append(b[:pos:pos], eicar()...), b[pos:]...)
	}
	tests := []struct {
		name   string
		data   []byte
		cfg    Config
		reason string
	}{
		{name: "clean text", data: big},
		{name: "eicar file", data: append(eicar(), "\r\n"...), reason: "infected"},
		{name: "eicar at start of large", data: at(0), reason: "infected"},
		{name: "eicar at end of large", data: append(append([]byte(nil), big...), eicar()...), reason: "infected"},
		// The middle of a large file is clamd's job, not ours.
		{name: "eicar in the middle", data: at(len(big) / 2)},
		{name: "docx", data: docxWithMacros(t, false)},
		{name: "docm", data: docxWithMacros(t, true), reason: "macro"},
		{name: "docm allowed", data: docxWithMacros(t, true), cfg: Config{AllowMacros: true}},
		{name: "jar as zip", data: zipOf(t, "x/readme.txt", "hi", "META-INF/MANIFEST.MF", "Main-Class: A", "A.class", "\xca\xfe"), reason: "executable"},
		{name: "apk as zip", data: zipOf(t, "AndroidManifest.xml", "x", "classes.dex", "dex\n035"), reason: "executable"},
		{name: "zip with a manifest only", data: zipOf(t, "META-INF/MANIFEST.MF", "x")},
		{name: "broken zip", data: []byte("PK\x03\x04 not really a zip"), reason: "corrupt"},
		{name: "ole doc", data: oleFile("WordDocument", "SummaryInformation")},
		{name: "ole word macros", data: oleFile("WordDocument", "Macros"), reason: "macro"},
		{name: "ole excel macros", data: oleFile("Workbook", "_VBA_PROJECT_CUR"), reason: "macro"},
		{name: "ole macros allowed", data: oleFile("Workbook", "_VBA_PROJECT_CUR"), cfg: Config{AllowMacros: true}},
		{name: "ole truncated", data: oleFile("VBA")[:600], reason: "corrupt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeFile(t, "f", tt.data)
			err := Scan(context.Background(), tt.cfg, p, Detection{Kind: KindFile, Size: int64(len(tt.data))})
			if Reason(err) != tt.reason || (tt.reason == "" && err != nil) {
				t.Fatalf("err = %v, want reason %q", err, tt.reason)
			}
		})
	}
}

// The OLE walker ends on a directory chain that loops.
func TestOLELoop(t *testing.T) {
	f := oleFile("WordDocument")
	// FAT entry of the directory sector (1) points back to itself.
	copy(f[512+4:], []byte{1, 0, 0, 0})
	if _, err := oleHasMacros(bytes.NewReader(f), int64(len(f))); Reason(err) != "corrupt" {
		t.Fatalf("err = %v", err)
	}
}
