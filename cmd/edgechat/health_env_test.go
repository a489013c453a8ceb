package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// writeCert writes a self-signed certificate for chat.example.com (not
// for 127.0.0.1, as a real one would be) and its key.
func writeCert(t *testing.T) (certFile, keyFile string) {
	c := testutil.WriteSelfSignedCert(t, "chat.example.com")
	return c.CertFile, c.KeyFile
}

// startTLSNodeInEnv starts a node with a certificate and sets the
// environment `edgechat serve` would have run it with (its HTTP port,
// the certificate's files).
func startTLSNodeInEnv(t *testing.T) (n *nodetest.Node, certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = writeCert(t)
	n = nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) { c.TLSCert, c.TLSKey = certFile, keyFile }))
	_, port, err := net.SplitHostPort(n.Node.Gateway.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("EDGECHAT_HTTP_ADDR", ":"+port)
	t.Setenv("EDGECHAT_TLS_CERT", certFile)
	t.Setenv("EDGECHAT_TLS_KEY", keyFile)
	return n, certFile, keyFile
}

// The container health check (deploy/Dockerfile, compose.yaml) runs
// `edgechat health` in the node's own environment. It asked
// http://127.0.0.1:8080/readyz whatever that environment configured, so a
// container given another port (EDGECHAT_HTTP_ADDR, the documented way to
// configure the image) or TLS (EDGECHAT_TLS_CERT: the port then answers
// plain HTTP with 400) was unhealthy for ever. Without --url it now asks
// the node the environment describes, over TLS when it has a certificate
// (checking that the node presents that certificate).
func TestHealthFollowsTheNodesEnvironment(t *testing.T) {
	startTLSNodeInEnv(t)
	// As in compose.yaml: the cluster size in the environment, --join as
	// a flag of serve (which the health check does not see).
	t.Setenv("EDGECHAT_BOOTSTRAP_EXPECT", "3")
	var out bytes.Buffer
	if err := healthCmd(context.Background(), nil, &out); err != nil || strings.TrimSpace(out.String()) != "ok" {
		t.Fatalf("edgechat health in the node's environment: %v %q", err, out.String())
	}

	// Another certificate at that address is not this node.
	other, otherKey := writeCert(t)
	t.Setenv("EDGECHAT_TLS_CERT", other)
	t.Setenv("EDGECHAT_TLS_KEY", otherKey)
	if err := healthCmd(context.Background(), nil, &out); err == nil {
		t.Fatal("a node presenting another certificate was taken for this one")
	}
}

// A certificate renewed in place (certbot, cert-manager: the files
// replaced, the node left running) is presented from the next handshake
// on, over HTTPS and MQTTS, and `edgechat health`, which checks that the
// node presents the certificate in the file, passes again. Before, the
// node presented the old certificate until it restarted: once it
// expired every client refused it, and the health check failed from the
// renewal on.
func TestARenewedCertificateIsServedWithoutARestart(t *testing.T) {
	n, cert, key := startTLSNodeInEnv(t)
	var out bytes.Buffer
	if err := healthCmd(context.Background(), nil, &out); err != nil {
		t.Fatalf("edgechat health before the renewal: %v", err)
	}
	presented := func(addr string) []byte {
		t.Helper()
		c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) // the certificate is compared below
		if err != nil {
			t.Fatalf("TLS to %s: %v", addr, err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Raw
	}
	old := presented(n.Node.Gateway.Addr())

	// The renewal: new files moved over the old ones, one after the other.
	newCert, newKey := writeCert(t)
	for _, mv := range [][2]string{{newCert, cert}, {newKey, key}} {
		if err := os.Rename(mv[0], mv[1]); err != nil {
			t.Fatal(err)
		}
	}
	renewed, err := tls.LoadX509KeyPair(cert, key)
	if err != nil || bytes.Equal(renewed.Certificate[0], old) {
		t.Fatalf("the renewed files: %v (same certificate: %v)", err, err == nil)
	}
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		for name, addr := range map[string]string{"HTTPS": n.Node.Gateway.Addr(), "MQTTS": n.Node.MQTTSAddr()} {
			if !bytes.Equal(presented(addr), renewed.Certificate[0]) {
				return fmt.Errorf("%s still presents the certificate from before the renewal", name)
			}
		}
		return healthCmd(context.Background(), nil, &out)
	})
}
