package process

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"os"
	"path/filepath"
	"strings"

	"github.com/gabriel-vasile/mimetype"
)

// headSize is how much of the file Detect reads. mimetype looks at 3 KiB
// by default; the script heuristics look a little further.
const headSize = 4096

// Detection is what the bytes are, whatever the upload claimed.
type Detection struct {
	Kind string // KindImage, KindVideo, KindAudio, KindPDF or KindFile
	MIME string // the real type, from the bytes
	// Ext is the extension (".png") that fits MIME: a PNG uploaded as
	// "x.jpg" gets ".png". For plain files whose content has no more
	// specific type than text/plain or octet-stream the claimed
	// extension is kept (a ".md" stays ".md").
	Ext      string
	Size     int64
	Mismatch bool // the claimed type or extension disagreed with the bytes
	Notes    []string
}

// Kinds of upload.
const (
	KindImage = "image"
	KindVideo = "video"
	KindAudio = "audio"
	KindPDF   = "pdf"
	KindFile  = "file"
)

// mediaType is what an allowed media MIME becomes. exts lists the
// extensions that match it; the first is the corrected one.
type mediaType struct {
	kind string
	exts []string
}

// mediaTypes are the types processed as media. Anything else that is not
// refused below is an attachment of kind "file", stored as uploaded.
var mediaTypes = map[string]mediaType{
	"image/jpeg":          {KindImage, []string{".jpg", ".jpeg", ".jpe", ".jfif"}},
	"image/png":           {KindImage, []string{".png"}},
	"image/apng":          {KindImage, []string{".png", ".apng"}},
	"image/gif":           {KindImage, []string{".gif"}},
	"image/webp":          {KindImage, []string{".webp"}},
	"image/heic":          {KindImage, []string{".heic"}},
	"image/heic-sequence": {KindImage, []string{".heic"}},
	"image/heif":          {KindImage, []string{".heif", ".heic"}},
	"image/heif-sequence": {KindImage, []string{".heif", ".heic"}},
	"video/mp4":           {KindVideo, []string{".mp4"}},
	"video/quicktime":     {KindVideo, []string{".mov", ".qt"}},
	"video/x-m4v":         {KindVideo, []string{".m4v", ".mp4"}},
	"video/3gpp":          {KindVideo, []string{".3gp"}},
	"audio/mpeg":          {KindAudio, []string{".mp3"}},
	"audio/x-m4a":         {KindAudio, []string{".m4a"}},
	"audio/mp4":           {KindAudio, []string{".m4a", ".mp4"}},
	"audio/ogg":           {KindAudio, []string{".ogg", ".oga", ".opus"}},
	"audio/webm":          {KindAudio, []string{".webm", ".weba"}}, // audio-only WebM (browsers' voice notes); not a mimetype result, see detectBytes
	"application/pdf":     {KindPDF, []string{".pdf"}},
}

// executableMIMEs are refused whatever the upload claims (matched on the
// detected type and its parents in mimetype's tree). Java classes and
// jars, Android packages, MSI installers, shortcuts, WebAssembly and
// Python bytecode are in: each runs code on a double click or an
// install, and a chat has no business passing them between people.
var executableMIMEs = []string{
	"application/x-elf",
	"application/vnd.microsoft.portable-executable",
	"application/x-msdownload",
	"application/x-mach-binary",
	"application/x-java-applet",
	"application/java-archive",
	"application/vnd.android.package-archive",
	"application/x-ms-installer",
	"application/x-ms-shortcut",
	"application/vnd.ms-htmlhelp",
	"application/x-shockwave-flash",
	"application/wasm",
	"application/x-bytecode.python",
	"text/x-shellscript",
	"text/x-python",
	"text/x-perl",
	"text/x-ruby",
	"text/x-php",
	"text/x-lua",
	"text/x-tcl",
	"text/javascript",
}

