package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	edgechat "github.com/edgechat/edgechat/clients/go"
)

// fakeUpload is what the model asked UploadMedia to send.
type fakeUpload struct {
	name, ctype string
	size        int64
	data        []byte
	progress    [][2]int64
}

func (f *fakeClient) UploadMedia(_ context.Context, r io.Reader, size int64, name, ctype string, progress func(sent, total int64)) (edgechat.MediaInfo, error) {
	up := fakeUpload{name: name, ctype: ctype, size: size}
	buf := make([]byte, 4)
	for {
		n, err := r.Read(buf)
		up.data = append(up.data, buf[:n]...)
		if n > 0 {
			progress(int64(len(up.data)), size)
			up.progress = append(up.progress, [2]int64{int64(len(up.data)), size})
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return edgechat.MediaInfo{}, err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.uploads = append(f.uploads, up)
	if f.uploadErr != nil {
		return edgechat.MediaInfo{}, f.uploadErr
	}
	id := fmt.Sprintf("up%d", len(f.uploads))
	if f.files == nil {
		f.files = map[string][]byte{}
	}
	f.files[id] = up.data
	return edgechat.MediaInfo{ID: id, Kind: edgechat.MediaImage, Mime: "image/png", Name: name, Size: size, Width: 2, Height: 1}, nil
}

func (f *fakeClient) DownloadMedia(_ context.Context, id string, w io.Writer, preview bool) (int64, error) {
	f.mu.Lock()
	data, ok := f.files[id]
	f.mu.Unlock()
	if !ok || preview {
		return 0, fmt.Errorf("download %s: %w", id, edgechat.ErrNotFound)
	}
	n, err := w.Write(data)
	return int64(n), err
}

func TestProgressBar(t *testing.T) {
	for _, tc := range []struct {
		sent, total int64
		want        string
	}{
		{0, 100, "░░░░░░░░░░   0%"},
		{45, 100, "████░░░░░░  45%"},
		{99, 100, "█████████░  99%"}, // full only when everything is sent
		{100, 100, "██████████ 100%"},
		{150, 100, "██████████ 100%"},
		{-1, 100, "░░░░░░░░░░   0%"},
		{0, 0, "░░░░░░░░░░   0%"},
		{3 << 30, 4 << 30, "███████░░░  75%"}, // no overflow on large files
	} {
		if got := progressBar(tc.sent, tc.total, 10); got != tc.want {
			t.Errorf("progressBar(%d, %d) = %q, want %q", tc.sent, tc.total, got, tc.want)
		}
	}
}

func TestMediaLabels(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 999: "999 B", 1000: "1.0 KB", 9960: "10 KB", 482113: "482 KB", 1_200_000: "1.2 MB", 25 << 20: "26 MB", 999_999: "1.0 MB", 3_000_000_000: "3.0 GB"} {
		if got := humanSize(n); got != want {
			t.Errorf("humanSize(%d) = %q, want %q", n, got, want)
		}
	}
	for _, tc := range []struct {
		in   edgechat.MediaInfo
		want string
	}{
		{edgechat.MediaInfo{Kind: "image", Name: "IMG_0042.jpg", Size: 482113, Width: 2560, Height: 1920}, "[image IMG_0042.jpg 2560×1920 482 KB]"},
		{edgechat.MediaInfo{Kind: "file", Name: "report.pdf", Size: 1_200_000}, "[file report.pdf 1.2 MB]"},
		{edgechat.MediaInfo{Kind: "video", Name: "clip.mp4", Width: 1920, Height: 1080, DurationMs: 42_400, Size: 12_300_000}, "[video clip.mp4 1920×1080 0:42 12 MB]"},
		{edgechat.MediaInfo{Kind: "audio", Name: "talk.m4a", DurationMs: 3_725_000, Size: 900}, "[audio talk.m4a 1:02:05 900 B]"},
		{edgechat.MediaInfo{Name: ""}, "[file (unnamed)]"},
		// Someone else's name must not drive the terminal or hide an extension.
		{edgechat.MediaInfo{Kind: "file", Name: "a\x1b[2Jb\u202Egpj.exe"}, "[file a?[2Jb?gpj.exe]"},
	} {
		if got := mediaLabel(&tc.in); got != tc.want {
			t.Errorf("mediaLabel(%+v) = %q, want %q", tc.in, got, tc.want)
		}
	}
	m := edgechat.Message{Type: "media", Body: "the view", Media: &edgechat.MediaInfo{Kind: "image", Name: "a.jpg", Size: 2000}}
	if got := messageText(m); got != "[image a.jpg 2.0 KB] the view" {
		t.Errorf("messageText = %q", got)
	}
}

func TestSafeFileName(t *testing.T) {
	long := strings.Repeat("é", 150) + ".jpg" // 300 bytes of stem
	for _, tc := range []struct{ in, want string }{
		{"report.pdf", "report.pdf"},
		{"IMG 0042.JPG", "IMG 0042.JPG"},
		{"../../etc/passwd", "_.._etc_passwd"},
		{`C:\Windows\evil.exe`, "C__Windows_evil.exe"},
		{"..", "media-k3v9"},
		{"", "media-k3v9"},
		{".bashrc", "bashrc"},
		{"name. ", "name"},
		{"a\x1b[31mb\x00.txt", "a[31mb.txt"},
		{"what?<>|*.txt", "what_____.txt"},
		{"CON.txt", "_CON.txt"},
		{"lpt1", "_lpt1"},
		{"x.averyveryverylongextension", "x.averyveryverylongextension"},
	} {
		if got := safeFileName(tc.in, "media-k3v9"); got != tc.want {
			t.Errorf("safeFileName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	got := safeFileName(long, "x")
	if len(got) > maxFileNameLen || !strings.HasSuffix(got, ".jpg") || !strings.HasPrefix(got, "éé") || !utf8Valid(got) {
		t.Errorf("long name cut to %q (%d bytes)", got, len(got))
	}
	if got := safeFileName("..", "\x00. "); got != "media" {
		t.Errorf("nothing usable: %q", got)
	}
}

func utf8Valid(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }

func TestCreateUniqueNeverOverwrites(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a.txt"), []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	var names []string
	for range 2 {
		f, path, err := createUnique(dir, "a.txt")
		if err != nil {
			t.Fatal(err)
		}
		_ = f.Close()
		names = append(names, filepath.Base(path))
	}
	if names[0] != "a (1).txt" || names[1] != "a (2).txt" {
		t.Fatalf("names %v", names)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "a.txt")); string(b) != "mine" {
		t.Fatalf("existing file changed: %q", b)
	}
	// A symlink in the way is not followed.
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(dir, "b")); err != nil {
		t.Skip("no symlinks here:", err)
	}
	f, path, err := createUnique(dir, "b")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString("new")
	_ = f.Close()
	if filepath.Base(path) != "b (1)" {
		t.Fatalf("path %s", path)
	}
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Fatalf("wrote through the symlink: %q", b)
	}
}

func TestParseAttach(t *testing.T) {
	for _, tc := range []struct{ in, path, caption, err string }{
		{"photo.jpg", "photo.jpg", "", ""},
		{"  ~/p/photo.jpg   the view  ", "~/p/photo.jpg", "the view", ""},
		{`"my photo.jpg" look`, "my photo.jpg", "look", ""},
		{`'my photo.jpg'`, "my photo.jpg", "", ""},
		{`"my photo.jpg`, "", "", "no closing"},
		{`"a"b`, "", "", "space must follow"},
		{`""`, "", "", "usage"},
		{"", "", "", "usage"},
	} {
		path, caption, err := parseAttach(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseAttach(%q): err %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || path != tc.path || caption != tc.caption {
			t.Errorf("parseAttach(%q) = %q, %q, %v", tc.in, path, caption, err)
		}
	}
}

func TestStateUploadProgressAndNthMedia(t *testing.T) {
	s := newState("me")
	s.openConv("bob")
	s.addPendingMedia("bob", "c-up", edgechat.MediaInfo{Name: "a.png", Size: 4000, Kind: "image"}, "hi", t0)
	s.uploadProgress("bob", "c-up", 1000, 4000)
	c := s.conv("bob")
	line := renderEntry(c.entries[0], "me")
	if !strings.Contains(line, "[image a.png 4.0 KB] hi") || !strings.Contains(line, progressBar(1000, 4000, progressWidth)) {
		t.Fatalf("uploading line %q", line)
	}
	s.uploadProgress("bob", "c-up", 4000, 4000)
	if line := renderEntry(c.entries[0], "me"); !strings.Contains(line, "processing…") || strings.Contains(line, "█") {
		t.Fatalf("processing line %q", line)
	}
	// Nothing to download while it is mine and on its way.
	if _, ok := s.nthMedia("bob", 1); ok {
		t.Fatal("a pending upload counted as media")
	}
	m1 := msg(1, "bob", "me", "")
	m1.Type, m1.Media = "media", &edgechat.MediaInfo{ID: "m1", Name: "one.jpg"}
	m3 := msg(3, "bob", "me", "")
	m3.Type, m3.Media = "media", &edgechat.MediaInfo{ID: "m3", Name: "three.jpg"}
	s.receive(m1)
	s.receive(msg(2, "bob", "me", "text between"))
	s.receive(m3)
	for n, want := range map[int]string{1: "m3", 2: "m1"} {
		if got, ok := s.nthMedia("bob", n); !ok || got.ID != want {
			t.Errorf("nthMedia(%d) = %+v, %v; want %s", n, got, ok, want)
		}
	}
	if _, ok := s.nthMedia("bob", 3); ok {
		t.Error("nthMedia(3) found something")
	}
	if _, ok := s.nthMedia("bob", 0); ok {
		t.Error("nthMedia(0) found something")
	}
	// The echo of the upload replaces it by CID.
	echo := msg(4, "me", "bob", "hi")
	echo.CID, echo.Type, echo.Media = "c-up", "media", &edgechat.MediaInfo{ID: "m4", Name: "a.png", Kind: "image", Size: 4000}
	s.receive(echo)
	if got, _ := s.nthMedia("bob", 1); got.ID != "m4" || len(c.entries) != 4 {
		t.Fatalf("after the echo: newest media %+v, %d entries", got, len(c.entries))
	}
}

func TestModelAttachAndOpenMedia(t *testing.T) {
	fc := &fakeClient{}
	now := t0
	m := testModel(fc, &now)
	m.downloads = t.TempDir()
	src := filepath.Join(t.TempDir(), "photo one.png")
	data := []byte("\x89PNG\r\n\x1a\n and the rest")
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}

	typeLine(m, "/attach "+src)
	if !strings.Contains(m.st.status, "open a conversation first") || len(fc.uploads) != 0 {
		t.Fatalf("attach with no chat open: status %q, uploads %d", m.st.status, len(fc.uploads))
	}
	m.input.Reset()
	typeLine(m, "/open alice")
	typeLine(m, `/attach "`+src+`" the view`)
	if len(fc.uploads) != 1 {
		t.Fatalf("%d uploads", len(fc.uploads))
	}
	up := fc.uploads[0]
	if up.name != "photo one.png" || up.ctype != "image/png" || up.size != int64(len(data)) || !bytes.Equal(up.data, data) {
		t.Fatalf("upload %+v", up)
	}
	if n := len(up.progress); n < 2 || up.progress[n-1] != [2]int64{int64(len(data)), int64(len(data))} {
		t.Fatalf("progress %v", up.progress)
	}
	if len(fc.sent) != 1 || fc.sent[0].Type != "media" || fc.sent[0].Body != "the view" || fc.sent[0].Media == nil || fc.sent[0].Media.ID != "up1" {
		t.Fatalf("sent %+v", fc.sent)
	}
	c := m.st.conv("alice")
	if len(c.entries) != 1 || c.entries[0].pending || c.entries[0].ID == "" {
		t.Fatalf("entries %+v", c.entries)
	}
	if v := m.View(); !strings.Contains(v, "[image photo one.png 2×1 21 B] the view") {
		t.Fatalf("view lacks the media line:\n%s", v)
	}

	// A picture from alice; /open-media saves it, twice without overwriting.
	in := msg(300, "alice", "me", "")
	in.Type, in.Media = "media", &edgechat.MediaInfo{ID: "k3v9", Kind: "image", Name: "../IMG_0042.jpg", Size: 5}
	fc.files["k3v9"] = []byte("jpeg!")
	_, cmd := m.Update(incomingMsg(in))
	run(m, cmd)
	for _, want := range []string{"_IMG_0042.jpg", "_IMG_0042 (1).jpg"} {
		typeLine(m, "/open-media")
		path := filepath.Join(m.downloads, want)
		if b, err := os.ReadFile(path); err != nil || string(b) != "jpeg!" {
			t.Fatalf("%s: %q, %v (status %q)", want, b, err, m.st.status)
		}
		if !strings.Contains(m.st.status, path) || !strings.Contains(m.st.status, "5 B") {
			t.Fatalf("status %q does not say where", m.st.status)
		}
	}
	// The second newest is my own upload.
	typeLine(m, "/open-media 2")
	if b, err := os.ReadFile(filepath.Join(m.downloads, "photo one.png")); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("my upload: %v (status %q)", err, m.st.status)
	}
	typeLine(m, "/open-media 3")
	if !strings.Contains(m.st.status, "no media message #3") {
		t.Fatalf("status %q", m.st.status)
	}
	m.input.Reset()
	typeLine(m, "/open-media x")
	if !strings.Contains(m.st.status, "usage") {
		t.Fatalf("status %q", m.st.status)
	}
	m.input.Reset()

	// A failed download leaves no file.
	delete(fc.files, "k3v9")
	before, _ := os.ReadDir(m.downloads)
	typeLine(m, "/open-media")
	after, _ := os.ReadDir(m.downloads)
	if !strings.Contains(m.st.status, "not found") || len(after) != len(before) {
		t.Fatalf("status %q, %d files before, %d after", m.st.status, len(before), len(after))
	}
}

