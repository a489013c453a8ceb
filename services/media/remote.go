package media

// Media across regions (issue 14). A media message crosses a region link
// like any other message, with the metadata its region filled in. The
// receiving region names the media {id}@{region} — the region it was
// uploaded in — so that it never clashes with its own IDs (which have no
// '@'), and before it commits the message it records the media
// (CmdMediaRemote: a record with that metadata, "not fetched", and the
// read grant of the recipient or group, as AttachSent does for local
// media). The bytes stay where they are until they are fetched: at once
// after the record commits (a prefetch, so that the file is here when the
// link later goes down), by a leader's retry every minute for what is
// still missing, and on a GET that finds them missing. A fetch asks the
// region the message came from (Record.Source; its ID there,
// Record.SourceID) through the region bridge (Remote) for chunks of at
// most RemoteChunk bytes, checks the total size against what the message
// said, the SHA-256 against what the source says, puts the file (and its
// preview) into this region's store under {region}/{id} and commits
// CmdMediaFetched (this node holds it, for a local store). From then on
// it is served like local media (Range, ETag, preview, cold tier).
//
// The other way round, MediaChunk reads a chunk for another region, and
// MediaGrants tells the bridge who the media was sent to, so that it
// answers only a region the media was sent to (bridge/region media.go).
//
// A GET of a media not fetched yet whose source cannot be reached answers
// 503 media_unavailable with Retry-After (RemoteRetryAfter).

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/cluster/fsm"
	"github.com/edgechat/edgechat/internal/address"
	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/services/media/store"
)

// Remote reads chunks of a media of another region (the region bridge):
// n bytes at off of the file (or its preview) that region names id.
// Errors wrap wire.ErrNotFound (no such media, or not sent to this
// region: the source refused) or wire.ErrUnavailable (the link is down).
type Remote interface {
	FetchMediaChunk(ctx context.Context, region, id string, preview bool, off int64, n int) (wire.MediaChunk, error)
}

const (
	// RemoteChunk is the most bytes one chunk request reads.
	RemoteChunk = 256 << 10
	// maxRemotePreview bounds a preview fetched from another region.
	maxRemotePreview = 8 << 20
	// maxFetches is how many fetches a node runs at once.
	maxFetches = 4
	// fetchTimeout bounds one fetch of a file and its preview.
	fetchTimeout = 5 * time.Minute
	// RemoteRetryAfter is the Retry-After of a 503 media_unavailable.
	RemoteRetryAfter = 30 * time.Second
	// pendingEvery is how often the leader retries fetches that did not
	// happen (the link was down, the node that prefetched died).
	pendingEvery = time.Minute
	// codeMediaUnavailable: the media is of another region that cannot be
	// reached now.
	codeMediaUnavailable = "media_unavailable"
	// prefixPending keys media of other regions not fetched yet.
	prefixPending = "r/media/rf/"
	// previewUnknown is the preview type of a remote media until its
	// preview is fetched (the message tells only that there is one).
	previewUnknown = "application/octet-stream"
)

// ErrRemoteUnavailable: a media of another region whose bytes are not
// here and whose region cannot be reached now (or sent bytes that did not
// check out).
var ErrRemoteUnavailable = fmt.Errorf("media: not fetched from its region yet, which cannot be reached now: %w", wire.ErrUnavailable)

func pendingKey(id string) []byte { return []byte(prefixPending + id) }

// validMediaID accepts a media ID of this region or {id}@{region}.
func validMediaID(id string) bool {
	if base, region, ok := strings.Cut(id, "@"); ok {
		return ValidID(base) && address.ValidRegion(region) == nil
	}
	return ValidID(id)
}

// fileKey is where a media's file is in the store: its ID, or
// {region}/{id} for a media of another region (a store key has no '@';
// this region's IDs have no '/').
func fileKey(id string) string {
	if base, region, ok := strings.Cut(id, "@"); ok {
		return region + "/" + base
	}
	return id
}

