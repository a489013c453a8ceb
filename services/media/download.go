package media

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/services/media/store"
)

const (
	// hopHeader marks a download proxied from another node, which must
	// serve it from its own disk or answer 404 (never proxy again).
	hopHeader = "X-Edgechat-Media-Hop"
	// touchEvery: the last read time is committed at most this often per
	// media (the cold tier needs days, not seconds).
	touchEvery = 24 * time.Hour
	// presignTTL is how long a redirect to the object store stays valid.
	presignTTL = 5 * time.Minute
	// cacheControl: a media ID's bytes never change, and only the
	// people it was sent to may read them.
	cacheControl = "private, max-age=31536000, immutable"
)

// Wire is what a media message carries of r.
func (r Record) Wire() wire.Media {
	return wire.Media{ID: r.ID, Mime: r.MIME, Kind: r.Kind, Name: r.Name, Size: r.OutputSize, Width: r.Width,
		Height: r.Height, DurationMs: r.DurationMs, Placeholder: r.Placeholder, Preview: r.PreviewMIME != ""}
}

// CanRead reports whether uid may read media r: its uploader, a
// participant of a direct conversation it was sent in, or a member of a
// group it was sent to.
func (s *Service) CanRead(r Record, uid string) bool {
	if r.Erased {
		return false
	}
	if uid == r.Owner {
		return true
	}
	ok := false
	_ = s.db.View(func(tx *badger.Txn) error {
		if _, err := tx.Get(grantUserKey(r.ID, uid)); err == nil {
			ok = true
			return nil
		}
		if s.grp == nil {
			return nil
		}
		prefix := grantGroupPrefix(r.ID)
		it := tx.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if s.grp.IsMember(string(it.Item().Key()[len(prefix):]), uid) {
				ok = true
				return nil
			}
		}
		return nil
	})
	return ok
}

// readable returns the record of id if uid may read it: others than the
// uploader see only ready media, and a stranger gets ErrNotFound, never
// a hint that the ID exists.
func (s *Service) readable(id, uid string) (Record, error) {
	r, err := s.Get(id)
	if err != nil {
		return Record{}, err
	}
	if !s.CanRead(r, uid) || (uid != r.Owner && r.Status != StatusReady) {
		return Record{}, ErrNotFound
	}
	return r, nil
}

// info is GET /media/{id}/info.
type info struct {
	wire.Media
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
}

func (s *Service) handleInfo(w http.ResponseWriter, r *http.Request) {
	p, _ := httpapi.PrincipalFrom(r.Context())
	rec, err := s.readable(r.PathValue("id"), p.UserID)
	if err != nil {
		writeErr(w, err)
		return
	}
	m := rec.Wire()
	if rec.Status != StatusReady {
		m = wire.Media{ID: rec.ID, Name: rec.Name, Size: rec.Size}
	}
	httpapi.WriteJSON(w, http.StatusOK, info{Media: m, Status: rec.Status, Reason: rec.Reason})
}

func (s *Service) handleFile(w http.ResponseWriter, r *http.Request)    { s.serve(w, r, false) }
func (s *Service) handlePreview(w http.ResponseWriter, r *http.Request) { s.serve(w, r, true) }

