package main

import (
	"crypto/tls"
	"encoding/pem"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/edgechat/edgechat/bridge/push/pushtest"
)

// trustMock writes the certificate the mock at rawURL presents to a PEM
// file and points SSL_CERT_FILE at it, so that an edgechat process started
// by this test trusts the mock as it trusts a real provider: through the
// system's roots.
func trustMock(t *testing.T, rawURL string) {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", u.Host, &tls.Config{InsecureSkipVerify: true}) // only to read its certificate
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var b []byte
	for _, c := range conn.ConnectionState().PeerCertificates {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	f := filepath.Join(t.TempDir(), "mock-ca.pem")
	if err := os.WriteFile(f, b, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SSL_CERT_FILE", f)
}

// `edgechat push test USER` sends through the node's APNs provider (a
// mock) and prints one line per device; the dead token's registration is
// removed.
func TestPushTestCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a real process")
	}
	bin := edgechatBinary(t)
	keyPEM, key, err := pushtest.NewAPNsKey()
	if err != nil {
		t.Fatal(err)
	}
	mock := pushtest.StartAPNs(t, pushtest.APNsOptions{Key: &key.PublicKey, KeyID: "KEY1234567", TeamID: "TEAM123456"})
	trustMock(t, mock.URL)
	data := t.TempDir()
	keyFile := filepath.Join(t.TempDir(), "AuthKey.p8")
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	p := startServe(t, bin, "--data", data, "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0",
		"--cluster-addr", "127.0.0.1:0", "--apns-key-file", keyFile, "--apns-key-id", "KEY1234567",
		"--apns-team-id", "TEAM123456", "--apns-topic", "com.example.chat", "--apns-endpoint", mock.URL)
	runCLI(t, bin, "a long password\n", "user", "add", "alice", "--password-stdin", "--server", p.http)
	tok := runCLI(t, bin, "", "token", "alice", "--data", data, "--server", p.http)
	live, dead := pushtest.NewDeviceToken(), pushtest.NewDeviceToken()
	mock.Fail(dead, pushtest.Unregistered)
	for dev, token := range map[string]string{"iphone": live, "old-iphone": dead} {
		if _, err := httpJSON("POST", p.http+"/user/me/devices", tok, map[string]string{"device": dev, "platform": "apns", "token": token}, nil); err != nil {
			t.Fatal(err)
		}
	}

	out := runCLI(t, bin, "", "push", "test", "alice", "--data", data, "--server", p.http)
	for _, want := range []string{`(?m)^iphone\s+apns\s+delivered\s+200\s+-$`,
		`(?m)^old-iphone\s+apns\s+dead_token\s+410\s+Unregistered \(registration removed\)$`} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("output lacks %s:\n%s", want, out)
		}
	}
	if n := mock.Delivered(live); n != 1 {
		t.Errorf("the mock got %d notifications for the live device", n)
	}
	var list struct{ Devices []struct{ Device string } }
	if _, err := httpJSON("GET", p.http+"/user/me/devices", tok, nil, &list); err != nil || len(list.Devices) != 1 || list.Devices[0].Device != "iphone" {
		t.Errorf("devices after the test: %+v %v", list, err)
	}
	if out := runCLI(t, bin, "", "push", "test", "nobody", "--data", data, "--server", p.http); !strings.Contains(out, "no push devices") {
		t.Errorf("a user without devices: %q", out)
	}
}