type remoteState struct {
	mu       sync.Mutex
	remote   Remote
	inflight map[string]*fetchCall
	sums     map[string]string // SHA-256 of files read for other regions, by key
	sem      chan struct{}
	ctx      context.Context // ends when the service stops
	cancel   context.CancelFunc
	m        *remoteMetrics
}

type fetchCall struct {
	done chan struct{}
	rec  Record
	err  error
}

type remoteMetrics struct {
	fetches *prometheus.CounterVec // result
	bytes   prometheus.Counter
	served  *prometheus.CounterVec // result
}

func (r *remoteState) init(reg prometheus.Registerer) error {
	r.inflight, r.sums, r.sem = map[string]*fetchCall{}, map[string]string{}, make(chan struct{}, maxFetches)
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.m = &remoteMetrics{
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgechat_media_remote_fetches_total",
			Help: "Fetches of media of other regions by result (ok, unavailable, not_found, bad_checksum, too_large)."}, []string{"result"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "edgechat_media_remote_fetched_bytes_total",
			Help: "Bytes of media of other regions fetched into this region's store."}),
		served: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgechat_media_remote_chunks_served_total",
			Help: "Chunks of this region's media read for other regions, by result."}, []string{"result"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{r.m.fetches, r.m.bytes, r.m.served} {
			if err := reg.Register(c); err != nil {
				return fmt.Errorf("media: metrics: %w", err)
			}
		}
	}
	return nil
}

// SetRemote sets the reader of other regions' media (the region bridge,
// built after this service). Without one, such media cannot be fetched.
func (s *Service) SetRemote(r Remote) {
	s.rm.mu.Lock()
	s.rm.remote = r
	s.rm.mu.Unlock()
}

// remoteCmd records a media of another region that a message brought.
type remoteCmd struct {
	ID          string       `json:"id"` // {id}@{region}
	Owner       string       `json:"owner"`
	Source      string       `json:"source"`
	SourceID    string       `json:"sourceId"`
	Name        string       `json:"name,omitempty"`
	Kind        string       `json:"kind,omitempty"`
	MIME        string       `json:"mime,omitempty"`
	Size        int64        `json:"size"`
	Width       int          `json:"width,omitempty"`
	Height      int          `json:"height,omitempty"`
	DurationMs  int64        `json:"durationMs,omitempty"`
	Placeholder string       `json:"placeholder,omitempty"`
	Preview     bool         `json:"preview,omitempty"`
	Users       []string     `json:"users,omitempty"`
	Groups      []string     `json:"groups,omitempty"`
	Sent        snowflake.ID `json:"sent,omitempty"`
	At          time.Time    `json:"at"`
}

// fetchedCmd: the bytes of a media of another region are in the store.
type fetchedCmd struct {
	ID          string    `json:"id"`
	Node        string    `json:"node"`
	Size        int64     `json:"size"`
	SHA256      string    `json:"sha256"`
	ETag        string    `json:"etag,omitempty"`
	PreviewMIME string    `json:"previewMime,omitempty"`
	At          time.Time `json:"at"`
}

