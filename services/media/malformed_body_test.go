package media

import (
	"bytes"
	"mime/multipart"
	"strings"
	"testing"
)

// protocol.md: POST /media answers 400 bad_request for a malformed
// multipart body. One that breaks off inside the file part (no closing
// boundary: a proxy or a client that cut it, a buggy encoder) answered
// 500 internal, logged as a server error, because the part's read error
// surfaced as a failure of the store.
func TestUploadMultipartBrokenOffInTheFileIsABadRequest(t *testing.T) {
	e := newEnv(t, Config{})
	b, mw := unclosedMultipart(t, "hello world, this is the file")
	w := e.do("POST", "/media", "alice", bytes.NewReader(b), map[string]string{"Content-Type": mw.FormDataContentType()})
	if w.Code != 400 || !strings.Contains(w.Body.String(), `"bad_request"`) {
		t.Fatalf("a multipart body broken off in the file: %d %s, want 400 bad_request", w.Code, w.Body)
	}
	if n := len(e.st.objects); n != 0 {
		t.Fatalf("%d objects left", n)
	}
}

// unclosedMultipart is a multipart body with one file part, a.txt
// holding content, that breaks off before its closing boundary, and
// the writer that made it (its content type, its boundary).
func unclosedMultipart(t *testing.T, content string) ([]byte, *multipart.Writer) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	fw, err := mw.CreateFormFile("file", "a.txt")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fw.Write([]byte(content)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), mw
}
