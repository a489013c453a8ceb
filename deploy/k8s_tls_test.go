package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/edgechat/edgechat/node"
)

// uncomment writes a copy of file with the commented-out lines that match
// re uncommented ("#" and one space removed, indentation kept), as an
// operator following the manifests' TLS instructions does.
func uncomment(t *testing.T, file string, re *regexp.Regexp) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	out := re.ReplaceAll(b, []byte("$1$2"))
	f := filepath.Join(t.TempDir(), filepath.Base(file))
	if err := os.WriteFile(f, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// With TLS on (docs/operations.md, Kubernetes: the tls_cert/tls_key lines
// of the ConfigMap uncommented) the HTTP port speaks only HTTPS, and a
// probe without scheme: HTTPS gets "400 Client sent an HTTP request to an
// HTTPS server": the readiness probe never passes and the liveness and
// startup probes restart the pods for ever. The manifests say how to turn
// TLS on; following them must give HTTPS probes.
func TestK8sProbesFollowTLS(t *testing.T) {
	cm := uncomment(t, deployFile("k8s/configmap.yaml"), regexp.MustCompile(`(?m)^(\s*)# (tls_(?:cert|key): )`))
	sts := uncomment(t, deployFile("k8s/statefulset.yaml"), regexp.MustCompile(`(?m)^(\s*)# (scheme: HTTPS)`))

	data := getString(readYAML(t, cm)[0], "data", "edgechat.yaml")
	f := filepath.Join(t.TempDir(), "edgechat.yaml")
	if err := os.WriteFile(f, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := node.LoadConfig([]string{"--config", f}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TLSCert == "" || cfg.TLSKey == "" {
		t.Fatal("the ConfigMap's TLS lines, uncommented, do not turn TLS on")
	}
	c := getList(readYAML(t, sts)[0], "spec", "template", "spec", "containers")[0]
	for _, p := range []string{"readinessProbe", "livenessProbe", "startupProbe"} {
		if get(c, p, "httpGet") == nil {
			continue
		}
		if s := getString(c, p, "httpGet", "scheme"); s != "HTTPS" {
			t.Errorf("with TLS on, %s has scheme %q: want HTTPS (a commented-out \"# scheme: HTTPS\" under its httpGet)", p, s)
		}
	}
}