// AttachRemote records the media that a message from another region
// carries, before the archive commits the message: own is this region,
// source the region the message came from (which serves the bytes),
// from the sender as this region names them (alice@eu), m the media as
// the message carries it (m.ID as source names it: its own ID, or
// {id}@{region} for a media source holds a copy of), peer the local
// recipient of a direct message or gid the group as named here. m.ID
// becomes the ID here. The bytes are fetched in the background. Errors
// wrap wire.ErrInvalid (a malformed media) or wire.ErrUnavailable.
func (s *Service) AttachRemote(ctx context.Context, own, source, from string, m *wire.Media, peer, gid string, msg snowflake.ID) error {
	base, region, qualified := strings.Cut(m.ID, "@")
	if qualified && region == own {
		// Our own media coming back through another region: only the grant.
		rec, err := s.Get(base)
		if err != nil || rec.Status != StatusReady || rec.Erased {
			return fmt.Errorf("media: %s came back from %s but is not a ready media here: %w", m.ID, source, wire.ErrInvalid)
		}
		g := grantCmd{ID: base, Sent: msg, Users: nonEmpty(peer), Groups: nonEmpty(gid)}
		if _, err := s.propose(ctx, wire.CmdMediaGrant, g); err != nil {
			return fmt.Errorf("media: grant %s: %w", base, err)
		}
		*m = rec.Wire()
		return nil
	}
	id, srcID := m.ID+"@"+source, m.ID
	if qualified {
		id = m.ID
	}
	switch {
	case !ValidID(base) || qualified && address.ValidRegion(region) != nil || address.ValidRegion(source) != nil:
		return fmt.Errorf("media: id %q from %s: %w", m.ID, source, wire.ErrInvalid)
	case m.Size < 0 || m.Width < 0 || m.Height < 0 || m.DurationMs < 0 || len(m.Placeholder) > maxPlaceholderLen ||
		len(m.Name) > 1024 || len(m.Kind) > 32 || len(m.Mime) > 128:
		return fmt.Errorf("media: metadata of %q from %s: %w", m.ID, source, wire.ErrInvalid)
	case wire.ValidPeerID(from) != nil || peer == "" && gid == "":
		return fmt.Errorf("media: %q from %s: sender %q: %w", m.ID, source, from, wire.ErrInvalid)
	}
	// Served from this region's origin: only types no browser runs
	// scripts in keep theirs (the other region's processing is trusted
	// no further than that).
	m.Mime = servedMIME(m.Mime, false)
	c := remoteCmd{ID: id, Owner: from, Source: source, SourceID: srcID, Name: m.Name, Kind: m.Kind, MIME: m.Mime,
		Size: m.Size, Width: m.Width, Height: m.Height, DurationMs: m.DurationMs, Placeholder: m.Placeholder,
		Preview: m.Preview, Users: nonEmpty(peer), Groups: nonEmpty(gid), Sent: msg, At: s.now().UTC()}
	v, err := s.propose(ctx, wire.CmdMediaRemote, c)
	if err != nil {
		return fmt.Errorf("media: record %s: %w", id, err)
	}
	rec, err := s.resultOf(v, id)
	if err != nil {
		return fmt.Errorf("media: record %s: %w", id, err)
	}
	m.ID = id
	if !rec.Fetched {
		s.bg.Go(func() {
			if _, err := s.fetchRemote(s.rm.ctx, id); err != nil {
				s.log.Info("prefetching a media of another region; fetched later", "media", id, "source", source, "err", err)
			}
		})
	}
	return nil
}

// servedMIME is the type a media of another region is served as: its
// own for images (previews: JPEG, PNG, WebP only), audio, video, PDF and
// plain text, application/octet-stream for anything else (HTML, SVG,
// XML: a browser would run their scripts in this region's origin).
func servedMIME(mime string, preview bool) string {
	mime = strings.ToLower(strings.TrimSpace(mime))
	switch {
	case mime == "image/jpeg" || mime == "image/png" || mime == "image/webp":
		return mime
	case preview:
		return previewUnknown
	case mime == "image/svg+xml" || strings.ContainsAny(mime, ";,\" \t\r\n"):
		return previewUnknown
	case strings.HasPrefix(mime, "image/") || strings.HasPrefix(mime, "audio/") || strings.HasPrefix(mime, "video/") ||
		mime == "application/pdf" || mime == "text/plain":
		return mime
	}
	return previewUnknown
}

// maxPlaceholderLen bounds the placeholder a remote message may carry.
const maxPlaceholderLen = 8 << 10

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

