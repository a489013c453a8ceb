package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// A node with a certificate this machine does not trust (self-signed, a
// private CA: docs/operations.md, TLS): each command says so and how to
// trust it (SSL_CERT_FILE), where it said only "x509: certificate signed
// by unknown authority", and the docs named no way to trust a private
// CA; `edgechat chat --token` showed an empty terminal until Ctrl+C.
func TestAnUntrustedCertificateSaysHowToTrustIt(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	t.Setenv("SSL_CERT_FILE", "") // the system's roots, which lack srv's
	tok := "e30.eyJzdWIiOiJhbGljZSJ9.x"
	for _, args := range [][]string{
		{"user", "add", "alice", "--password-stdin", "--server", srv.URL},
		{"health", "--url", srv.URL + "/readyz"},
		{"chat", "--server", srv.URL, "--user", "alice", "--token", tok},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		var stderr strings.Builder
		code := run(ctx, args, strings.NewReader("alice-password\n"), io.Discard, &stderr)
		expired := ctx.Err() != nil
		cancel()
		if code != 1 || expired || !strings.Contains(stderr.String(), "certificate") || !strings.Contains(stderr.String(), "SSL_CERT_FILE=") {
			t.Errorf("edgechat %s: exit %d (context ended: %v), stderr %q; want 1 at once, the certificate error and how to trust it", strings.Join(args[:2], " "), code, expired, stderr.String())
		}
	}
}
