package e2e_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	edgechat "github.com/edgechat/edgechat/clients/go"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// The SDK over TLS: one user on wss://, the other on mqtts://, each
// trusting the node's certificate through Options.TLSConfig (whose
// ServerName the SDK fills from the URL), exchange messages; a client
// that does not trust the certificate does not connect.
func TestClientsOverWSSAndMQTTS(t *testing.T) {
	certFile, keyFile, roots := writeLocalCert(t)
	n := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) { c.TLSCert, c.TLSKey = certFile, keyFile }))
	if !strings.HasPrefix(n.WSURL, "wss://") || n.Node.MQTTSAddr() == "" {
		t.Fatalf("the node with a certificate serves %s and MQTTS at %q", n.WSURL, n.Node.MQTTSAddr())
	}
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	tc := &tls.Config{RootCAs: roots}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	ab, bb := newInbox(), newInbox()
	alice := dial(t, []string{n.WSURL}, "", aliceTok, ab, func(o *edgechat.Options) { o.TLSConfig, o.HTTPClient = tc, hc })
	bob := dial(t, []string{"mqtts://" + n.Node.MQTTSAddr()}, n.HTTPURL, bobTok, bb, func(o *edgechat.Options) { o.TLSConfig, o.HTTPClient = tc, hc })
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	m1, err := alice.Send(ctx, "bob", "over wss")
	if err != nil {
		t.Fatal(err)
	}
	bb.waitOnce(t, m1.ID)
	m2, err := bob.Send(ctx, "alice", "over mqtts")
	if err != nil {
		t.Fatal(err)
	}
	ab.waitOnce(t, m2.ID)

	for _, url := range []string{n.WSURL, "mqtts://" + n.Node.MQTTSAddr()} {
		dctx, dcancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := edgechat.Dial(dctx, edgechat.Options{URLs: []string{url}, HTTPURL: n.HTTPURL, Token: aliceTok, HTTPClient: hc, Device: "untrusting"})
		dcancel()
		if err == nil {
			_ = c.Close()
			t.Fatalf("a client without the node's certificate among its roots connected over %s", url)
		}
	}
}

// writeLocalCert writes a self-signed certificate for 127.0.0.1 and its
// key, and returns the roots that trust it.
func writeLocalCert(t *testing.T) (certFile, keyFile string, roots *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots = x509.NewCertPool()
	roots.AddCert(cert)
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, roots
}
