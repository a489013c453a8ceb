package broker

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
)

func selfSigned(t *testing.T) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "edgechat test"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}, pool
}

func TestTLSListener(t *testing.T) {
	srvCfg, pool := selfSigned(t)
	e := startBroker(t, func(c *Config) { c.MQTTSAddr, c.TLS = "127.0.0.1:0", srvCfg })
	if e.b.MQTTSAddr() == "" || e.b.MQTTSAddr() == e.b.MQTTAddr() {
		t.Fatalf("tls addr %q", e.b.MQTTSAddr())
	}
	conn, err := tls.Dial("tcp", e.b.MQTTSAddr(), &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	bob, _, err := mqtttest.Connect(t, conn, mqtttest.Options{ClientID: "bob/tls", Username: "bob", Password: "tok:bob"})
	if err != nil {
		t.Fatalf("connect over TLS: %v", err)
	}
	bob.MustSub(t, "user/bob/newMessage")
	alice := mustV5(t, e.addr, "alice", "phone")
	alice.Pub(t, "user/bob/newMessage", 1, `{"cid":"t","type":"text","body":"secure"}`)
	if got := envOf(t, bob.Next(t).Payload); got.Body != "secure" {
		t.Fatalf("got %+v", got)
	}
	if _, err := New(Config{MQTTSAddr: "127.0.0.1:0", Dev: true}, Deps{}); err == nil {
		t.Fatal("TLS address without certificate accepted")
	}
}

// A connection that never sends CONNECT is closed after ConnectTimeout.
func TestSilentConnectionClosed(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.ConnectTimeout = 100 * time.Millisecond })
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(waitFor))
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatal("read data from a silent connection")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("silent connection not closed by the server")
	}
}

// A persistent session keeps receiving while offline: deliveries to it
// are checked against the user its client ID names.
func TestPersistentSessionQueuesWhileOffline(t *testing.T) {
	e := startBroker(t, nil)
	dial := func() (*mqtttest.Client, bool) {
		conn, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		c, ca, err := mqtttest.Connect(t, conn, mqtttest.Options{ClientID: "bob/phone", Username: "bob", Password: "tok:bob", SessionExpiry: 600, KeepSession: true})
		if err != nil {
			t.Fatal(err)
		}
		return c, ca.SessionPresent
	}
	bob, _ := dial()
	bob.MustSub(t, "user/bob/newMessage")
	bob.Conn.Close() // drop without DISCONNECT
	select {
	case <-bob.Done():
	case <-time.After(waitFor):
		t.Fatal("client did not stop")
	}
	testutil.CheckFor(t, waitFor, 5*time.Millisecond, func() error {
		if e.b.Connections() != 0 {
			return errNoMsg
		}
		return nil
	})
	alice := mustV5(t, e.addr, "alice", "phone")
	alice.Pub(t, "user/bob/newMessage", 1, `{"cid":"off","type":"text","body":"while you were away"}`)
	bob2, present := dial()
	if !present {
		t.Fatal("session not present")
	}
	if got := envOf(t, bob2.Next(t).Payload); got.CID != "off" {
		t.Fatalf("got %+v", got)
	}
}
