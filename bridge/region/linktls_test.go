package region_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	regionpkg "github.com/edgechat/edgechat/bridge/region"
	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// testCA is a certificate authority of a test: it signs link client
// certificates.
type testCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
	file    string // the CA certificate in PEM
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{cert: cert, key: key, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
	ca.file = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca.file, ca.certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return ca
}

// linkCert is a client certificate the CA issued, in PEM files.
type linkCert struct {
	certFile, keyFile string
	pair              tls.Certificate
}

// issue signs a client certificate with SAN DNS names dns (none: the
// subject CN cn only).
func (ca *testCA) issue(t *testing.T, cn string, dns ...string) *linkCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn}, DNSNames: dns,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	c := &linkCert{certFile: filepath.Join(dir, "link.pem"), keyFile: filepath.Join(dir, "link-key.pem")}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	if err := os.WriteFile(c.certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if c.pair, err = tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	return c
}

// pairOpts configures one region of startPair.
type pairOpts struct {
	scheme string    // of the link URL: tcp, tls, ws or wss
	secret bool      // a --link-secret-file
	ca     *testCA   // --link-ca
	cert   *linkCert // --link-cert/--link-key
}

// startPair starts two single-node regions a and b behind proxies, both
// serving TLS with server (every scheme but tcp and ws), each linked to
// the other with URLs of scheme: tcp:// and tls:// to the MQTT
// listeners, ws:// and wss:// to the gateways' /mqtt.
func startPair(t *testing.T, a, b string, server *testCert, opts map[string]pairOpts) (*region, *region) {
	t.Helper()
	ra, rb := &region{name: a, in: newProxy(t)}, &region{name: b, in: newProxy(t)}
	numbers := map[string]int{a: 1, b: 2}
	start := func(r, other *region) {
		o := opts[r.name]
		host := strings.TrimPrefix(other.in.URL(), "tcp://")
		u := o.scheme + "://" + host
		if o.scheme == "ws" || o.scheme == "wss" {
			u += "/mqtt"
		}
		n := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) {
			c.Region, c.RegionNumber = r.name, numbers[r.name]
			c.Links = []string{other.name + "=" + u}
			if o.secret {
				c.LinkSecretFile = filepath.Join(t.TempDir(), "link-secret")
				if err := os.WriteFile(c.LinkSecretFile, []byte(secret+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if server != nil {
				c.TLSCert, c.TLSKey = server.certFile, server.keyFile
				c.LinkTLS = &tls.Config{RootCAs: server.pool, MinVersion: tls.VersionTLS12}
			}
			if o.ca != nil {
				c.LinkCA = o.ca.file
			}
			if o.cert != nil {
				c.LinkCert, c.LinkKey = o.cert.certFile, o.cert.keyFile
			}
		}))
		r.nodes = []*nodetest.Node{n}
		switch o.scheme {
		case "tcp":
			r.in.setTarget(n.MQTTAddr())
		case "tls":
			r.in.setTarget(n.MQTTSAddr())
		default:
			hu, err := url.Parse(n.HTTPURL)
			if err != nil {
				t.Fatal(err)
			}
			r.in.setTarget(hu.Host)
		}
	}
	start(ra, rb)
	start(rb, ra)
	return ra, rb
}

// dmBothWays sends alice@a -> bob@b and bob's answer back, over the link.
func dmBothWays(t *testing.T, ra, rb *region) {
	t.Helper()
	aliceTok, bobTok := ra.newUser(t, "alice"), rb.newUser(t, "bob")
	alice := connect(t, ra.nodes[0], "alice", "phone", aliceTok)
	bob := connect(t, rb.nodes[0], "bob", "phone", bobTok)
	alice.MustSub(t, "user/alice/newMessage")
	bob.MustSub(t, "user/bob/newMessage")
	if code, ack := alice.Pub(t, "user/bob@"+rb.name+"/newMessage", 1, textMsg("c1", "there")); code != 0 {
		t.Fatalf("PUBACK %#x %q", code, ack.Properties.ReasonString)
	}
	if e := decode(t, bob.Next(t).Payload); e.Body != "there" || e.From != "alice@"+ra.name {
		t.Fatalf("bob got %+v", e)
	}
	if code, ack := bob.Pub(t, "user/alice@"+ra.name+"/newMessage", 1, textMsg("c2", "and back")); code != 0 {
		t.Fatalf("PUBACK %#x %q", code, ack.Properties.ReasonString)
	}
	for {
		e := decode(t, alice.Next(t).Payload)
		if e.From == "alice" {
			continue // her own message, copied to her devices
		}
		if e.Body != "and back" || e.From != "bob@"+rb.name {
			t.Fatalf("alice got %+v", e)
		}
		break
	}
}

// Links over MQTT over WebSocket to the other region's gateway: ws:// on
// plain HTTP, wss:// on HTTPS; DMs both ways.
func TestLinkOverWebSocket(t *testing.T) {
	t.Run("ws", func(t *testing.T) {
		o := pairOpts{scheme: "ws", secret: true}
		eu, us := startPair(t, "eu", "us", nil, map[string]pairOpts{"eu": o, "us": o})
		dmBothWays(t, eu, us)
	})
	t.Run("wss", func(t *testing.T) {
		o := pairOpts{scheme: "wss", secret: true}
		eu, us := startPair(t, "eu", "us", newTestCert(t), map[string]pairOpts{"eu": o, "us": o})
		dmBothWays(t, eu, us)
		if v := counter(t, eu.nodes[0], "edgechat_region_link_connects_total", `result="connected"`); v < 1 {
			t.Fatalf("connects %v", v)
		}
	})
}