// executableExts are refused by name even when the bytes are plain text:
// a batch file, PowerShell or VBScript is text that no content check
// recognises for sure, and what makes it dangerous is the name under
// which the recipient saves and opens it.
var executableExts = map[string]bool{
	".exe": true, ".dll": true, ".scr": true, ".com": true, ".pif": true,
	".cpl": true, ".msi": true, ".msp": true, ".msc": true, ".lnk": true,
	".bat": true, ".cmd": true, ".ps1": true, ".psm1": true, ".psd1": true,
	".vbs": true, ".vbe": true, ".js": true, ".jse": true, ".mjs": true,
	".wsf": true, ".wsh": true, ".hta": true, ".reg": true, ".inf": true,
	".jar": true, ".class": true, ".apk": true, ".app": true, ".sh": true,
	".bash": true, ".zsh": true, ".csh": true, ".ksh": true, ".command": true,
	".py": true, ".pyc": true, ".pl": true, ".rb": true, ".php": true,
	".elf": true, ".run": true, ".deb": true, ".rpm": true,
	".dmg": true, ".pkg": true, ".appx": true, ".msix": true, ".gadget": true,
	".scf": true, ".url": true, ".iso": true, ".img": true, ".vhd": true,
	".vhdx": true, ".xll": true, ".chm": true, ".sys": true, ".drv": true,
}

// scriptMarkers are lower-case strings whose presence near the start of
// a text file means it is a Windows script rather than a document. They
// are idioms of scripts (downloaders and launchers above all), chosen so
// that prose is unlikely to contain them; a text that quotes them is
// refused too, the price of recognising batch/VBS/PowerShell at all.
var scriptMarkers = []string{
	"@echo off",
	"wscript.shell",
	"wscript.createobject",
	"createobject(\"scripting.filesystemobject\")",
	"createobject(\"msxml2.xmlhttp\")",
	"new-object net.webclient",
	"new-object system.net.webclient",
	"invoke-expression",
	"-encodedcommand",
	"[system.convert]::frombase64string",
	"set-executionpolicy",
	"<script language=\"vbscript\"",
	"<script language=\"jscript\"",
	"<hta:application",
}

// inlineSafe reports whether a file of type mt may be served with that
// type; every other type is allowed as an attachment but served as
// application/octet-stream. An allow-list, not a list of the dangerous:
// a browser renders any XML type (application/rss+xml, the KML of
// mapping apps, ...) as XML, where an XHTML-namespaced <script> runs in
// the origin that serves it, and the type detector knows dozens of them.
func inlineSafe(mt string) bool {
	switch {
	case strings.Contains(mt, "xml") || strings.Contains(mt, "html"):
		return false // image/svg+xml above all
	case strings.HasPrefix(mt, "image/"), strings.HasPrefix(mt, "audio/"), strings.HasPrefix(mt, "video/"):
		return true
	}
	return mt == "application/pdf" || mt == "text/plain"
}

// Detect finds the real type of the file at path from its bytes. The
// claimed name and Content-Type are only hints: they are compared and a
// mismatch is noted, never trusted. Executables and scripts are refused
// (ErrExecutable) by content and, for scripts that content cannot tell,
// by the claimed extension.
func Detect(cfg Config, path, claimedName, claimedType string) (Detection, error) {
	f, err := os.Open(path)
	if err != nil {
		return Detection{}, fmt.Errorf("detect: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Detection{}, fmt.Errorf("detect: %w", err)
	}
	head := make([]byte, headSize)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return Detection{}, fmt.Errorf("detect: %w", err)
	}
	d, err := detectBytes(cfg, head[:n], claimedName, claimedType)
	d.Size = st.Size()
	return d, err
}

