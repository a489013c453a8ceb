package media

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/services/media/store"
)

// Limits of upload metadata.
const (
	MaxNameLen = 255
	maxTypeLen = 127
	// multipartSlack is what a multipart request may carry besides the
	// file (boundaries, headers, small fields).
	multipartSlack = 64 << 10
	// markUploadedTimeout bounds marking a stored upload uploaded, which
	// no longer waits on its client.
	markUploadedTimeout = 30 * time.Second
)

// Upload is what a client uploads: a name and the type it claims (both
// hints, processing decides), and the body.
type Upload struct {
	Name        string
	ClaimedType string
	// Size is the exact size of the body, -1 when unknown.
	Size int64
	// Reserve is what the daily byte quota counts when Size is unknown:
	// an upper bound (a multipart request's length), MaxSize when 0.
	Reserve int64
	Body    io.Reader
	// Key, optional: the request's Idempotency-Key. An upload sent again
	// with it answers the upload it made (Store's replay) without
	// reading Body.
	Key string
}

// limitedReader passes at most left bytes and fails with ErrTooLarge at
// the first byte past them, so that a body over the limit is refused
// while it streams.
type limitedReader struct {
	r     io.Reader
	left  int64
	over  bool
	count int64
	// readErr is the body's own read error (not io.EOF): a multipart body
	// that is malformed or broke off, a connection that closed early.
	readErr error
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		// One byte more than allowed tells a file over the limit from one
		// exactly at it.
		var one [1]byte
		n, err := l.r.Read(one[:])
		if n > 0 {
			l.over = true
			return 0, ErrTooLarge
		}
		l.noteErr(err)
		return 0, err
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	l.count += int64(n)
	l.noteErr(err)
	return n, err
}

func (l *limitedReader) noteErr(err error) {
	if err != nil && !errors.Is(err, io.EOF) && l.readErr == nil {
		l.readErr = err
	}
}

// errBadBody: the upload's body could not be read to its end (a
// malformed multipart body, one that broke off); 400 bad_request, or 408
// request_timeout when it stopped coming (the gateway's body timeout).
var errBadBody = errors.New("media: the upload's body broke off or is malformed")

// Store uploads u for owner: it creates the record (counting the daily
// quota), streams the body to the raw tier, refusing it at MaxSize
// without holding it in memory, and queues its processing.
func (s *Service) Store(ctx context.Context, owner string, u Upload) (Record, error) {
	rec, _, err := s.StoreKeyed(ctx, owner, u)
	return rec, err
}

// StoreKeyed is Store, and with u.Key set the upload sent again answers
// the upload the key made (replay true; its body is not read):
// ErrKeyReused when the key came with another name, type or size,
// ErrInProgress while that upload still waits for its bytes. A first
// attempt whose bytes did not arrive leaves no upload, so the retry
// makes it anew.
func (s *Service) StoreKeyed(ctx context.Context, owner string, u Upload) (rec Record, replay bool, err error) {
	if u.Size > s.cfg.MaxSize {
		s.m.uploads.WithLabelValues("too_large").Inc()
		return Record{}, false, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, u.Size, s.cfg.MaxSize)
	}
	name, ctype := cleanName(u.Name), cleanType(u.ClaimedType)
	reserve := u.Size
	if reserve < 0 {
		reserve = u.Reserve
	}
	if reserve <= 0 || reserve > s.cfg.MaxSize {
		reserve = s.cfg.MaxSize
	}
	id := newID()
	c := createCmd{ID: id, Owner: owner, Name: name, ClaimedType: ctype,
		Size: reserve, Node: s.cfg.Node, At: s.now().UTC(), QuotaCount: s.cfg.QuotaCount, QuotaBytes: s.cfg.QuotaBytes}
	if u.Key != "" {
		// The request as the client sent it: a multipart body's length
		// (its boundary) may differ between attempts, so its reserve is
		// not part of it.
		id = keyedID(owner, u.Key)
		c.ID, c.Key, c.Hash = id, u.Key, httpapi.Fingerprint([]any{name, ctype, u.Size})
	}
	v, err := s.propose(ctx, wire.CmdMediaCreate, c)
	if err != nil {
		if errors.Is(err, ErrQuota) {
			s.m.uploads.WithLabelValues("quota").Inc()
		}
		return Record{}, false, fmt.Errorf("media: create: %w", err)
	}
	if r, ok := v.(*recordResult); ok && r.Replay {
		if r.Record.Status == StatusUploading {
			return Record{}, false, ErrInProgress
		}
		s.m.uploads.WithLabelValues("retried").Inc()
		return r.Record, true, nil
	}
	if _, err := s.resultOf(v, id); err != nil {
		return Record{}, false, err
	}
	body := &limitedReader{r: u.Body, left: s.cfg.MaxSize}
	obj, err := s.st.Put(ctx, store.TierRaw, id, body, u.Size, ctype)
	if err != nil {
		_ = s.st.Delete(context.WithoutCancel(ctx), store.TierRaw, id)
		s.forget(ctx, id)
		var mbe *http.MaxBytesError
		if body.over || errors.Is(err, ErrTooLarge) || errors.As(body.readErr, &mbe) {
			s.m.uploads.WithLabelValues("too_large").Inc()
			return Record{}, false, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, s.cfg.MaxSize)
		}
		if body.readErr != nil {
			s.m.uploads.WithLabelValues("failed").Inc()
			return Record{}, false, fmt.Errorf("%w: %w", errBadBody, body.readErr)
		}
		s.m.uploads.WithLabelValues("failed").Inc()
		return Record{}, false, fmt.Errorf("media: store upload: %w", err)
	}
	if obj.Size == 0 { // a multipart "file" part may be empty; a raw body was refused above
		_ = s.st.Delete(context.WithoutCancel(ctx), store.TierRaw, id)
		s.forget(ctx, id)
		s.m.uploads.WithLabelValues("empty").Inc()
		return Record{}, false, ErrEmpty
	}
	s.m.bytesIn.Add(float64(obj.Size))
	// The bytes are stored: the upload completes whether or not its
	// client still waits for the answer. A connection that closed after
	// the last byte (a phone that lost the network) ended the request's
	// context, and the record stayed uploading, so the retry with its
	// Idempotency-Key was answered 409 until the sweeper removed it a day
	// later. Proposed again through a leader change: marking uploaded
	// twice changes nothing.
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), markUploadedTimeout)
	defer cancel()
	v, _, err = s.proposeRetrying(uctx, wire.CmdMediaUploaded, uploadedCmd{ID: id, Size: obj.Size, At: s.now().UTC(), Settle: true}, time.Time{})
	if err != nil {
		return Record{}, false, fmt.Errorf("media: mark uploaded: %w", err)
	}
	s.m.uploads.WithLabelValues("accepted").Inc()
	rec, err = s.resultOf(v, id)
	return rec, false, err
}

