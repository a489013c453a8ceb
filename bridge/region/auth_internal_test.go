package region

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"
)

// certAuthority signs test certificates.
type certAuthority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newAuthority(t *testing.T) certAuthority {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return certAuthority{cert, key}
}

func (ca certAuthority) issue(t *testing.T, cn string, usage x509.ExtKeyUsage, dns ...string) []*x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn}, DNSNames: dns, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return []*x509.Certificate{cert}
}

// With a link CA and a secret: a certificate that the CA verifies for
// client authentication and that names the region stands for the
// secret; one for another region (by DNS name: the CN does not count
// then), of another CA or for server authentication only is refused,
// whatever the password; without a certificate the secret decides. A
// link without a secret needs its certificate. Without a link CA,
// certificates are ignored.
func TestAuthenticateCertificate(t *testing.T) {
	const good = "a-shared-link-secret-of-the-test"
	e := testEphemeral(t)
	b := e.b
	ca, other := newAuthority(t), newAuthority(t)
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	b.cfg.LinkCA = pool
	b.links = map[string]Link{"us": {Name: "us", Secret: good}, "ap": {Name: "ap"}, "ke": {Name: "ke"}}
	client := x509.ExtKeyUsageClientAuth
	for _, c := range []struct {
		name     string
		region   string
		password string
		certs    []*x509.Certificate
		ok       bool
	}{
		{"certificate by DNS name, no password", "us", "", ca.issue(t, "edge", client, "us"), true},
		{"certificate by CN, wrong password", "us", "wrong", ca.issue(t, "us", client), true},
		{"certificate for another region, right secret", "us", good, ca.issue(t, "ap", client, "ap"), false},
		{"CN us but DNS name ap", "us", good, ca.issue(t, "us", client, "ap"), false},
		{"another CA, right secret", "us", good, other.issue(t, "us", client, "us"), false},
		{"server authentication only", "us", "", ca.issue(t, "us", x509.ExtKeyUsageServerAuth, "us"), false},
		{"no certificate, right secret", "us", good, nil, true},
		{"no certificate, wrong secret", "us", "wrong-secret-of-sixteen", nil, false},
		{"no secret: certificate", "ap", "", ca.issue(t, "ap", client, "ap"), true},
		{"no secret: no certificate", "ap", "", nil, false},
		{"no secret: no certificate, a password", "ap", good, nil, false},
		{"DNS name in capitals", "ap", "", ca.issue(t, "edge", client, "AP"), true},
		{"CN with a Kelvin sign for the k", "ke", "", ca.issue(t, "\u212Ae", client), false},
	} {
		var pw []byte
		if c.password != "" {
			pw = []byte(c.password)
		}
		id := "$link/" + c.region
		region, err := b.Authenticate(id, id, pw, strconv.Itoa(b.cfg.Number+1), c.certs)
		if (err == nil) != c.ok || c.ok && region != c.region {
			t.Errorf("%s: %q %v, want ok %v", c.name, region, err, c.ok)
		}
	}
	b.cfg.LinkCA = nil
	if _, err := b.Authenticate("$link/us", "$link/us", nil, strconv.Itoa(b.cfg.Number+1), ca.issue(t, "us", client, "us")); err == nil {
		t.Error("without a link CA, a certificate was accepted for the secret")
	}
	if _, err := b.Authenticate("$link/us", "$link/us", []byte(good), strconv.Itoa(b.cfg.Number+1), other.issue(t, "ap", client, "ap")); err != nil {
		t.Errorf("without a link CA, a certificate is ignored: %v", err)
	}
}

// A region that accepts the connection and never answers is left out
// after the search timeout, not the link's longer dial timeout.
func TestRemoteSearchTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	held := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held <- c // says nothing: no CONNACK
		}
	}()
	defer func() {
		for len(held) > 0 {
			_ = (<-held).Close()
		}
	}()
	e := testEphemeral(t)
	b := e.b
	b.cfg.Timeout, b.cfg.SearchTimeout, b.cfg.Node = time.Minute, 200*time.Millisecond, "n1"
	b.links = map[string]Link{"us": {Name: "us", URL: "tcp://" + ln.Addr().String(), Secret: "a-shared-link-secret-of-the-test"}}
	b.q = queries{clients: map[string]*queryClient{}, cache: map[string]cachedProfile{}}
	defer b.closeQueries()
	start := time.Now()
	found, unanswered := b.RemoteSearch(context.Background(), "bo", 10)
	if len(found) != 0 || !slices.Equal(unanswered, []string{"us"}) {
		t.Fatalf("found %s, unanswered %v", found, unanswered)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("took %v", d)
	}
}
