// Package certfile serves a TLS certificate and key kept in PEM files
// and picks up a renewal of those files without a restart: an edge node
// runs for months, and certificates from an ACME CA (Let's Encrypt) live
// 90 days and are renewed in place by certbot or a cert-manager sidecar.
//
// The files are looked at again, at most once every Every, when a
// certificate is asked for (a TLS handshake): a renewal is served from
// the first handshake after it is seen. A pair that does not load (a
// renewal written half, the certificate before its key) is logged and
// the certificate in use is kept until a later look finds a good pair.
package certfile

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// DefaultEvery is how often, at most, the files are looked at: two
// stats, nothing beside a handshake's own cost, bounded under a flood of
// handshakes. Soon after a renewal, `edgechat health` (which checks that
// the node presents the certificate in the file) passes again.
const DefaultEvery = time.Second

// Pair is a certificate and key loaded from files, reloaded when they
// change.
type Pair struct {
	certFile, keyFile string
	every             time.Duration
	log               *slog.Logger
	now               func() time.Time

	mu        sync.Mutex
	cert      *tls.Certificate
	certMod   time.Time // the files' modification times when cert was loaded
	keyMod    time.Time
	certSize  int64
	keySize   int64
	lookedAt  time.Time
	failedMod time.Time // the newer of the two when a load last failed: logged once
}

// Load loads the pair from certFile and keyFile; an error when they do
// not load now (a node refuses to start without its certificate). every
// is how often the files are looked at again (DefaultEvery when 0).
func Load(certFile, keyFile string, every time.Duration, log *slog.Logger) (*Pair, error) {
	if every <= 0 {
		every = DefaultEvery
	}
	if log == nil {
		log = slog.Default()
	}
	p := &Pair{certFile: certFile, keyFile: keyFile, every: every, log: log, now: time.Now}
	cs, ks, err := p.stat()
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	p.cert, p.lookedAt = &cert, p.now()
	p.certMod, p.certSize, p.keyMod, p.keySize = cs.ModTime(), cs.Size(), ks.ModTime(), ks.Size()
	return p, nil
}

func (p *Pair) stat() (cert, key os.FileInfo, err error) {
	if cert, err = os.Stat(p.certFile); err != nil {
		return nil, nil, fmt.Errorf("certfile: %w", err)
	}
	if key, err = os.Stat(p.keyFile); err != nil {
		return nil, nil, fmt.Errorf("certfile: %w", err)
	}
	return cert, key, nil
}

// Certificate is the pair in use, loaded again first when the files
// changed since it was loaded and Every has passed since the last look.
func (p *Pair) Certificate() *tls.Certificate {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if now.Sub(p.lookedAt) < p.every {
		return p.cert
	}
	p.lookedAt = now
	cs, ks, err := p.stat()
	if err != nil {
		p.log.Warn("TLS certificate files cannot be read; serving the certificate loaded before", "cert", p.certFile, "key", p.keyFile, "err", err)
		return p.cert
	}
	if cs.ModTime().Equal(p.certMod) && ks.ModTime().Equal(p.keyMod) && cs.Size() == p.certSize && ks.Size() == p.keySize {
		return p.cert
	}
	cert, err := tls.LoadX509KeyPair(p.certFile, p.keyFile)
	if err != nil {
		// Likely a renewal under way: the next look tries again.
		if newest := later(cs.ModTime(), ks.ModTime()); !newest.Equal(p.failedMod) {
			p.failedMod = newest
			p.log.Warn("TLS certificate files changed but do not load; serving the certificate loaded before", "cert", p.certFile, "key", p.keyFile, "err", err)
		}
		return p.cert
	}
	p.cert = &cert
	p.certMod, p.certSize, p.keyMod, p.keySize = cs.ModTime(), cs.Size(), ks.ModTime(), ks.Size()
	p.log.Info("TLS certificate reloaded", "cert", p.certFile, "notAfter", notAfter(&cert))
	return p.cert
}

// GetCertificate is Certificate for tls.Config.GetCertificate.
func (p *Pair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return p.Certificate(), nil
}

// GetClientCertificate is Certificate for tls.Config.GetClientCertificate.
func (p *Pair) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return p.Certificate(), nil
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func notAfter(c *tls.Certificate) time.Time {
	if c.Leaf != nil {
		return c.Leaf.NotAfter
	}
	return time.Time{}
}