// forget removes the record of an upload that failed, and gives the
// quota back what it counted for it: nothing was stored.
func (s *Service) forget(ctx context.Context, id string) {
	if _, err := s.propose(context.WithoutCancel(ctx), wire.CmdMediaDelete, deleteCmd{IDs: []string{id}, Failed: true}); err != nil {
		s.log.Warn("removing a failed upload's record", "media", id, "err", err)
	}
}

// cleanName keeps a file name's last path element, printable, at most
// MaxNameLen bytes; it is shown to people, never used as a path.
func cleanName(n string) string {
	if i := strings.LastIndexAny(n, `/\`); i >= 0 {
		n = n[i+1:]
	}
	n = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError {
			return -1
		}
		return r
	}, strings.TrimSpace(n))
	for len(n) > MaxNameLen {
		_, size := utf8.DecodeLastRuneInString(n)
		n = n[:len(n)-size]
	}
	return n
}

// cleanType keeps a claimed media type when it parses, lower-cased
// without parameters; it is a hint only.
func cleanType(t string) string {
	mt, _, err := mime.ParseMediaType(t)
	if err != nil || len(mt) > maxTypeLen {
		return ""
	}
	return mt
}

// handleUpload is POST /media: the file as the body (Content-Length
// required, ?name= optional) or as the "file" part of a
// multipart/form-data body.
func (s *Service) handleUpload(w http.ResponseWriter, r *http.Request) {
	p, ok := httpapi.PrincipalFrom(r.Context())
	if !ok {
		httpapi.WriteError(w, httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnauthorized, "token required"))
		return
	}
	key, err := httpapi.IdempotencyKey(r)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	mt, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var u Upload
	if mt == "multipart/form-data" {
		if r.ContentLength > s.cfg.MaxSize+multipartSlack {
			writeErr(w, fmt.Errorf("%w: request of %d bytes", ErrTooLarge, r.ContentLength))
			return
		}
		part, err := fileParts(r.Body, params["boundary"])
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) { // paused past the gateway's body timeout
				httpapi.WriteError(w, httpapi.BodyReadError(err))
				return
			}
			httpapi.WriteError(w, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "%v", err))
			return
		}
		defer part.Close()
		// The part's size is unknown; the quota reserves the request's length.
		u = Upload{Name: part.FileName(), ClaimedType: part.Header.Get("Content-Type"), Size: -1,
			Reserve: r.ContentLength, Body: part}
	} else {
		if r.ContentLength < 0 {
			httpapi.WriteError(w, httpapi.Errorf(http.StatusLengthRequired, codeLengthRequired, "Content-Length is required (or send multipart/form-data)"))
			return
		}
		if r.ContentLength == 0 {
			httpapi.WriteError(w, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeValidation, "empty upload"))
			return
		}
		u = Upload{Name: r.URL.Query().Get("name"), ClaimedType: mt, Size: r.ContentLength, Body: r.Body}
	}
	u.Key = key
	rec, replay, err := s.StoreKeyed(r.Context(), p.UserID, u)
	if err != nil {
		writeErr(w, s.withQuotaRetry(err))
		return
	}
	status := http.StatusAccepted
	if replay {
		status = http.StatusOK // sent again: the upload the key made, as it is now
	}
	httpapi.WriteJSON(w, status, map[string]string{"mediaId": rec.ID, "status": rec.Status})
}

// fileParts returns the "file" part of a multipart body, skipping small
// other fields; the part streams (nothing is buffered but headers).
func fileParts(body io.Reader, boundary string) (*multipart.Part, error) {
	if boundary == "" {
		return nil, errors.New("multipart body without a boundary")
	}
	mr := multipart.NewReader(body, boundary)
	for range 16 {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return nil, errors.New(`multipart body without a "file" part`)
		}
		if err != nil {
			return nil, fmt.Errorf("malformed multipart body: %w", err)
		}
		if part.FormName() == "file" {
			return part, nil
		}
		if _, err := io.Copy(io.Discard, io.LimitReader(part, multipartSlack)); err != nil {
			return nil, fmt.Errorf("malformed multipart body: %w", err)
		}
	}
	return nil, errors.New(`multipart body: no "file" part among the first 16`)
}
