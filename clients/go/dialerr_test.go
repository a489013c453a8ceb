package edgechat

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// A server whose certificate this machine does not trust (self-signed,
// a private CA not in the system's roots): Dial fails at once with the
// certificate error, over wss:// and tls://, as it does for a refused
// sign-in. It used to try again until its context ended and then said
// only "context deadline exceeded": the terminal client, started with
// --token against such a server, showed an empty screen for as long as
// the user waited and, at Ctrl+C, "context canceled".
func TestDialToAnUntrustedCertificateFailsFast(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "https://")
	for _, u := range []string{"wss://" + host + "/mqtt", "tls://" + host} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		start := time.Now()
		_, err := Dial(ctx, Options{URLs: []string{u}, HTTPURL: srv.URL, Token: fakeJWT("alice")})
		expired := ctx.Err() != nil
		cancel()
		var ua x509.UnknownAuthorityError
		if !errors.As(err, &ua) || expired {
			t.Errorf("%s: Dial returned after %v with %v; want the certificate error at once", u, time.Since(start).Round(time.Millisecond), err)
		}
	}
}

// A server that cannot be reached (nothing listens): Dial tries until
// its context ends, as it must (the server may come), and its error then
// says why the attempts failed, not only that the context ended.
func TestDialThatTimesOutSaysWhyTheAttemptsFailed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = Dial(ctx, Options{URLs: []string{"ws://" + addr + "/mqtt"}, HTTPURL: "http://" + addr, Token: fakeJWT("alice")})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("Dial: %v; want the deadline and the last attempt's error (connection refused)", err)
	}
}
