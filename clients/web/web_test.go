package web

import (
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

func serveApp(t *testing.T) (*App, *httptest.Server) {
	t.Helper()
	a, err := New(Config{Heartbeat: 1500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", a.ServeIndex)
	mux.HandleFunc("GET /assets/", a.ServeAsset)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return a, srv
}

func get(t *testing.T, url string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	tr := &http.Transport{DisableCompression: true} // see the bytes as sent
	res, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, b
}

// The page is never cached, names this build's assets, carries a strict
// policy and has no inline script or style for that policy to allow.
func TestIndex(t *testing.T) {
	a, srv := serveApp(t)
	res, body := get(t, srv.URL+"/")
	if res.StatusCode != 200 || res.Header.Get("Cache-Control") != "no-cache" || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("index: %d %v", res.StatusCode, res.Header)
	}
	csp := res.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self';", "frame-ancestors 'none'", "connect-src 'self' ws://" + strings.TrimPrefix(srv.URL, "http://")} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe") {
		t.Errorf("CSP allows unsafe sources: %q", csp)
	}
	if !strings.Contains(string(body), `<meta name="edgechat-heartbeat" content="1500">`) {
		t.Fatalf("index does not carry the heartbeat interval:\n%s", body)
	}
	if !strings.Contains(string(body), `src="/assets/`+a.Version()+`/js/app.js"`) || strings.Contains(string(body), assetsToken) {
		t.Fatalf("index does not name this build's assets:\n%s", body)
	}
	for _, tag := range regexp.MustCompile(`<script[^>]*>`).FindAllString(string(body), -1) {
		if !strings.Contains(tag, ` src="`) {
			t.Errorf("inline script in the page: %s", tag)
		}
	}
	if m := regexp.MustCompile(`<style|\sstyle=|\son[a-z]+=`).FindString(string(body)); m != "" {
		t.Errorf("inline style or handler in the page: %q", m)
	}
	if res, _ := get(t, srv.URL+"/index.html"); res.StatusCode != 404 {
		t.Fatalf("/index.html: %d (only / serves the page)", res.StatusCode)
	}
}

// Assets are immutable under their version, compressed when the browser
// takes it, typed, and 404 under any other version or name.
func TestAssets(t *testing.T) {
	a, srv := serveApp(t)
	base := srv.URL + "/assets/" + a.Version()
	res, plain := get(t, base+"/js/app.js")
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/javascript; charset=utf-8" ||
		res.Header.Get("Cache-Control") != "public, max-age=31536000, immutable" || res.Header.Get("Content-Encoding") != "" {
		t.Fatalf("app.js: %d %v", res.StatusCode, res.Header)
	}
	res, gz := get(t, base+"/js/app.js", "Accept-Encoding", "br, gzip")
	if res.Header.Get("Content-Encoding") != "gzip" || len(gz) >= len(plain) {
		t.Fatalf("gzip: %v, %d bytes of %d", res.Header, len(gz), len(plain))
	}
	zr, err := gzip.NewReader(strings.NewReader(string(gz)))
	if err != nil {
		t.Fatal(err)
	}
	if un, _ := io.ReadAll(zr); string(un) != string(plain) {
		t.Fatal("the gzip body is not the file")
	}
	if res, _ := get(t, base+"/js/app.js", "If-None-Match", res.Header.Get("ETag")); res.StatusCode != http.StatusNotModified {
		t.Fatalf("If-None-Match: %d", res.StatusCode)
	}
	if res, _ := get(t, base+"/app.css"); res.Header.Get("Content-Type") != "text/css; charset=utf-8" {
		t.Fatalf("app.css type %q", res.Header.Get("Content-Type"))
	}
	for _, path := range []string{"/assets/000000000000/js/app.js", base + "x/js/app.js", "/assets/" + a.Version() + "/index.html",
		"/assets/" + a.Version() + "/js/nope.js", "/assets/" + a.Version() + "/../web.go", "/assets/" + a.Version()} {
		if !strings.HasPrefix(path, "http") {
			path = srv.URL + path
		}
		if res, _ := get(t, path); res.StatusCode != 404 {
			t.Errorf("%s: %d, want 404", path, res.StatusCode)
		}
	}
	raw, compressed := a.Size()
	t.Logf("first load: %d bytes, %d compressed", raw, compressed)
	if compressed >= raw || compressed > 300<<10 {
		t.Errorf("first load %d bytes compressed (goal under 300 KB)", compressed)
	}
}

// The vendored mqtt.js is the file `make web-vendor` recorded.
func TestVendoredFilesMatchTheirSums(t *testing.T) {
	f, err := os.Open("vendor.sum")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 5 || !strings.HasPrefix(fields[4], "sha256:") {
			t.Fatalf("vendor.sum line %q", sc.Text())
		}
		b, err := os.ReadFile("static/" + fields[3])
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		if got := hex.EncodeToString(sum[:]); "sha256:"+got != fields[4] {
			t.Errorf("%s: sha256 %s, vendor.sum says %s (run make web-vendor)", fields[3], got, fields[4])
		}
		n++
	}
	if n == 0 {
		t.Fatal("vendor.sum is empty")
	}
}

