package gateway

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/httpapi"
)

// A client that asks for a large answer (a media file, a long list) and
// then stops reading held the handler, its goroutine and its connection
// (and a media download's open object) for as long as it kept its TCP
// window shut: the gateway had no write timeout. An answer that makes no
// progress for the write timeout fails, through Write (JSON) and ReadFrom
// (http.ServeContent, as media downloads are served); a connection kept
// alive past it still answers its next requests, a route's and the
// gateway's own (404).
func TestAClientThatStopsReadingIsCutOff(t *testing.T) {
	const timeout = 300 * time.Millisecond
	e := newEnv(t, Config{WriteTimeout: 0, WriteIdleTimeout: timeout})
	handled := map[string]chan error{"/write": make(chan error, 1), "/serve": make(chan error, 1),
		"/one-write": make(chan error, 1)}
	big := bytes.Repeat([]byte("x"), 64<<10)
	const size = 32 << 20 // more than any socket buffers between the two
	e.g.Mount(
		httpapi.Route{Method: http.MethodGet, Pattern: "/write", Handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "33554432")
			for n := 0; n < size; n += len(big) {
				if _, err := w.Write(big); err != nil {
					handled["/write"] <- err
					return
				}
			}
			handled["/write"] <- nil
		}},
		// As httpapi.WriteJSON writes a long list: the whole answer in one
		// Write, which a slow client takes many times the timeout to read.
		httpapi.Route{Method: http.MethodGet, Pattern: "/one-write", Handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "33554432")
			_, err := w.Write(bytes.Repeat([]byte("z"), size))
			handled["/one-write"] <- err
		}},
		httpapi.Route{Method: http.MethodGet, Pattern: "/serve", Handler: func(w http.ResponseWriter, r *http.Request) {
			cw := &countingWriter{ResponseWriter: w}
			http.ServeContent(cw, r, "", time.Time{}, bytes.NewReader(bytes.Repeat([]byte("y"), size)))
			if cw.n < size {
				handled["/serve"] <- errors.New("cut off")
				return
			}
			handled["/serve"] <- nil
		}},
		httpapi.Route{Method: http.MethodGet, Pattern: "/small", Handler: ok200},
	)
	e.run(t)

	for _, path := range []string{"/write", "/one-write", "/serve"} {
		t.Run(path, func(t *testing.T) {
			c, err := net.Dial("tcp", e.g.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.(*net.TCPConn).SetReadBuffer(4 << 10)
			if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good-alice\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			// And never reads.
			select {
			case err := <-handled[path]:
				if err == nil {
					t.Fatalf("the whole answer went to a client that reads nothing")
				}
			case <-time.After(30 * timeout):
				t.Fatalf("the handler still writes %v after its client stopped reading (write timeout %v)", 30*timeout, timeout)
			}
		})
	}

	// A client that reads slowly but steadily gets the whole answer,
	// though it takes many times the timeout.
	for _, path := range []string{"/write", "/one-write", "/serve"} {
		t.Run(path+" read slowly", func(t *testing.T) {
			c, err := net.Dial("tcp", e.g.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good-alice\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			var got int64
			start := time.Now()
			for {
				n, err := io.CopyN(io.Discard, resp.Body, 2<<20)
				got += n
				if err != nil {
					break
				}
				time.Sleep(timeout / 3) // the client's pace
			}
			if got != size {
				t.Fatalf("read %d bytes of %d in %v, reading 2 MiB every %v", got, size, time.Since(start), timeout/3)
			}
			if err := <-handled[path]; err != nil {
				t.Fatalf("handler: %v", err)
			}
		})
	}

	t.Run("kept alive past it", func(t *testing.T) {
		c, err := net.Dial("tcp", e.g.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		br := bufio.NewReader(c)
		for i, path := range []string{"/small", "/small", "/nowhere", "/small"} {
			if i > 0 {
				time.Sleep(2 * timeout) // the client's pace: idle longer than the write timeout
			}
			if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good-alice\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			resp, body, err := answerOf(t, c, br, 20*timeout)
			want := http.StatusOK
			if path == "/nowhere" {
				want = http.StatusNotFound
			}
			if err != nil || resp.StatusCode != want {
				t.Fatalf("request %d (%s) on a connection kept alive: %v %v %s, want %d", i, path, resp, err, body, want)
			}
		}
	})
}

type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (w *countingWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.n += int64(n)
	return n, err
}

func (w *countingWriter) ReadFrom(r io.Reader) (int64, error) {
	n, err := io.Copy(w.ResponseWriter, r) // the gateway's writer's ReadFrom
	w.n += n
	return n, err
}

// Over HTTP/2 a stream's write deadline is a timer that resets the
// stream when it fires, whether or not a write waits (HTTP/1's is the
// connection's, felt only by a write): a route whose handler took longer
// than the write timeout before it wrote (or paused that long between
// two writes) was reset, INTERNAL_ERROR, though its client read all it
// was sent. The handler's pauses do not count now; a client that stops
// reading is still cut off.
func TestAnAnswerOverHTTP2IsCutOffOnlyByItsClient(t *testing.T) {
	const timeout = 300 * time.Millisecond
	cert, pool := selfSigned(t)
	e := newEnv(t, Config{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}, WriteIdleTimeout: timeout})
	stuck := make(chan error, 1)
	const size = 32 << 20
	e.g.Mount(
		httpapi.Route{Method: http.MethodGet, Pattern: "/slow", Handler: func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(3 * timeout) // the server's pace: a long read before the answer
			httpapi.WriteJSON(w, http.StatusOK, map[string]string{"ok": "yes"})
		}},
		httpapi.Route{Method: http.MethodGet, Pattern: "/pauses", Handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			for i := range 2 {
				if i > 0 {
					time.Sleep(3 * timeout) // the server's pace, between two parts of the answer
				}
				_, _ = io.WriteString(w, "part\n")
				http.NewResponseController(w).Flush()
			}
		}},
		httpapi.Route{Method: http.MethodGet, Pattern: "/big", Handler: func(w http.ResponseWriter, r *http.Request) {
			_, err := w.Write(bytes.Repeat([]byte("x"), size))
			stuck <- err
		}},
	)
	e.run(t)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	defer client.CloseIdleConnections()
	get := func(path string) (*http.Response, error) {
		req, _ := http.NewRequest(http.MethodGet, e.g.URL()+path, nil)
		req.Header.Set("Authorization", "Bearer good-alice")
		return client.Do(req)
	}
	for path, want := range map[string]string{"/slow": "{\"ok\":\"yes\"}\n", "/pauses": "part\npart\n"} {
		resp, err := get(path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK || err != nil || string(b) != want {
			t.Fatalf("%s (its handler pauses 3 times the write timeout): %s %d %q %v, want HTTP/2 200 %q", path, resp.Proto, resp.StatusCode, b, err, want)
		}
	}
	// A client that stops reading: the handler's write fails.
	resp, err := get("/big")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	select {
	case err := <-stuck:
		if err == nil {
			t.Fatalf("%d bytes went to a client that read none over HTTP/2", size)
		}
	case <-time.After(30 * timeout):
		t.Fatalf("the handler still writes %v after its HTTP/2 client stopped reading (write timeout %v)", 30*timeout, timeout)
	}
}

