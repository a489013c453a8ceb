// Package web is edgechat's browser client: a chat app of plain ES
// modules (static/), embedded into the binary and served by every node at
// "/", talking MQTT over WebSocket to /mqtt and HTTP to the API.
//
// Nothing is built at run time and nothing needs Node.js: the files are
// served as they are in the tree (the mqtt.js browser bundle is vendored
// by `make web-vendor`). Every asset lives under /assets/{version}/,
// where version is a hash of all the files, so that assets can be cached
// for a year and a new build is never mixed with an old one; index.html,
// which names the version, is never cached.
package web

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// assetsToken is what index.html names the asset prefix with, and
// heartbeatToken the presence heartbeat interval in milliseconds.
const (
	assetsToken    = "{{ASSETS}}"
	heartbeatToken = "{{HEARTBEAT_MS}}"
	peersToken     = "{{PEERS}}"
)

// Config is what the page needs to know of the node.
type Config struct {
	// Heartbeat is the presence heartbeat interval (--heartbeat-interval):
	// the page heartbeats this often while its user is active.
	Heartbeat time.Duration
	// Peers are the cluster's nodes as a page reaches them (nil: this
	// node only): the page may connect to each (its policy allows them)
	// and asks them for /cluster/connect when its own node goes away.
	Peers PeerOrigins
	// MediaOrigins are where GET /media/{id} may redirect the page (the
	// S3 store's presigned URLs, http(s)://host[:port]): the page's
	// policy allows it to fetch from them.
	MediaOrigins []string
}

// PeerOrigins are the web origins of the cluster's nodes
// (clusterapi.Origins).
type PeerOrigins interface {
	HTTP() []string    // each node's HTTP origin
	Sources() []string // every HTTP and WebSocket origin of the nodes
}

// App serves the web client.
type App struct {
	peers   PeerOrigins
	media   []string
	version string
	index   []byte
	files   map[string]*file // by path under static/, e.g. "js/app.js"
}

type file struct {
	body, gz    []byte
	contentType string
	etag        string
}

// New loads the embedded files, names their version and compresses them.
func New(cfg Config) (*App, error) {
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 10 * time.Second
	}
	sub, err := fs.Sub(static, "static")
	if err != nil {
		return nil, fmt.Errorf("web: %w", err)
	}
	var names []string
	err = fs.WalkDir(sub, ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			names = append(names, p)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("web: %w", err)
	}
	sort.Strings(names)
	a := &App{peers: cfg.Peers, media: cfg.MediaOrigins, files: make(map[string]*file, len(names))}
	h := sha256.New()
	for _, name := range names {
		body, err := fs.ReadFile(sub, name)
		if err != nil {
			return nil, fmt.Errorf("web: %w", err)
		}
		fmt.Fprintf(h, "%s\x00%d\x00", name, len(body))
		h.Write(body)
		if name == "index.html" {
			a.index = body
			continue
		}
		ct := mime.TypeByExtension(path.Ext(name))
		if ct == "" {
			ct = "application/octet-stream"
		}
		if strings.HasSuffix(name, ".js") {
			ct = "text/javascript; charset=utf-8" // some systems' MIME tables say application/javascript or nothing
		}
		sum := sha256.Sum256(body)
		f := &file{body: body, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		if compressible(ct) {
			f.gz = gzipped(body)
		}
		a.files[name] = f
	}
	if a.index == nil {
		return nil, fmt.Errorf("web: static/index.html missing")
	}
	a.version = hex.EncodeToString(h.Sum(nil)[:6])
	a.index = bytes.ReplaceAll(a.index, []byte(assetsToken), []byte("/assets/"+a.version))
	a.index = bytes.ReplaceAll(a.index, []byte(heartbeatToken), []byte(strconv.FormatInt(cfg.Heartbeat.Milliseconds(), 10)))
	return a, nil
}

