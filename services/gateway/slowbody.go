package gateway

import (
	"errors"
	"io"
	"net/http"
	"sync"
	"time"
)

// timedBody bounds how long a request's body takes to arrive
// (Config.BodyTimeout): the connection's read deadline is set when the
// request comes in, for the whole body, and, once the route is known to
// be an upload, again at each read (a pause as long is the limit, not
// the whole). A read past it fails with os.ErrDeadlineExceeded (408
// request_timeout from httpapi.DecodeJSON), and net/http closes the
// connection. The deadline is lifted as soon as the body has been read
// to its end: net/http then watches the connection in the
// background for the client going away, and a deadline left behind
// would look like that and end the request's context in the middle of
// its handler. (Without it, nothing bounded a body past the headers'
// ReadHeaderTimeout: a client trickling one, or sending none of the
// length it declared, held its connection and goroutine for good, also
// on a request refused before its handler, whose answer net/http
// writes only after reading what is left of the body.)
//
// Over HTTP/2 a stream's read deadline is a timer that ends the body
// when it fires, whether or not a read waits (HTTP/1's is the
// connection's, felt only by a read): an upload's deadline is therefore
// lifted again after each read, so that a handler that stops reading for
// a while (storing a part it read: an S3 multipart upload) does not cut
// off a client that sent everything, which flow control then holds.
type timedBody struct {
	io.ReadCloser
	rc      *http.ResponseController
	timeout time.Duration
	h2      bool // the request came over HTTP/2

	mu   sync.Mutex
	idle bool // an upload: the deadline moves with each read
	over bool // read to the end: no deadline any more
}

func newTimedBody(body io.ReadCloser, rc *http.ResponseController, timeout time.Duration, h2 bool) *timedBody {
	b := &timedBody{ReadCloser: body, rc: rc, timeout: timeout, h2: h2}
	_ = rc.SetReadDeadline(time.Now().Add(timeout))
	return b
}

// uploading makes the deadline one of progress: timeout without a byte.
func (b *timedBody) uploading() {
	b.mu.Lock()
	b.idle = true
	b.mu.Unlock()
}

func (b *timedBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	if b.idle && !b.over {
		_ = b.rc.SetReadDeadline(time.Now().Add(b.timeout))
	}
	b.mu.Unlock()
	n, err := b.ReadCloser.Read(p)
	// Only at the end: after a failed read (the deadline) net/http reads
	// what is left of the body before it answers, and must fail at once
	// too, not wait for bytes that do not come.
	switch {
	case errors.Is(err, io.EOF):
		b.mu.Lock()
		if !b.over {
			b.over = true
			_ = b.rc.SetReadDeadline(time.Time{})
		}
		b.mu.Unlock()
	case err == nil && b.h2:
		b.mu.Lock()
		if b.idle && !b.over {
			_ = b.rc.SetReadDeadline(time.Time{}) // until the next read
		}
		b.mu.Unlock()
	}
	return n, err
}