// slowSource gives two parts of 64 KiB (more than the server's write
// buffer) with a pause of its own before the second (a media object
// read from a slow object store or a peer).
type slowSource struct {
	pause time.Duration
	left  int
}

const slowSourcePart = 64 << 10

func (s *slowSource) Read(p []byte) (int, error) {
	if s.left == 0 {
		return 0, io.EOF
	}
	if s.left == slowSourcePart {
		time.Sleep(s.pause)
	}
	n := min(len(p), s.left-(s.left-1)/slowSourcePart*slowSourcePart) // not across the pause
	for i := range n {
		p[i] = 'x'
	}
	s.left -= n
	return n, nil
}

// An answer copied from a source that pauses (ReadFrom, as media
// downloads are served) is cut off by its client's pauses only: the
// write deadline was moved before each read of the source, so a read
// that took longer than the write timeout left the next write no time
// at all (HTTP/1), and over HTTP/2 the deadline's timer reset the stream
// during the read.
func TestAnAnswerFromASlowSourceIsCutOffOnlyByItsClient(t *testing.T) {
	const timeout = 300 * time.Millisecond
	cert, pool := selfSigned(t)
	e := newEnv(t, Config{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}, WriteIdleTimeout: timeout})
	e.g.Mount(httpapi.Route{Method: http.MethodGet, Pattern: "/source", Handler: func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.(io.ReaderFrom).ReadFrom(&slowSource{pause: 3 * timeout, left: 2 * slowSourcePart})
	}})
	e.run(t)
	for _, h2 := range []bool{false, true} {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: h2}
		if !h2 {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{} // HTTP/1.1 only
		}
		client := &http.Client{Transport: tr}
		req, _ := http.NewRequest(http.MethodGet, e.g.URL()+"/source", nil)
		req.Header.Set("Authorization", "Bearer good-alice")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("h2=%v: %v", h2, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		client.CloseIdleConnections()
		if resp.ProtoMajor != map[bool]int{false: 1, true: 2}[h2] || resp.StatusCode != http.StatusOK || err != nil || len(b) != 2*slowSourcePart {
			t.Fatalf("%s from a source that pauses 3 times the write timeout: %d, %d bytes of %d, %v", resp.Proto, resp.StatusCode, len(b), 2*slowSourcePart, err)
		}
	}
}
