package certfile

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// newPair writes a self-signed certificate with serial to certFile and
// its key to keyFile.
func newPair(t *testing.T, certFile, keyFile string, serial int64) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func serial(p *Pair) int64 { return p.Certificate().Leaf.SerialNumber.Int64() }

// A renewal written in place is served once Every has passed; a renewal
// caught half written (the new certificate, the old key) keeps the
// certificate in use, says so once, and is picked up once whole.
func TestRenewalIsServedAndAHalfWrittenOneWaits(t *testing.T) {
	dir := t.TempDir()
	cf, kf := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	newPair(t, cf, kf, 1)
	var logs bytes.Buffer
	p, err := Load(cf, kf, time.Minute, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	p.now = func() time.Time { return now }
	if s := serial(p); s != 1 {
		t.Fatalf("serial %d, want 1", s)
	}

	// Half written: a new certificate, the old key still there.
	oldKey, _ := os.ReadFile(kf)
	newPair(t, cf, kf, 2)
	newKey, _ := os.ReadFile(kf)
	if err := os.WriteFile(kf, oldKey, 0o600); err != nil {
		t.Fatal(err)
	}
	future := now.Add(time.Hour) // modification times differ from the load's
	_ = os.Chtimes(cf, future, future)
	_ = os.Chtimes(kf, future, future)
	if s := serial(p); s != 1 {
		t.Fatalf("before Every passed: serial %d, want 1", s)
	}
	now = now.Add(time.Minute)
	if s := serial(p); s != 1 {
		t.Fatalf("half-written renewal: serial %d, want the one in use, 1", s)
	}
	now = now.Add(time.Minute)
	_ = serial(p)
	if n := strings.Count(logs.String(), "do not load"); n != 1 {
		t.Errorf("the half-written renewal was logged %d times, want once:\n%s", n, logs.String())
	}

	// Whole.
	if err := os.WriteFile(kf, newKey, 0o600); err != nil {
		t.Fatal(err)
	}
	later := future.Add(time.Second)
	_ = os.Chtimes(kf, later, later)
	now = now.Add(time.Minute)
	if s := serial(p); s != 2 {
		t.Fatalf("after the renewal: serial %d, want 2", s)
	}

	// Files gone (a misconfigured renewal): the certificate in use stays.
	_ = os.Remove(cf)
	now = now.Add(time.Minute)
	if s := serial(p); s != 2 {
		t.Fatalf("files gone: serial %d, want 2", s)
	}
}

func TestLoadRefusesAPairThatDoesNotLoad(t *testing.T) {
	dir := t.TempDir()
	cf, kf := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if _, err := Load(cf, kf, 0, nil); err == nil {
		t.Fatal("missing files loaded")
	}
	newPair(t, cf, kf, 1)
	other := filepath.Join(dir, "other.pem")
	newPair(t, filepath.Join(dir, "c2.pem"), other, 2)
	if _, err := Load(cf, other, 0, nil); err == nil {
		t.Fatal("a certificate with another key loaded")
	}
}