func compressible(ct string) bool {
	return strings.HasPrefix(ct, "text/") || strings.Contains(ct, "json") || strings.Contains(ct, "svg")
}

func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	_, _ = zw.Write(b)
	_ = zw.Close()
	return buf.Bytes()
}

// Version is the hash that names this build's assets.
func (a *App) Version() string { return a.version }

// securityHeaders are sent with every answer of the app. The policy
// allows scripts and styles from this node only, connections to this
// node and the cluster's other nodes (peers: origins, for the page to
// reconnect through another node when its own goes away) and the media
// store the node redirects downloads to (also in peers): no inline
// script or style, no eval, no plugins, no framing; images may also be
// blob: and data: (previews made in the page).
func securityHeaders(w http.ResponseWriter, r *http.Request, peers ...string) {
	h := w.Header()
	connect := "'self'"
	if host := r.Host; host != "" && !strings.ContainsAny(host, " ;,'\"") {
		connect += " ws://" + host + " wss://" + host // 'self' does not cover WebSocket schemes everywhere
	}
	for _, p := range peers {
		if p != "" && !strings.ContainsAny(p, " ;,'\"") {
			connect += " " + p
		}
	}
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "+
		"media-src 'self' blob:; font-src 'self'; connect-src "+connect+"; manifest-src 'self'; worker-src 'self'; "+
		"base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
}

// ServeIndex answers GET / with the app's page (never cached: it names
// the assets' version).
func (a *App) ServeIndex(w http.ResponseWriter, r *http.Request) {
	var peers, sources []string
	if a.peers != nil {
		peers, sources = a.peers.HTTP(), a.peers.Sources()
	}
	securityHeaders(w, r, append(append([]string(nil), sources...), a.media...)...)
	page := bytes.Replace(a.index, []byte(peersToken), []byte(html.EscapeString(strings.Join(peers, " "))), 1)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("Content-Length", strconv.Itoa(len(page)))
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(page)
}

// ServeWorker answers GET /sw.js, the service worker, at the root so that
// its scope is the whole app; never cached, as browsers check it for
// updates.
func (a *App) ServeWorker(w http.ResponseWriter, r *http.Request) {
	f := a.files["sw.js"]
	if f == nil {
		http.NotFound(w, r)
		return
	}
	securityHeaders(w, r)
	w.Header().Set("Content-Type", f.contentType)
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("Content-Length", strconv.Itoa(len(f.body)))
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(f.body)
}

// ServeAsset answers GET /assets/{version}/{path...}: immutable files of
// this build, gzip-compressed when the browser takes it. Another version
// is 404 (an old page asks after an upgrade: it reloads).
func (a *App) ServeAsset(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, "/assets/")
	version, name, ok2 := strings.Cut(rest, "/")
	f := a.files[name]
	if !ok || !ok2 || version != a.version || f == nil {
		http.NotFound(w, r)
		return
	}
	securityHeaders(w, r)
	h := w.Header()
	h.Set("Content-Type", f.contentType)
	h.Set("Cache-Control", "public, max-age=31536000, immutable")
	h.Set("ETag", f.etag)
	h.Add("Vary", "Accept-Encoding")
	if r.Header.Get("If-None-Match") == f.etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	body := f.body
	if f.gz != nil && acceptsGzip(r) {
		h.Set("Content-Encoding", "gzip")
		body = f.gz
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(body)
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		enc, q, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(enc), "gzip") && strings.ReplaceAll(strings.TrimSpace(q), " ", "") != "q=0" {
			return true
		}
	}
	return false
}

// Size reports what a browser downloads on a first load: every asset
// gzip-compressed where it is served so, plus the page.
func (a *App) Size() (raw, compressed int) {
	raw, compressed = len(a.index), len(a.index)
	for _, f := range a.files {
		raw += len(f.body)
		if f.gz != nil {
			compressed += len(f.gz)
		} else {
			compressed += len(f.body)
		}
	}
	return raw, compressed
}
