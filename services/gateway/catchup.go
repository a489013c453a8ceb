package gateway

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"time"

	"github.com/edgechat/edgechat/internal/httpapi"
)

// catchUpTimeout bounds how long a read answered 404 waits for this node
// to apply what the cluster committed before it.
const catchUpTimeout = 5 * time.Second

// serveReadingAgain serves a read (GET or HEAD) of a node of a cluster.
// A 404 there may only mean that this node has not applied yet what
// another node committed a moment ago (a user who just signed up, a
// group just made or joined, a photo just uploaded, all through another
// node behind the same load balancer): such an answer is held back, the
// node waits until it has applied what the cluster had committed
// (Deps.ReadBarrier), and the read runs again. Every other answer goes
// out as the handler writes it, with nothing held; reads have no body,
// so running one twice is safe.
func (g *Gateway) serveReadingAgain(h http.HandlerFunc, w http.ResponseWriter, r *http.Request) {
	c := &notFoundCatcher{w: w, header: w.Header().Clone()}
	h(c, r)
	if !c.caught {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), catchUpTimeout)
	err := g.barrier(ctx)
	cancel()
	if err == nil {
		g.mReadAgain.Inc()
		h(w, r)
		return
	}
	// The node cannot tell: the 404 it found stands.
	c.flush()
}

// catchUpFirst waits for the read barrier before a CatchUp route runs;
// it writes 503 and reports false when the node cannot reach its leader.
func (g *Gateway) catchUpFirst(w http.ResponseWriter, r *http.Request) bool {
	ctx, cancel := context.WithTimeout(r.Context(), catchUpTimeout)
	err := g.barrier(ctx)
	cancel()
	if err != nil {
		g.log.Warn("read barrier before a list", "route", r.Pattern, "err", err)
		httpapi.WriteError(w, &httpapi.Error{Status: http.StatusServiceUnavailable, Code: httpapi.CodeUnavailable,
			Message: "cannot read now: this node cannot reach its cluster's leader; retry", RetryAfter: time.Second})
		return false
	}
	return true
}

// notFoundCatcher passes a handler's answer through unless its status is
// 404, which it keeps instead (headers and body) for serveReadingAgain.
type notFoundCatcher struct {
	w       http.ResponseWriter
	header  http.Header // the handler's headers until the status is known
	passing bool        // a status other than 404 went through
	caught  bool        // the status was 404: held
	body    bytes.Buffer
}

func (c *notFoundCatcher) Header() http.Header {
	if c.passing {
		return c.w.Header()
	}
	return c.header
}

func (c *notFoundCatcher) WriteHeader(code int) {
	switch {
	case c.passing:
		c.w.WriteHeader(code) // net/http reports a superfluous call
	case c.caught:
	case code == http.StatusNotFound:
		c.caught = true
	default:
		c.passing = true
		dst := c.w.Header()
		clear(dst)
		for k, v := range c.header {
			dst[k] = v
		}
		c.w.WriteHeader(code)
	}
}

func (c *notFoundCatcher) Write(b []byte) (int, error) {
	if !c.passing && !c.caught {
		c.WriteHeader(http.StatusOK)
	}
	if c.caught {
		return c.body.Write(b)
	}
	return c.w.Write(b)
}

// ReadFrom keeps the server's sendfile for answers that pass (media).
func (c *notFoundCatcher) ReadFrom(src io.Reader) (int64, error) {
	if !c.passing && !c.caught {
		c.WriteHeader(http.StatusOK)
	}
	if c.caught {
		return c.body.ReadFrom(src)
	}
	return io.Copy(c.w, src)
}

func (c *notFoundCatcher) Flush() {
	if !c.passing && !c.caught {
		c.WriteHeader(http.StatusOK)
	}
	if c.passing {
		_ = http.NewResponseController(c.w).Flush()
	}
}

var (
	_ http.ResponseWriter = (*notFoundCatcher)(nil)
	_ http.Flusher        = (*notFoundCatcher)(nil)
	_ io.ReaderFrom       = (*notFoundCatcher)(nil)
)

// Unwrap lets http.ResponseController reach the connection (flushes of a
// streamed answer, deadlines).
func (c *notFoundCatcher) Unwrap() http.ResponseWriter { return c.w }

// flush writes the held 404.
func (c *notFoundCatcher) flush() {
	dst := c.w.Header()
	clear(dst)
	for k, v := range c.header {
		dst[k] = v
	}
	c.w.WriteHeader(http.StatusNotFound)
	_, _ = c.w.Write(c.body.Bytes())
}
