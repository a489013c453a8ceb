package deploy

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// haproxy.cfg passes TLS through to the nodes ("HTTPS/WSS on 8080 when
// the nodes have a certificate"), but its health checks (GET /readyz on
// 8080) spoke plain HTTP only: with a certificate on the nodes every
// check got "400 Client sent an HTTP request to an HTTPS server", haproxy
// took every node out and served nothing. The file now carries the
// default-server line for TLS nodes (checks over TLS), commented out, to
// use instead of the plain one.
func TestHAProxyChecksFollowTheNodesTLS(t *testing.T) {
	b, err := os.ReadFile(deployFile("haproxy.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(b)
	if !strings.Contains(cfg, "HTTPS/WSS on 8080 when the nodes have a certificate") {
		t.Skip("haproxy.cfg no longer passes TLS on 8080 through")
	}
	tlsLine := regexp.MustCompile(`(?m)^\s*#\s*(default-server .*)$`).FindAllStringSubmatch(cfg, -1)
	var found string
	for _, m := range tlsLine {
		if strings.Contains(m[1], "check-ssl") {
			found = m[1]
		}
	}
	if found == "" {
		t.Fatal("no default-server line with check-ssl for nodes with a certificate: their /readyz checks would speak plain HTTP to HTTPS")
	}
	// The TLS variant checks the same way, only over TLS (the nodes'
	// certificates name their public host: no verification of them).
	if !regexp.MustCompile(`\bcheck port 8080\b`).MatchString(found) || !strings.Contains(found, "verify none") {
		t.Errorf("TLS default-server %q: want check port 8080 check-ssl verify none", found)
	}
	active := regexp.MustCompile(`(?m)^\s*(default-server .*)$`).FindStringSubmatch(cfg)
	if active == nil || strings.TrimSpace(strings.ReplaceAll(strings.Replace(found, " check-ssl verify none", "", 1), "  ", " ")) != strings.TrimSpace(active[1]) {
		t.Errorf("the TLS default-server line %q differs from the plain one %q in more than check-ssl verify none", found, active)
	}
}
