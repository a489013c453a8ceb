package e2e_test

import (
	"context"
	"crypto/tls"
	"net/http"
	"strings"
	"testing"
	"time"

	edgechat "github.com/edgechat/edgechat/clients/go"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// The SDK over TLS: one user on wss://, the other on mqtts://, each
// trusting the node's certificate through Options.TLSConfig (whose
// ServerName the SDK fills from the URL), exchange messages; a client
// that does not trust the certificate does not connect.
func TestClientsOverWSSAndMQTTS(t *testing.T) {
	cert := testutil.WriteSelfSignedCert(t, "127.0.0.1")
	n := nodetest.StartNode(t, nodetest.WithConfig(func(c *node.Config) { c.TLSCert, c.TLSKey = cert.CertFile, cert.KeyFile }))
	if !strings.HasPrefix(n.WSURL, "wss://") || n.Node.MQTTSAddr() == "" {
		t.Fatalf("the node with a certificate serves %s and MQTTS at %q", n.WSURL, n.Node.MQTTSAddr())
	}
	aliceTok, bobTok := n.NewUser(t, "alice"), n.NewUser(t, "bob")
	tc := &tls.Config{RootCAs: cert.Pool}
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
