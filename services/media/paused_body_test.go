package media

import (
	"bytes"
	"io"
	"net"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/wire"
)

// stallingBody gives its bytes, then fails as a connection read past the
// gateway's body timeout does (a read deadline: net.OpError wrapping
// os.ErrDeadlineExceeded, what net/http's body returns).
type stallingBody struct{ r io.Reader }

func (b *stallingBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		return n, &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
	}
	return n, err
}

// protocol.md: a request whose body does not arrive in time (an upload
// paused for 30 seconds) is answered 408 request_timeout. POST /media
// answered 400 bad_request "the upload's body broke off or is malformed:
// read tcp: i/o timeout", telling a client on a slow network that what
// it sent was wrong, not that it may send it again.
func TestUploadPausedPastTheBodyTimeoutIsARequestTimeout(t *testing.T) {
	e := newEnv(t, Config{})
	multi, mw := unclosedMultipart(t, "hello world, the first bytes of the file") // the rest never came

	for _, tc := range []struct {
		name, ctype string
		body        []byte
	}{
		{"raw body", "text/plain", []byte("the first bytes of 100")},
		{"multipart, in the file", mw.FormDataContentType(), multi},
		{"multipart, in the part's headers", mw.FormDataContentType(), multi[:len(mw.Boundary())+4]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := "/media"
			if tc.ctype == "text/plain" {
				path += "?name=a.txt"
			}
			req := httptest.NewRequest("POST", path, &stallingBody{r: bytes.NewReader(tc.body)})
			req.ContentLength = 100 // declared; fewer came
			req.Header.Set("Content-Type", tc.ctype)
			req = req.WithContext(httpapi.WithPrincipal(req.Context(), wire.Principal{UserID: "alice"}))
			w := httptest.NewRecorder()
			e.mux.ServeHTTP(w, req)
			if w.Code != 408 || !strings.Contains(w.Body.String(), `"request_timeout"`) {
				t.Fatalf("an upload whose body stopped coming: %d %s, want 408 request_timeout", w.Code, w.Body)
			}
			if n := len(e.st.objects); n != 0 {
				t.Fatalf("%d objects left", n)
			}
		})
	}
}