// serve sends the processed file or its preview: redirected to the
// object store when it can presign, from this node's store, or proxied
// from the node that holds it.
func (s *Service) serve(w http.ResponseWriter, r *http.Request, preview bool) {
	p, _ := httpapi.PrincipalFrom(r.Context())
	rec, err := s.readable(r.PathValue("id"), p.UserID)
	if err == nil && rec.Status != StatusReady {
		err = ErrNotFound
	}
	if err == nil && preview && rec.PreviewMIME == "" {
		err = ErrNotFound
	}
	if err == nil && rec.Source != "" && !rec.Fetched {
		rec, err = s.fetchRemote(r.Context(), rec.ID) // remote.go: another region's media, not here yet
		if err == nil && preview && rec.PreviewMIME == "" {
			err = ErrNotFound
		}
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	s.touch(r.Context(), rec)
	key, ctype, etag := fileKey(rec.ID), rec.MIME, rec.ETag
	if preview {
		key, ctype, etag = previewKey(rec.ID), rec.PreviewMIME, rec.ETag+"-p"
	}
	tier := store.TierProcessed
	if rec.Tier == TierCold {
		tier = store.TierCold
	}
	if ps, ok := s.st.(store.Presigner); ok {
		tier = s.servingTier(r.Context(), rec, key, tier)
		u, err := ps.PresignGet(r.Context(), tier, key, presignTTL, downloadName(rec, preview))
		if err != nil {
			writeErr(w, err)
			return
		}
		w.Header().Set("Cache-Control", "private, no-store") // the redirect expires; the object does not
		http.Redirect(w, r, u.String(), http.StatusFound)
		return
	}
	if !s.cfg.SharedStore && rec.Node != s.cfg.Node {
		s.proxy(w, r, rec)
		return
	}
	tier = s.servingTier(r.Context(), rec, key, tier)
	obj, err := s.st.Stat(r.Context(), tier, key)
	if err != nil {
		writeErr(w, err)
		return
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Cache-Control", cacheControl)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if etag != "" {
		w.Header().Set("ETag", `"`+etag+`"`)
	}
	if name := downloadName(rec, preview); name != "" && rec.Kind == "file" {
		w.Header().Set("Content-Disposition", mimeAttachment(name))
	}
	rs := &objectReader{ctx: r.Context(), st: s.st, tier: tier, key: key, size: obj.Size}
	defer rs.Close()
	http.ServeContent(w, r, "", obj.ModTime, rs)
	s.m.bytesOut.Add(float64(obj.Size))
}

// servingTier is the tier to serve key of rec from: tier, but the cold
// one for a media the sweeper may be moving there (in the processed tier,
// not read for ColdAfter) whose file has left the processed tier: the
// sweeper moves the files first and records the move after (moveCold),
// and a record that failed (a change of leader) waits for the next
// sweep.
func (s *Service) servingTier(ctx context.Context, rec Record, key string, tier store.Tier) store.Tier {
	if tier != store.TierProcessed || s.cfg.ColdStorageClass != "" || s.now().Sub(lastRead(rec)) <= s.cfg.ColdAfter {
		return tier
	}
	if _, err := s.st.Stat(ctx, store.TierProcessed, key); errors.Is(err, store.ErrNotFound) {
		if _, err := s.st.Stat(ctx, store.TierCold, key); err == nil {
			return store.TierCold
		}
	}
	return tier
}

// proxy forwards a download to the node that holds the files (a local
// store in a cluster).
func (s *Service) proxy(w http.ResponseWriter, r *http.Request, rec Record) {
	p, _ := httpapi.PrincipalFrom(r.Context())
	if r.Header.Get(hopHeader) != "" || s.peers == nil || s.tokens == nil {
		writeErr(w, ErrNotFound)
		return
	}
	// The gateway kept the caller's token from us: the holder sees the
	// same user through a token of this node's.
	token, err := s.tokens.MintAccessToken(p.UserID, false)
	if err != nil {
		writeErr(w, err)
		return
	}
	base, err := s.peers.HTTPURL(r.Context(), rec.Node)
	if err != nil {
		writeErr(w, fmt.Errorf("media: the node holding %s: %w", rec.ID, wire.ErrUnavailable))
		return
	}
	target, err := url.Parse(base)
	if err != nil {
		writeErr(w, err)
		return
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Header.Set(hopHeader, s.cfg.Node)
			// The holder's gateway does not charge this read again (the
			// caller's rate limits applied here), nor every user reading
			// through this node to one bucket of its address.
			pr.Out.Header.Set(httpapi.HeaderPeer, s.cfg.Node)
			pr.Out.Header.Set("Authorization", "Bearer "+token)
		},
		Transport: s.peerTransport,
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			s.log.Warn("proxying a media download", "media", rec.ID, "node", rec.Node, "err", err)
			writeErr(w, fmt.Errorf("media: %w", wire.ErrUnavailable))
		},
	}
	rp.ServeHTTP(w, r)
}

// touch records that rec was read, at most once a day, without making
// the download wait.
func (s *Service) touch(ctx context.Context, rec Record) {
	now := s.now().UTC()
	if rec.LastReadAt != nil && now.Sub(*rec.LastReadAt) < touchEvery {
		return
	}
	if _, busy := s.touching.LoadOrStore(rec.ID, true); busy {
		return
	}
	s.bg.Go(func() {
		defer s.touching.Delete(rec.ID)
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if _, err := s.propose(tctx, wire.CmdMediaTouch, touchCmd{ID: rec.ID, LastReadAt: &now}); err != nil {
			s.log.Debug("recording a media read", "media", rec.ID, "err", err)
		}
	})
}

func downloadName(rec Record, preview bool) string {
	if preview {
		return ""
	}
	return rec.Name
}

// mimeAttachment is the Content-Disposition of a download named name,
// as the S3 store's presigned downloads have it: a quoted filename, or
// RFC 2231's filename*= for a name that is not plain ASCII. (Path
// escaping left '=', ':' and '@' as they are, which are not allowed in
// filename*=, so strict parsers refused the header.)
func mimeAttachment(name string) string {
	if cd := mime.FormatMediaType("attachment", map[string]string{"filename": name}); cd != "" {
		return cd
	}
	return "attachment; filename*=UTF-8''" + url.PathEscape(name)
}

// objectReader is an io.ReadSeeker over a stored object, opening a
// ranged read at the position of the first Read after a Seek, so that
// http.ServeContent serves Range requests without reading the whole
// object.
type objectReader struct {
	ctx  context.Context
	st   store.Store
	tier store.Tier
	key  string
	size int64
	off  int64
	rc   io.ReadCloser
}

func (o *objectReader) Read(p []byte) (int, error) {
	if o.off >= o.size {
		return 0, io.EOF
	}
	if o.rc == nil {
		rc, _, err := o.st.Get(o.ctx, o.tier, o.key, o.off, -1)
		if err != nil {
			return 0, err
		}
		o.rc = rc
	}
	n, err := o.rc.Read(p)
	o.off += int64(n)
	return n, err
}

func (o *objectReader) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = o.off + offset
	case io.SeekEnd:
		abs = o.size + offset
	default:
		return 0, errors.New("media: bad whence")
	}
	if abs < 0 {
		return 0, errors.New("media: negative position")
	}
	if abs != o.off && o.rc != nil {
		o.rc.Close()
		o.rc = nil
	}
	o.off = abs
	return abs, nil
}

func (o *objectReader) Close() error {
	if o.rc != nil {
		return o.rc.Close()
	}
	return nil
}
