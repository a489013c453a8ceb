package ratelimit

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// DefaultMaxWait is how long DoHTTP waits out 429s in all when the caller
// does not say.
const DefaultMaxWait = 30 * time.Second

// DoHTTP is the client side of a rate limit: it sends req with c and,
// while the answer is 429 Too Many Requests, waits what its Retry-After
// asks (whole seconds or an HTTP date; one second when absent or
// unreadable) and sends req again. It waits at most maxWait in all
// (DefaultMaxWait when 0) and never past req's context; then it returns
// the last 429 for the caller to handle like any other answer. Tools and
// tests that poll an edgechat node use it so that a check never trips
// over the node's own limits. A request with a body needs GetBody
// (http.NewRequest sets it for bytes, strings and bytes.Buffer readers).
// The caller closes the returned response's body.
func DoHTTP(c *http.Client, req *http.Request, maxWait time.Duration) (*http.Response, error) {
	if c == nil {
		c = http.DefaultClient
	}
	if maxWait == 0 {
		maxWait = DefaultMaxWait
	}
	deadline := time.Now().Add(maxWait)
	for {
		resp, err := c.Do(req)
		if err != nil || resp.StatusCode != http.StatusTooManyRequests {
			return resp, err
		}
		wait := RetryAfter(resp.Header.Get("Retry-After"), time.Now())
		if time.Now().Add(wait).After(deadline) {
			return resp, nil
		}
		next := req
		if req.Body != nil && req.Body != http.NoBody {
			if req.GetBody == nil {
				return resp, nil // cannot send the body again
			}
			body, err := req.GetBody()
			if err != nil {
				return resp, nil
			}
			next = req.Clone(req.Context())
			next.Body = body
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		t := time.NewTimer(wait)
		select {
		case <-req.Context().Done():
			t.Stop()
			return nil, fmt.Errorf("waiting out a rate limit: %w", req.Context().Err())
		case <-t.C:
		}
		req = next
	}
}

// RetryAfter reads a Retry-After header: delay seconds or an HTTP date
// (relative to now). Missing, unreadable or non-positive values are one
// second, the smallest wait a server can ask for.
func RetryAfter(h string, now time.Time) time.Duration {
	if s, err := strconv.Atoi(h); err == nil {
		if s > 0 {
			return time.Duration(s) * time.Second
		}
		return time.Second
	}
	if at, err := http.ParseTime(h); err == nil {
		if d := at.Sub(now); d > 0 {
			return d
		}
	}
	return time.Second
}