func (s *Service) applyRemote(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c remoteCmd
	if err := decode(payload, &c); err != nil {
		return nil, err
	}
	if !strings.Contains(c.ID, "@") || !validMediaID(c.ID) || address.ValidRegion(c.Source) != nil || c.SourceID == "" ||
		wire.ValidPeerID(c.Owner) != nil || c.Size < 0 {
		return nil, fmt.Errorf("%w: remote media %q from %q", errBadCommand, c.ID, c.Source)
	}
	g := grantCmd{ID: c.ID, Users: c.Users, Groups: c.Groups, Sent: c.Sent}
	for _, u := range c.Users {
		if wire.ValidUserID(u) != nil {
			return nil, fmt.Errorf("%w: grant to %q", errBadCommand, u)
		}
	}
	for _, gid := range c.Groups {
		if wire.ValidGroupID(gid) != nil {
			return nil, fmt.Errorf("%w: grant to group %q", errBadCommand, gid)
		}
	}
	r, err := getRecord(tx, c.ID)
	if errors.Is(err, ErrNotFound) {
		r = Record{ID: c.ID, Owner: c.Owner, Name: c.Name, Size: c.Size, Status: StatusReady, Tier: TierProcessed, Sent: true,
			Kind: c.Kind, MIME: c.MIME, Width: c.Width, Height: c.Height, DurationMs: c.DurationMs, Placeholder: c.Placeholder,
			OutputSize: c.Size, Source: c.Source, SourceID: c.SourceID, CreatedAt: c.At, UpdatedAt: c.At}
		if c.Preview {
			r.PreviewMIME = previewUnknown
		}
		if err := fsm.SetJSON(tx, recordKey(r.ID), r); err != nil {
			return nil, err
		}
		if err := tx.Set(pendingKey(r.ID), nil); err != nil {
			return nil, err
		}
		if err := indexOwner(tx, r.Owner, r.ID); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	for _, k := range g.keys() {
		if err := setGrant(tx, k, c.Sent); err != nil {
			return nil, err
		}
	}
	return &recordResult{Record: r}, nil
}

func (s *Service) applyFetched(tx *badger.Txn, _ fsm.Position, payload []byte) (any, error) {
	var c fetchedCmd
	if err := decode(payload, &c); err != nil {
		return nil, err
	}
	if c.Node == "" || c.Size < 0 {
		return nil, fmt.Errorf("%w: fetched %q", errBadCommand, c.ID)
	}
	r, err := getRecord(tx, c.ID)
	if err != nil {
		return nil, err
	}
	if r.Source == "" {
		return nil, fmt.Errorf("%w: %s is not of another region", ErrBadState, c.ID)
	}
	r.Fetched, r.Node, r.OutputSize, r.SHA256, r.ETag, r.PreviewMIME, r.UpdatedAt = true, c.Node, c.Size, c.SHA256, c.ETag, c.PreviewMIME, c.At
	if err := fsm.SetJSON(tx, recordKey(r.ID), r); err != nil {
		return nil, err
	}
	if err := tx.Delete(pendingKey(r.ID)); err != nil {
		return nil, err
	}
	return &recordResult{Record: r}, nil
}

// fetchRemote brings the bytes of media id of another region into this
// region's store, once however many ask at the same time, and returns its
// record. The fetch goes on in the background when ctx ends first.
func (s *Service) fetchRemote(ctx context.Context, id string) (Record, error) {
	rec, err := s.Get(id)
	if err != nil || rec.Source == "" || rec.Fetched {
		return rec, err
	}
	if rec.Erased { // nobody may read it any more (retention): not fetched
		return Record{}, ErrNotFound
	}
	if tooLarge(rec, s.cfg.MaxSize) {
		// The message said its size, and bytes of another size fail
		// their check: asking could only end in too_large.
		s.rm.m.fetches.WithLabelValues("too_large").Inc()
		return Record{}, fmt.Errorf("media: %s from %s: %w: %d bytes (at most %d here)", id, rec.Source, ErrTooLarge, rec.OutputSize, s.cfg.MaxSize)
	}
	s.rm.mu.Lock()
	c := s.rm.inflight[id]
	if c == nil {
		// A fetch that ended since the read above (it records the file
		// before it leaves inflight) is not made again.
		if again, err := s.Get(id); err == nil && again.Fetched {
			s.rm.mu.Unlock()
			return again, nil
		}
		c = &fetchCall{done: make(chan struct{})}
		s.rm.inflight[id] = c
		s.bg.Go(func() {
			c.rec, c.err = s.fetchOnce(rec)
			s.rm.mu.Lock()
			delete(s.rm.inflight, id)
			s.rm.mu.Unlock()
			close(c.done)
		})
	}
	s.rm.mu.Unlock()
	select {
	case <-c.done:
		return c.rec, c.err
	case <-ctx.Done():
		return Record{}, fmt.Errorf("media: %s: %v: %w", id, ctx.Err(), ErrRemoteUnavailable)
	}
}

// tooLarge tells whether rec, a media of another region, is larger than
// this region takes (max, --media-max-size), by the size its message
// said.
func tooLarge(rec Record, max int64) bool {
	return max > 0 && rec.OutputSize > max
}

// fetched is what fetchPart brought.
type fetched struct {
	size       int64
	sum        string
	mime, etag string
}

func (s *Service) fetchOnce(rec Record) (Record, error) {
	ctx, cancel := context.WithTimeout(s.rm.ctx, fetchTimeout)
	defer cancel()
	select {
	case s.rm.sem <- struct{}{}:
		defer func() { <-s.rm.sem }()
	case <-ctx.Done():
		return Record{}, fmt.Errorf("media: %s: %w", rec.ID, ErrRemoteUnavailable)
	}
	s.rm.mu.Lock()
	remote := s.rm.remote
	s.rm.mu.Unlock()
	if remote == nil {
		return Record{}, fmt.Errorf("media: %s: no region links: %w", rec.ID, ErrRemoteUnavailable)
	}
	file, err := s.fetchPart(ctx, remote, rec, false)
	if err != nil {
		return Record{}, s.fetchFailed(rec, err)
	}
	c := fetchedCmd{ID: rec.ID, Node: s.cfg.Node, Size: file.size, SHA256: file.sum, ETag: file.etag, At: s.now().UTC()}
	if rec.PreviewMIME != "" {
		p, err := s.fetchPart(ctx, remote, rec, true)
		switch {
		case errors.Is(err, wire.ErrNotFound): // the source has none after all
		case err != nil:
			return Record{}, s.fetchFailed(rec, err)
		default:
			c.PreviewMIME = servedMIME(p.mime, true)
		}
	}
	v, err := s.propose(ctx, wire.CmdMediaFetched, c)
	if err != nil {
		return Record{}, fmt.Errorf("media: %s fetched, not recorded: %w", rec.ID, err)
	}
	s.rm.m.fetches.WithLabelValues("ok").Inc()
	s.log.Info("media of another region fetched", "media", rec.ID, "source", rec.Source, "bytes", file.size)
	return s.resultOf(v, rec.ID)
}

func (s *Service) fetchFailed(rec Record, err error) error {
	result := "unavailable"
	switch {
	case errors.Is(err, wire.ErrNotFound):
		result = "not_found"
	case errors.Is(err, errChecksum):
		result = "bad_checksum"
		s.log.Warn("media of another region refused: it does not check out", "media", rec.ID, "source", rec.Source, "err", err)
	case errors.Is(err, ErrTooLarge):
		result = "too_large"
	}
	s.rm.m.fetches.WithLabelValues(result).Inc()
	switch result {
	case "unavailable", "bad_checksum":
		return fmt.Errorf("media: fetching %s from %s: %v: %w", rec.ID, rec.Source, err, ErrRemoteUnavailable)
	case "not_found": // the source refused: not sent to us (any more), or gone
		return fmt.Errorf("media: fetching %s from %s: %v: %w", rec.ID, rec.Source, err, ErrNotFound)
	}
	return fmt.Errorf("media: fetching %s from %s: %w", rec.ID, rec.Source, err)
}

var errChecksum = errors.New("media: the bytes from the other region do not match its size or checksum")

// fetchPart reads the file (or preview) of rec from its source region in
// chunks into a temporary file, checks it, and puts it into the store.
func (s *Service) fetchPart(ctx context.Context, remote Remote, rec Record, preview bool) (fetched, error) {
	f, err := os.CreateTemp(s.cfg.TempDir, "remote-*")
	if err != nil {
		return fetched{}, fmt.Errorf("media: temp file: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	limit := s.cfg.MaxSize
	if preview {
		limit = maxRemotePreview
	}
	var (
		out fetched
		h   = sha256.New()
		off int64
	)
	for {
		c, err := remote.FetchMediaChunk(ctx, rec.Source, rec.SourceID, preview, off, RemoteChunk)
		if err != nil {
			return fetched{}, err
		}
		if off == 0 {
			out = fetched{size: c.Size, sum: c.SHA256, mime: c.MIME, etag: c.ETag}
			switch {
			case c.Size < 0 || c.Size > limit:
				return fetched{}, fmt.Errorf("%w: %d bytes (at most %d here)", ErrTooLarge, c.Size, limit)
			case !preview && rec.OutputSize > 0 && c.Size != rec.OutputSize:
				return fetched{}, fmt.Errorf("%w: %d bytes, the message said %d", errChecksum, c.Size, rec.OutputSize)
			case len(c.SHA256) != sha256.Size*2:
				return fetched{}, fmt.Errorf("%w: no checksum", errChecksum)
			}
		}
		if c.Size != out.size || off+int64(len(c.Data)) > out.size || len(c.Data) > RemoteChunk || len(c.Data) == 0 && off < out.size {
			return fetched{}, fmt.Errorf("%w: chunk at %d: %d bytes of %d", errChecksum, off, len(c.Data), c.Size)
		}
		if _, err := f.Write(c.Data); err != nil {
			return fetched{}, fmt.Errorf("media: temp file: %w", err)
		}
		h.Write(c.Data)
		off += int64(len(c.Data))
		if off == out.size {
			break
		}
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != out.sum {
		return fetched{}, fmt.Errorf("%w: sha-256 %s, the source says %s", errChecksum, got, out.sum)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fetched{}, err
	}
	key, ctype := fileKey(rec.ID), rec.MIME
	if preview {
		key, ctype = previewKey(rec.ID), out.mime
	}
	obj, err := s.st.Put(ctx, store.TierProcessed, key, f, out.size, ctype)
	if err != nil {
		return fetched{}, fmt.Errorf("media: storing %s: %v: %w", key, err, wire.ErrUnavailable)
	}
	if !preview {
		out.etag = obj.ETag
	}
	s.rm.m.bytes.Add(float64(out.size))
	return out, nil
}

// fetchPending fetches what prefetches left missing (on the leader).
func (s *Service) fetchPending(ctx context.Context) {
	if s.lead != nil && !s.lead.IsLeader() {
		return
	}
	var ids []string
	_ = s.db.View(func(tx *badger.Txn) error {
		it := tx.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixPending)})
		defer it.Close()
		for it.Rewind(); it.Valid() && len(ids) < 1000; it.Next() {
			ids = append(ids, string(it.Item().Key()[len(prefixPending):]))
		}
		return nil
	})
	failed := map[string]bool{} // source regions that did not answer this round
	for _, id := range ids {
		rec, err := s.Get(id)
		if err != nil || rec.Fetched || failed[rec.Source] || tooLarge(rec, s.cfg.MaxSize) || ctx.Err() != nil {
			continue // too large: never fetched here (fetchRemote), not retried every minute
		}
		if _, err := s.fetchRemote(ctx, id); errors.Is(err, wire.ErrUnavailable) {
			failed[rec.Source] = true
		}
	}
}

// runPending retries missing fetches every pendingEvery until ctx ends.
func (s *Service) runPending(ctx context.Context) {
	t := time.NewTicker(pendingEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.fetchPending(ctx)
		}
	}
}

