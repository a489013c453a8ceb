package gateway

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/httpapi"
)

// slowBodyEnv is a real gateway with a JSON route, an upload route and a
// route that answers without reading its body, each reached over a real
// socket.
func slowBodyEnv(t *testing.T, timeout time.Duration) (addr string, handled chan error) {
	t.Helper()
	e := newEnv(t, Config{BodyTimeout: timeout})
	handled = make(chan error, 10)
	e.g.Mount(
		httpapi.Route{Method: http.MethodPost, Pattern: "/json", Class: httpapi.ClassWrite, Handler: func(w http.ResponseWriter, r *http.Request) {
			var v map[string]any
			if err := httpapi.DecodeJSON(r, &v, 0); err != nil {
				httpapi.WriteError(w, err)
				return
			}
			httpapi.WriteJSON(w, http.StatusOK, v)
		}},
		httpapi.Route{Method: http.MethodPost, Pattern: "/up", Class: httpapi.ClassUpload, MaxBody: 1 << 20, Handler: func(w http.ResponseWriter, r *http.Request) {
			n, err := io.Copy(io.Discard, r.Body)
			if err != nil {
				httpapi.WriteError(w, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "%v", err))
				return
			}
			httpapi.WriteJSON(w, http.StatusOK, map[string]int64{"n": n})
		}},
		// Reads its body, then takes longer than the body timeout: the
		// deadline must not end the request (its context) once the body is in.
		httpapi.Route{Method: http.MethodPost, Pattern: "/long", Class: httpapi.ClassWrite, Handler: func(w http.ResponseWriter, r *http.Request) {
			var v map[string]any
			if err := httpapi.DecodeJSON(r, &v, 0); err != nil {
				httpapi.WriteError(w, err)
				return
			}
			select {
			case <-r.Context().Done():
				handled <- fmt.Errorf("the request's context ended: %v", r.Context().Err())
			case <-time.After(3 * timeout):
				handled <- nil
			}
			httpapi.WriteJSON(w, http.StatusOK, v)
		}},
	)
	e.run(t)
	return e.g.Addr(), handled
}

// answerOf reads one response from c within wait.
func answerOf(t *testing.T, c net.Conn, br *bufio.Reader, wait time.Duration) (*http.Response, string, error) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(wait))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, "", err
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	return resp, string(b), nil
}

// A client that sends its headers and then its body slowly, or never,
// held a connection, its goroutine and (in the handler) a read for as
// long as it liked: the gateway had no read timeout past the headers
// (ReadHeaderTimeout), so a few hundred such connections a minute from
// one address (the per-IP bucket counts requests, not their length) ran
// a node out of file descriptors. A body must arrive within the body
// timeout (an upload: without a pause that long), on a JSON route, an
// upload, and a request refused before its handler (401, whose answer
// net/http would only write once it had read the body).
func TestASlowRequestBodyIsCutOff(t *testing.T) {
	const timeout = 300 * time.Millisecond
	addr, handled := slowBodyEnv(t, timeout)
	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c, bufio.NewReader(c)
	}
	head := func(path, auth string, n int) string {
		return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n", path, auth, n)
	}

	for _, tc := range []struct{ name, path, auth string }{
		{"json route", "/json", "Authorization: Bearer good-alice\r\n"},
		{"refused without a token", "/json", ""},
		{"upload that stops", "/up", "Authorization: Bearer good-alice\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := dial()
			if _, err := io.WriteString(c, head(tc.path, tc.auth, 100)+`{"a":`); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			resp, body, err := answerOf(t, c, br, 20*timeout)
			if err != nil {
				t.Fatalf("no answer %v after the body stopped (body timeout %v): %v", time.Since(start).Round(time.Millisecond), timeout, err)
			}
			want := http.StatusRequestTimeout
			switch {
			case tc.auth == "":
				want = http.StatusUnauthorized
			case tc.path == "/up":
				want = http.StatusBadRequest // the handler's own answer to its failed read
			}
			if resp.StatusCode != want {
				t.Fatalf("answer %d %s, want %d", resp.StatusCode, body, want)
			}
			if want == http.StatusRequestTimeout && !strings.Contains(body, `"request_timeout"`) {
				t.Fatalf("answer %d %s, want code request_timeout", resp.StatusCode, body)
			}
			// And the connection is closed: nothing more is read from it.
			_ = c.SetReadDeadline(time.Now().Add(20 * timeout))
			if n, err := br.Read(make([]byte, 1)); err != io.EOF {
				t.Fatalf("after the answer: read %d, %v; want the connection closed (EOF)", n, err)
			}
		})
	}

	t.Run("upload that keeps sending", func(t *testing.T) {
		c, br := dial()
		const chunks = 8 // 8 × timeout/3: longer than the timeout in all, never a pause that long
		if _, err := io.WriteString(c, head("/up", "Authorization: Bearer good-alice\r\n", chunks)); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < chunks; i++ {
			time.Sleep(timeout / 3) // the client's pace, not a wait for state
			if _, err := io.WriteString(c, "x"); err != nil {
				t.Fatal(err)
			}
		}
		resp, body, err := answerOf(t, c, br, 20*timeout)
		if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(body, `"n":8`) {
			t.Fatalf("upload at a steady pace: %v %v %s, want 200 n 8", resp, err, body)
		}
	})

	t.Run("a long handler after its body", func(t *testing.T) {
		c, br := dial()
		for i := 0; i < 2; i++ { // and the connection serves the next request
			if _, err := io.WriteString(c, head("/long", "Authorization: Bearer good-alice\r\n", 7)+`{"a":1}`); err != nil {
				t.Fatal(err)
			}
			resp, body, err := answerOf(t, c, br, 20*timeout)
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("request %d: %v %v %s, want 200", i, resp, err, body)
			}
			if err := <-handled; err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
		}
	})
}