func TestModelAttachFailures(t *testing.T) {
	fc := &fakeClient{uploadErr: fmt.Errorf("wrapped: %w", &edgechat.MediaRejectedError{MediaID: "x", Reason: "type_not_allowed"})}
	now := t0
	m := testModel(fc, &now)
	typeLine(m, "/open bob")
	dir := t.TempDir()
	src := filepath.Join(dir, "run.sh")
	if err := os.WriteFile(src, []byte("#!/bin/sh\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	typeLine(m, "/attach "+src)
	c := m.st.conv("bob")
	if len(c.entries) != 1 || c.entries[0].failed != "refused by the server (type not allowed)" || len(fc.sent) != 0 {
		t.Fatalf("entries %+v, sent %d", c.entries, len(fc.sent))
	}
	for arg, want := range map[string]string{
		filepath.Join(dir, "missing"): "no such file",
		dir:                           "not a regular file",
		"":                            "usage",
	} {
		m.input.Reset()
		if arg == "" {
			typeLine(m, "/attach")
		} else {
			typeLine(m, "/attach "+arg)
		}
		if !strings.Contains(m.st.status, want) {
			t.Errorf("/attach %q: status %q, want %q", arg, m.st.status, want)
		}
	}
	empty := filepath.Join(dir, "empty")
	_ = os.WriteFile(empty, nil, 0o600)
	m.input.Reset()
	typeLine(m, "/attach "+empty)
	if !strings.Contains(m.st.status, "is empty") || len(fc.uploads) != 1 {
		t.Fatalf("empty file: status %q, %d uploads", m.st.status, len(fc.uploads))
	}
	for err, want := range map[error]string{
		fmt.Errorf("x: %w", edgechat.ErrMediaTooLarge):                                                       "too large",
		fmt.Errorf("x: %w", &edgechat.APIError{Status: 429, Code: "media_quota", RetryAfter: 2 * time.Hour}): "try again in 2h0m0s",
		errors.New("connection refused"):                                                                     "upload: connection refused",
	} {
		if got := uploadError(err).Error(); !strings.Contains(got, want) {
			t.Errorf("uploadError(%v) = %q, want %q", err, got, want)
		}
	}
	if downloadsDir("", "") != "." || downloadsDir(" ", "/env") != "/env" || downloadsDir("/cfg", "/env") != "/cfg" {
		t.Error("downloadsDir precedence wrong")
	}
}