// detectBytes is Detect on the first bytes of the file; it is the part
// fuzzed.
func detectBytes(cfg Config, head []byte, claimedName, claimedType string) (Detection, error) {
	if why := executableMagic(head); why != "" {
		return Detection{}, fmt.Errorf("%w: %s", ErrExecutable, why)
	}
	m := mimetype.Detect(head)
	for t := m; t != nil; t = t.Parent() {
		for _, x := range executableMIMEs {
			if t.Is(x) {
				return Detection{}, fmt.Errorf("%w: content is %s", ErrExecutable, m.String())
			}
		}
	}
	isText := false
	for t := m; t != nil; t = t.Parent() {
		if t.Is("text/plain") {
			isText = true
		}
	}
	if isText {
		if marker := scriptMarker(head); marker != "" {
			return Detection{}, fmt.Errorf("%w: script (%q)", ErrExecutable, marker)
		}
	}
	claimedExt := strings.ToLower(filepath.Ext(claimedName))
	// Windows drops the dots and spaces that end a name when it saves a
	// file: "run.bat." is run.bat on the recipient's disk.
	if ext := strings.ToLower(filepath.Ext(strings.TrimRight(claimedName, ". "))); executableExts[ext] {
		return Detection{}, fmt.Errorf("%w: name ends in %s", ErrExecutable, ext)
	}

	mt := baseMIME(m.String())
	if mt == "video/webm" {
		// mimetype says video/webm for any WebM; one with audio tracks
		// only (what MediaRecorder records) is audio. Video WebM stays a
		// file: the video step reads MP4 only.
		if wi, _ := readWebM(bytes.NewReader(head), int64(len(head))); wi.audio > 0 && wi.video == 0 {
			mt = "audio/webm"
		}
	}
	d := Detection{MIME: mt}
	if media, ok := mediaTypes[mt]; ok {
		d.Kind = media.kind
		d.Ext = media.exts[0]
		if mt == "audio/ogg" && bytes.Contains(head, []byte("OpusHead")) {
			d.Ext = ".opus"
		}
		if isHEIC(mt) && cfg.HEICDecoder == nil {
			d.Kind = KindFile
			d.Notes = append(d.Notes, "no HEIC decoder configured: stored as a file, its Exif and XMP items blanked")
		}
		if mt == "image/apng" {
			d.Notes = append(d.Notes, "animated PNG: only the default image is kept")
		}
		d.Mismatch = claimedExt != "" && !contains(media.exts, claimedExt)
	} else {
		d.Kind = KindFile
		d.Ext = m.Extension()
		generic := mt == "text/plain" || mt == "application/octet-stream"
		if generic && claimedExt != "" || d.Ext == "" {
			d.Ext = claimedExt
		}
		if d.Ext == "" {
			d.Ext = ".bin"
		}
		d.Mismatch = claimedExt != "" && claimedExt != d.Ext && !generic
	}
	if ct := baseMIME(claimedType); ct != "" && ct != "application/octet-stream" && !m.Is(ct) {
		d.Mismatch = true
	}
	if d.Mismatch {
		d.Notes = append(d.Notes, fmt.Sprintf("claimed %q as %q; content is %s", claimedName, claimedType, mt))
	}
	if len(cfg.Accept) > 0 && !contains(cfg.Accept, d.Kind) {
		return d, fmt.Errorf("%w: %s is a %s", ErrTypeNotAllowed, mt, d.Kind)
	}
	return d, nil
}

// executableMagic recognises native executables by their first bytes,
// independently of mimetype, so that a change in that library's tree
// cannot let one through. It returns what it found, or "".
func executableMagic(b []byte) string {
	b = bytes.TrimPrefix(b, []byte("\xef\xbb\xbf"))
	switch {
	case bytes.HasPrefix(b, []byte("\x7fELF")):
		return "ELF header"
	case bytes.HasPrefix(b, []byte("MZ")):
		return "MZ (DOS/PE) header"
	case bytes.HasPrefix(b, []byte{0xfe, 0xed, 0xfa, 0xce}), bytes.HasPrefix(b, []byte{0xfe, 0xed, 0xfa, 0xcf}),
		bytes.HasPrefix(b, []byte{0xce, 0xfa, 0xed, 0xfe}), bytes.HasPrefix(b, []byte{0xcf, 0xfa, 0xed, 0xfe}):
		return "Mach-O header"
	case bytes.HasPrefix(b, []byte{0xca, 0xfe, 0xba, 0xbe}):
		// Both a universal Mach-O binary and a Java class start so.
		return "Mach-O universal or Java class header"
	case bytes.HasPrefix(b, []byte("#!")):
		return "shebang script"
	case bytes.HasPrefix(b, []byte("\x00asm")):
		return "WebAssembly module"
	}
	return ""
}

// scriptMarker returns the first scriptMarkers entry found in a text
// head, or "".
func scriptMarker(head []byte) string {
	lower := bytes.ToLower(head)
	for _, m := range scriptMarkers {
		if bytes.Contains(lower, []byte(m)) {
			return m
		}
	}
	return ""
}

func isHEIC(mt string) bool { return strings.HasPrefix(mt, "image/hei") }

// baseMIME lower-cases a Content-Type and drops its parameters.
func baseMIME(ct string) string {
	if ct == "" {
		return ""
	}
	if mt, _, err := mime.ParseMediaType(ct); err == nil {
		return mt
	}
	mt, _, _ := strings.Cut(ct, ";")
	return strings.ToLower(strings.TrimSpace(mt))
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