// MediaGrants tells who media id was sent to (the region bridge checks
// that a region asking for its bytes is among them): users (name@region
// for another region's) and groups (gid@home for another region's).
// ErrNotFound for a media that is not ready or may not be read.
func (s *Service) MediaGrants(id string) (users, groups []string, err error) {
	rec, err := s.Get(id)
	if err != nil {
		return nil, nil, err
	}
	if rec.Status != StatusReady || rec.Erased {
		return nil, nil, ErrNotFound
	}
	err = s.db.View(func(tx *badger.Txn) error {
		for _, p := range []struct {
			prefix []byte
			out    *[]string
		}{{[]byte(prefixGrantUser + id + "/"), &users}, {grantGroupPrefix(id), &groups}} {
			it := tx.NewIterator(badger.IteratorOptions{Prefix: p.prefix})
			for it.Rewind(); it.Valid(); it.Next() {
				*p.out = append(*p.out, string(it.Item().Key()[len(p.prefix):]))
			}
			it.Close()
		}
		return nil
	})
	return users, groups, err
}

// MediaChunk reads at most n (≤ RemoteChunk) bytes at off of the file,
// or the preview, of media id for another region, which the region
// bridge checked may read it (MediaGrants). The chunk at offset 0 carries
// the SHA-256 of the whole file. A copy of another region's media not
// fetched yet is fetched first. Errors wrap ErrNotFound or
// wire.ErrUnavailable.
func (s *Service) MediaChunk(ctx context.Context, id string, preview bool, off int64, n int) (wire.MediaChunk, error) {
	c, err := s.mediaChunk(ctx, id, preview, off, n)
	result := "ok"
	if errors.Is(err, ErrNotFound) || errors.Is(err, store.ErrNotFound) || errors.Is(err, wire.ErrNotFound) {
		result, err = "not_found", fmt.Errorf("media: %s: %w", id, wire.ErrNotFound)
	} else if err != nil {
		result, err = "unavailable", fmt.Errorf("media: %s: %v: %w", id, err, wire.ErrUnavailable)
	}
	s.rm.m.served.WithLabelValues(result).Inc()
	return c, err
}