// Mutual TLS without secrets: each region presents a certificate the
// link CA signed that names it (one by SAN DNS name, one by CN only),
// over tls:// to the MQTT listener and over wss:// to the gateway.
func TestLinkMutualTLS(t *testing.T) {
	for _, scheme := range []string{"tls", "wss"} {
		t.Run(scheme, func(t *testing.T) {
			ca := newTestCA(t, "link CA")
			eu, us := startPair(t, "eu", "us", newTestCert(t), map[string]pairOpts{
				"eu": {scheme: scheme, ca: ca, cert: ca.issue(t, "edge eu", "eu")},
				"us": {scheme: scheme, ca: ca, cert: ca.issue(t, "us")},
			})
			dmBothWays(t, eu, us)
			for _, r := range []*region{eu, us} {
				if v := counter(t, r.nodes[0], "edgechat_region_link_auth_total", `result="ok"`); v < 1 {
					t.Fatalf("%s: auth ok %v", r.name, v)
				}
				if v := counter(t, r.nodes[0], "edgechat_region_link_auth_total", `result="bad_`); v != 0 {
					t.Fatalf("%s: refusals %v", r.name, v)
				}
			}
		})
	}
}

// A region that accepts links by certificate refuses a certificate for
// another region (by SAN DNS name; the CN does not count when there are
// DNS names), one of another CA (in the TLS handshake), and a $link/
// connection with neither certificate nor a secret this region has; a
// user without a certificate still connects to the same TLS listener.
func TestLinkMutualTLSRefused(t *testing.T) {
	ca, other := newTestCA(t, "link CA"), newTestCA(t, "another CA")
	server := newTestCert(t)
	_, us := startPair(t, "eu", "us", server, map[string]pairOpts{
		"eu": {scheme: "tls", ca: ca, cert: ca.issue(t, "eu", "eu")},
		"us": {scheme: "tls", ca: ca, cert: ca.issue(t, "us", "us")},
	})
	n := us.nodes[0]
	dial := func(cert *linkCert, password string) error {
		t.Helper()
		cfg := &tls.Config{RootCAs: server.pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12, NextProtos: []string{regionpkg.LinkALPN}}
		if cert != nil {
			// Sent even when the server names other acceptable CAs (a
			// Go client would otherwise send none).
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert.pair, nil }
		}
		conn, err := tls.Dial("tcp", n.MQTTSAddr(), cfg)
		if err != nil {
			return err
		}
		_, _, err = mqtttest.Connect(t, conn, mqtttest.Options{ClientID: "$link/eu", Username: "$link/eu", Password: password, Timeout: 5 * time.Second})
		return err
	}
	auth := func(result string) float64 {
		return counter(t, n, "edgechat_region_link_auth_total", `result="`+result+`"`)
	}
	if err := dial(ca.issue(t, "fr", "fr"), ""); err == nil {
		t.Fatal("a certificate for region fr was accepted as eu's link")
	}
	if v := auth("bad_cert"); v != 1 {
		t.Fatalf("bad_cert %v", v)
	}
	if err := dial(ca.issue(t, "eu", "fr"), ""); err == nil {
		t.Fatal("a certificate whose DNS name is fr (CN eu) was accepted")
	}
	if err := dial(other.issue(t, "eu", "eu"), ""); err == nil {
		t.Fatal("a certificate of another CA was accepted")
	}
	if err := dial(nil, ""); err == nil {
		t.Fatal("a link without certificate and secret was accepted")
	}
	if err := dial(nil, secret); err == nil {
		t.Fatal("a link without certificate, with a secret this region does not have, was accepted")
	}
	if v := auth("no_cert"); v != 1 {
		t.Fatalf("no_cert %v", v)
	}
	if v := auth("bad_cert"); v != 2 {
		t.Fatalf("bad_cert %v (a certificate of another CA must fail the handshake, not reach the bridge)", v)
	}
	// A user presents no certificate to the same listener, and neither it
	// nor the HTTPS gateway asks users or browsers for one (a browser
	// would show a certificate picker): only a client offering the link's
	// application protocol is asked.
	asked := func(addr string, protos ...string) (bool, *tls.Conn) {
		t.Helper()
		var requested bool
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: server.pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12, NextProtos: protos,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				requested = true
				return &tls.Certificate{}, nil
			}})
		if err != nil {
			t.Fatalf("TLS to %s offering %q: %v", addr, protos, err)
		}
		return requested, conn
	}
	gw, err := url.Parse(n.HTTPURL)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		addr   string
		protos []string
		want   bool
	}{
		{n.MQTTSAddr(), nil, false},
		{n.MQTTSAddr(), []string{"mqtt"}, false},
		{gw.Host, []string{"h2", "http/1.1"}, false},
		{n.MQTTSAddr(), []string{regionpkg.LinkALPN}, true},
		{gw.Host, []string{regionpkg.LinkALPN, "http/1.1"}, true},
	} {
		got, conn := asked(c.addr, c.protos...)
		_ = conn.Close()
		if got != c.want {
			t.Errorf("%s offering %q: asked for a client certificate %v, want %v", c.addr, c.protos, got, c.want)
		}
	}
	tok := us.newUser(t, "carol")
	_, conn := asked(n.MQTTSAddr())
	if _, _, err := mqtttest.Connect(t, conn, mqtttest.Options{ClientID: "carol/phone", Username: "carol", Password: tok}); err != nil {
		t.Fatalf("a user over TLS without a certificate: %v", err)
	}
	// A browser's HTTP/2 over the same HTTPS listener still works.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: server.pool, ServerName: "127.0.0.1"}, ForceAttemptHTTP2: true}}
	resp, err := hc.Get(n.HTTPURL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz over HTTPS: %s %d, want HTTP/2 200", resp.Proto, resp.StatusCode)
	}
}