// The app's own modules never hand text to an HTML parser or to eval:
// everything users write reaches the page through textContent.
func TestNoHTMLSinks(t *testing.T) {
	entries, err := static.ReadDir("static/js")
	if err != nil {
		t.Fatal(err)
	}
	sink := regexp.MustCompile(`innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|setTimeout\(\s*['"]`)
	for _, e := range entries {
		b, err := static.ReadFile("static/js/" + e.Name())
		if err != nil {
			t.Fatal(err)
		}
		if m := sink.Find(b); m != nil {
			t.Errorf("%s uses %s", e.Name(), m)
		}
	}
	if len(entries) < 4 {
		t.Fatalf("only %d modules in static/js", len(entries))
	}
}

type fakePeers struct{ http, sources []string }

func (p fakePeers) HTTP() []string    { return p.http }
func (p fakePeers) Sources() []string { return p.sources }

// The page names the cluster's nodes and its policy lets it connect to
// them (and to nothing else); without peers it names none.
func TestIndexNamesPeers(t *testing.T) {
	a, err := New(Config{Peers: fakePeers{http: []string{"http://127.0.0.1:4001", "https://n2.example.com"},
		sources: []string{"http://127.0.0.1:4001", "https://n2.example.com", "ws://127.0.0.1:4001", "wss://n2.example.com", "https://x; script-src *"}}})
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	a.ServeIndex(w, httptest.NewRequest("GET", "http://node1.example.com/", nil))
	if !strings.Contains(w.Body.String(), `<meta name="edgechat-peers" content="http://127.0.0.1:4001 https://n2.example.com">`) {
		t.Fatalf("the page does not name the peers:\n%s", w.Body)
	}
	if n, _ := strconv.Atoi(w.Header().Get("Content-Length")); n != w.Body.Len() {
		t.Fatalf("Content-Length %d for %d bytes", n, w.Body.Len())
	}
	csp := w.Header().Get("Content-Security-Policy")
	if !strings.Contains(csp, "connect-src 'self' ws://node1.example.com wss://node1.example.com http://127.0.0.1:4001 https://n2.example.com ws://127.0.0.1:4001 wss://n2.example.com;") {
		t.Fatalf("CSP %q", csp)
	}
	_, srv := serveApp(t)
	if _, body := get(t, srv.URL+"/"); !strings.Contains(string(body), `<meta name="edgechat-peers" content="">`) {
		t.Fatalf("without peers:\n%s", body)
	}
}

// The page's policy lets it fetch from the media store GET /media/{id}
// redirects to (an S3 store's presigned URLs), after the nodes.
func TestIndexAllowsTheMediaStore(t *testing.T) {
	a, err := New(Config{Peers: fakePeers{sources: []string{"http://127.0.0.1:4001"}},
		MediaOrigins: []string{"https://media.example.com", "https://bad; script-src *"}})
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	a.ServeIndex(w, httptest.NewRequest("GET", "http://node1.example.com/", nil))
	csp := w.Header().Get("Content-Security-Policy")
	if !strings.Contains(csp, "connect-src 'self' ws://node1.example.com wss://node1.example.com http://127.0.0.1:4001 https://media.example.com;") {
		t.Fatalf("CSP %q", csp)
	}
}
