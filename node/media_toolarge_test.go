package node_test

import (
	"bytes"
	"mime/multipart"
	"net/http"
	"testing"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// An upload whose Content-Length is over --media-max-size is refused
// 413 media_too_large (docs/protocol.md, Media; the Go SDK's
// ErrMediaTooLarge and the terminal client's "too large" rest on that
// code), however far over it is: the gateway's own up-front body limit
// for the route (the media limit plus 64 KiB of multipart slack) used to
// answer 413 payload_too_large first.
func TestMediaUploadOverMaxSizeIsMediaTooLarge(t *testing.T) {
	const max = 1000
	n := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) { c.MediaMaxSize = max }))
	tok := n.NewUser(t, "alice")

	for _, size := range []int{max + 1, max + 100<<10} {
		body := bytes.Repeat([]byte("x"), size)
		st, code := rawCall(t, n, tok, "POST", "/media?name=big.txt", "text/plain", bytes.NewReader(body), int64(size))
		if st != http.StatusRequestEntityTooLarge || code != "media_too_large" {
			t.Errorf("raw upload of %d bytes (limit %d): %d %q, want 413 media_too_large", size, max, st, code)
		}

		var mp bytes.Buffer
		mw := multipart.NewWriter(&mp)
		fw, _ := mw.CreateFormFile("file", "big.txt")
		_, _ = fw.Write(body)
		_ = mw.Close()
		st, code = rawCall(t, n, tok, "POST", "/media", mw.FormDataContentType(), bytes.NewReader(mp.Bytes()), int64(mp.Len()))
		if st != http.StatusRequestEntityTooLarge || code != "media_too_large" {
			t.Errorf("multipart upload of %d bytes (limit %d): %d %q, want 413 media_too_large", size, max, st, code)
		}
	}
}