// Over HTTP/2 (TLS) the body timeout is the stream's: a stream whose
// body stops is answered 408, and the connection's other streams go on.
func TestASlowRequestBodyIsCutOffOverHTTP2(t *testing.T) {
	const timeout = 300 * time.Millisecond
	cert, pool := selfSigned(t)
	e := newEnv(t, Config{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}, BodyTimeout: timeout})
	e.g.Mount(httpapi.Route{Method: http.MethodPost, Pattern: "/json", Class: httpapi.ClassWrite, Handler: func(w http.ResponseWriter, r *http.Request) {
		var v map[string]any
		if err := httpapi.DecodeJSON(r, &v, 0); err != nil {
			httpapi.WriteError(w, err)
			return
		}
		httpapi.WriteJSON(w, http.StatusOK, v)
	}})
	e.run(t)
	client := &http.Client{Timeout: 20 * timeout, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	defer client.CloseIdleConnections()

	pr, pw := io.Pipe()
	defer pw.Close()
	go func() { _, _ = io.WriteString(pw, `{"a":`) }() // and no more
	req, _ := http.NewRequest(http.MethodPost, e.g.URL()+"/json", pr)
	req.Header.Set("Authorization", "Bearer good-alice")
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("a body that stops over HTTP/2: %v, want 408", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(b), `"request_timeout"`) {
		t.Fatalf("a body that stops: %s %d %s, want HTTP/2 408 request_timeout", resp.Proto, resp.StatusCode, b)
	}
	req, _ = http.NewRequest(http.MethodPost, e.g.URL()+"/json", strings.NewReader(`{"a":1}`))
	req.Header.Set("Authorization", "Bearer good-alice")
	req.Header.Set("Content-Type", "application/json")
	resp, err = client.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("the next request: %v %v, want 200", resp, err)
	}
	resp.Body.Close()
}

// Over HTTP/2 a stream's read deadline is a timer that ends its body
// when it fires, read or not: an upload whose handler stopped reading
// for longer than the body timeout (storing the part it had read, as an
// S3 multipart upload does) was answered 408 though its client had sent
// everything and waited only on flow control. The handler's pauses do
// not count now; a client that stops sending is still cut off.
func TestAnUploadOverHTTP2IsCutOffOnlyByItsClient(t *testing.T) {
	const timeout = 300 * time.Millisecond
	cert, pool := selfSigned(t)
	e := newEnv(t, Config{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}, BodyTimeout: timeout})
	e.g.Mount(httpapi.Route{Method: http.MethodPost, Pattern: "/up", Class: httpapi.ClassUpload, MaxBody: 8 << 20, Handler: func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 1<<20)
		var n int64
		for {
			m, err := io.ReadFull(r.Body, buf)
			n += int64(m)
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				break
			}
			if err != nil {
				httpapi.WriteError(w, httpapi.BodyReadError(err))
				return
			}
			time.Sleep(2 * timeout) // the server's pace: it stores the part it read
		}
		httpapi.WriteJSON(w, http.StatusOK, map[string]int64{"n": n})
	}})
	e.run(t)
	client := &http.Client{Timeout: 40 * timeout, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	defer client.CloseIdleConnections()
	post := func(body io.Reader) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, e.g.URL()+"/up", body)
		req.Header.Set("Authorization", "Bearer good-alice")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}

	const size = 3 << 20
	if resp, body := post(bytes.NewReader(bytes.Repeat([]byte("x"), size))); resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK ||
		!strings.Contains(body, fmt.Sprintf(`"n":%d`, size)) {
		t.Fatalf("an upload sent at once, read with pauses of twice the body timeout: %s %d %s, want HTTP/2 200 n %d",
			resp.Proto, resp.StatusCode, body, size)
	}

	pr, pw := io.Pipe()
	defer pw.Close()
	go func() { _, _ = pw.Write(bytes.Repeat([]byte("y"), 1<<20)) }() // and no more
	if resp, body := post(pr); resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(body, `"request_timeout"`) {
		t.Fatalf("an upload whose client stopped sending: %s %d %s, want 408 request_timeout", resp.Proto, resp.StatusCode, body)
	}
}