func (s *Service) mediaChunk(ctx context.Context, id string, preview bool, off int64, n int) (wire.MediaChunk, error) {
	rec, err := s.Get(id)
	if err != nil {
		return wire.MediaChunk{}, err
	}
	if rec.Status != StatusReady || rec.Erased || off < 0 || n <= 0 || n > RemoteChunk {
		return wire.MediaChunk{}, ErrNotFound
	}
	if rec.Source != "" && !rec.Fetched {
		if rec, err = s.fetchRemote(ctx, id); err != nil {
			return wire.MediaChunk{}, err
		}
	}
	key, ctype, etag := fileKey(rec.ID), rec.MIME, rec.ETag
	if preview {
		if rec.PreviewMIME == "" {
			return wire.MediaChunk{}, ErrNotFound
		}
		key, ctype, etag = previewKey(rec.ID), rec.PreviewMIME, rec.ETag+"-p"
	}
	tier := tierOf(rec)
	if s.cfg.SharedStore || rec.Node == s.cfg.Node {
		// Read here: where the sweeper may have moved it (the node
		// holding a local store's file decides for itself).
		tier = s.servingTier(ctx, rec, key, tier)
	}
	c := wire.MediaChunk{MIME: ctype, ETag: etag}
	if off == 0 {
		sum, size, err := s.checksum(ctx, rec, tier, key)
		if err != nil {
			return wire.MediaChunk{}, err
		}
		c.SHA256, c.Size = sum, size
		if size == 0 {
			return c, nil
		}
	}
	rc, size, err := s.openAt(ctx, rec, tier, key, off, int64(n))
	if err != nil {
		return wire.MediaChunk{}, err
	}
	defer rc.Close()
	if c.Size == 0 {
		c.Size = size
	}
	c.Data, err = io.ReadAll(io.LimitReader(rc, int64(n)))
	if err != nil {
		return wire.MediaChunk{}, err
	}
	return c, nil
}

