package node_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/edgechat/edgechat/node/nodetest"
)

// Request headers are limited to 100 fields (docs/protocol.md, HTTP
// API): a request with 100 is served, one with 101 is refused 431. The
// gateway counted the X-Request-ID it adds to a request that came
// without one, so a client's 100 fields were "101 header fields, over
// the limit of 100".
func TestHundredHeaderFieldsAreServed(t *testing.T) {
	n := nodetest.StartNode(t)
	tok := n.NewUser(t, "alice")
	u, err := url.Parse(n.HTTPURL)
	if err != nil {
		t.Fatal(err)
	}
	send := func(fields int) (int, string) {
		t.Helper()
		var b strings.Builder
		fmt.Fprintf(&b, "GET /user/me HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n", u.Host, tok) // Host is no header field of the request's
		for i := 3; i <= fields; i++ {                                                                    // with Authorization and Connection: fields in all
			fmt.Fprintf(&b, "X-F%d: v\r\n", i)
		}
		b.WriteString("Connection: close\r\n\r\n")
		resp, body := rawRequest(t, u.Host, b.String())
		return resp.StatusCode, body
	}
	if st, body := send(100); st != 200 {
		t.Errorf("100 header fields: %d %s, want 200", st, body)
	}
	if st, body := send(101); st != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("101 header fields: %d %s, want 431", st, body)
	}
}

// Headers over the API's limit of 64 KiB are refused 431 in the JSON
// error envelope, up to the HTTP server's own backstop (64 + 16 KiB,
// and the 4 KiB net/http reads past it): over that, net/http refuses
// the request before it reaches the gateway, with its plain-text 431,
// and no handler or listener wrapper can answer it in JSON over TLS
// (the bytes are written into the TLS connection) nor over HTTP/2 (its
// own 431 handler, in HTML). docs/protocol.md (HTTP API) says so; this
// holds the documented answers.
func TestHeadersOverTheLimitAnswer431(t *testing.T) {
	n := nodetest.StartNode(t)
	u, err := url.Parse(n.HTTPURL)
	if err != nil {
		t.Fatal(err)
	}
	send := func(headerBytes int) (int, string, string) {
		t.Helper()
		var b strings.Builder
		fmt.Fprintf(&b, "GET /healthz HTTP/1.1\r\nHost: %s\r\n", u.Host)
		for i := 0; b.Len() < headerBytes; i++ {
			fmt.Fprintf(&b, "X-F%d: %s\r\n", i, strings.Repeat("v", 1000))
		}
		b.WriteString("Connection: close\r\n\r\n")
		resp, body := rawRequest(t, u.Host, b.String())
		return resp.StatusCode, resp.Header.Get("Content-Type"), body
	}
	if st, ct, body := send(70 << 10); st != 431 || !strings.HasPrefix(ct, "application/json") || !strings.Contains(body, `"headers_too_large"`) {
		t.Errorf("70 KiB of headers: %d %s %q, want 431 headers_too_large in JSON", st, ct, body)
	}
	if st, ct, body := send(100 << 10); st != 431 || !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("100 KiB of headers: %d %s %q, want net/http's plain-text 431 (as documented)", st, ct, body)
	}
}

// rawRequest writes req as it is to a new connection to host and reads
// the response and its body: requests net/http's client would not send.
func rawRequest(t *testing.T, host, req string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var msg strings.Builder
	_, _ = bufio.NewReader(resp.Body).WriteTo(&msg)
	return resp, msg.String()
}