// checksum is the SHA-256 and size of a stored file, remembered.
func (s *Service) checksum(ctx context.Context, rec Record, tier store.Tier, key string) (string, int64, error) {
	s.rm.mu.Lock()
	sum, ok := s.rm.sums[key]
	s.rm.mu.Unlock()
	rc, size, err := s.openAt(ctx, rec, tier, key, 0, -1)
	if err != nil {
		return "", 0, err
	}
	defer rc.Close()
	if ok {
		return sum, size, nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, rc); err != nil {
		return "", 0, err
	}
	sum = hex.EncodeToString(h.Sum(nil))
	s.rm.mu.Lock()
	if len(s.rm.sums) >= 4096 {
		s.rm.sums = map[string]string{}
	}
	s.rm.sums[key] = sum
	s.rm.mu.Unlock()
	return sum, size, nil
}

// openAt reads length bytes (-1: to the end) at off of a stored file:
// from the store, or with a local store from the node that holds it
// (through its HTTP API, as the uploader). size is the whole file's.
func (s *Service) openAt(ctx context.Context, rec Record, tier store.Tier, key string, off, length int64) (io.ReadCloser, int64, error) {
	if s.cfg.SharedStore || rec.Node == s.cfg.Node {
		rc, obj, err := s.st.Get(ctx, tier, key, off, length)
		if errors.Is(err, store.ErrInvalidRange) {
			return nil, 0, ErrNotFound
		}
		return rc, obj.Size, err
	}
	if s.peers == nil || s.tokens == nil || rec.Source != "" {
		// A copy of another region's media held by another node: not
		// read from here (docs/regions.md).
		return nil, 0, fmt.Errorf("media: %s is on node %s: %w", rec.ID, rec.Node, wire.ErrUnavailable)
	}
	token, err := s.tokens.MintAccessToken(rec.Owner, false)
	if err != nil {
		return nil, 0, err
	}
	base, err := s.peers.HTTPURL(ctx, rec.Node)
	if err != nil {
		return nil, 0, fmt.Errorf("media: the node holding %s: %v: %w", rec.ID, err, wire.ErrUnavailable)
	}
	path := "/media/" + url.PathEscape(rec.ID)
	if strings.HasSuffix(key, ".preview") {
		path += "/preview"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+path, nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set(hopHeader, s.cfg.Node)
	// Not charged to the uploader's buckets on the holder, nor to this
	// node's address there (httpapi.HeaderPeer).
	req.Header.Set(httpapi.HeaderPeer, s.cfg.Node)
	req.Header.Set("Authorization", "Bearer "+token)
	if off > 0 || length >= 0 {
		end := ""
		if length >= 0 {
			end = strconv.FormatInt(off+length-1, 10)
		}
		req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-"+end)
	}
	tr := s.peerTransport
	if tr == nil {
		tr = http.DefaultTransport
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("media: the node holding %s: %v: %w", rec.ID, err, wire.ErrUnavailable)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return resp.Body, resp.ContentLength, nil
	case http.StatusPartialContent:
		_, total, _ := strings.Cut(resp.Header.Get("Content-Range"), "/")
		size, err := strconv.ParseInt(total, 10, 64)
		if err != nil {
			resp.Body.Close()
			return nil, 0, fmt.Errorf("media: the node holding %s: Content-Range %q: %w", rec.ID, resp.Header.Get("Content-Range"), wire.ErrUnavailable)
		}
		return resp.Body, size, nil
	case http.StatusNotFound, http.StatusRequestedRangeNotSatisfiable:
		resp.Body.Close()
		return nil, 0, ErrNotFound
	}
	resp.Body.Close()
	return nil, 0, fmt.Errorf("media: the node holding %s answered %s: %w", rec.ID, resp.Status, wire.ErrUnavailable)
}
