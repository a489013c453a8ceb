package media

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/services/media/store"
)

// Direct upload: the client puts the bytes straight into the raw bucket
// through presigned URLs (an S3 store only), so a large file never
// crosses a node. Processing starts when the object is there: the
// store's notification (MinIO's listen API, on the leader), an S3 event
// notification posted to /media/events, or the client's
// POST /media/{id}/complete — whichever comes first; the others find the
// upload already marked.

const (
	// MultipartThreshold: above it a direct upload is multipart.
	MultipartThreshold = 16 << 20
	// PartSize is the size of each part but the last (S3's minimum is 5 MiB).
	PartSize = 8 << 20
	// directTTL is how long presigned upload URLs are valid.
	directTTL    = time.Hour
	codeNoDirect = "direct_upload_unavailable"
	// maxEventsBody bounds an S3 event notification.
	maxEventsBody = 256 << 10
)

type directRequest struct {
	Name        string `json:"name"`
	Size        int64  `json:"size"`
	ContentType string `json:"contentType"`
}

type directPart struct {
	Part int    `json:"part"`
	URL  string `json:"url,omitempty"`
	ETag string `json:"etag,omitempty"`
}

type directAnswer struct {
	MediaID   string       `json:"mediaId"`
	Method    string       `json:"method,omitempty"`
	URL       string       `json:"url,omitempty"`
	UploadID  string       `json:"uploadId,omitempty"`
	PartSize  int64        `json:"partSize,omitempty"`
	Parts     []directPart `json:"parts,omitempty"`
	ExpiresAt time.Time    `json:"expiresAt,omitzero"`
	// Status: a request sent again with its Idempotency-Key whose upload
	// has its bytes already (no URLs then).
	Status string `json:"status,omitempty"`
}

// handleDirect is POST /media/uploads.
func (s *Service) handleDirect(w http.ResponseWriter, r *http.Request) {
	p, _ := httpapi.PrincipalFrom(r.Context())
	ps, ok := s.st.(store.Presigner)
	if !ok {
		httpapi.WriteError(w, httpapi.Errorf(http.StatusConflict, codeNoDirect, "direct upload needs the S3 store; POST /media instead"))
		return
	}
	key, err := httpapi.IdempotencyKey(r)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	var req directRequest
	if err := httpapi.DecodeJSON(r, &req, 4<<10); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	switch {
	case req.Size <= 0:
		httpapi.WriteError(w, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeValidation, "size must be positive"))
		return
	case req.Size > s.cfg.MaxSize:
		writeErr(w, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, req.Size, s.cfg.MaxSize))
		return
	}
	ctx := r.Context()
	id := newID()
	ctype := cleanType(req.ContentType)
	c := createCmd{ID: id, Owner: p.UserID, Name: cleanName(req.Name), ClaimedType: ctype, Size: req.Size,
		Node: s.cfg.Node, At: s.now().UTC(), QuotaCount: s.cfg.QuotaCount, QuotaBytes: s.cfg.QuotaBytes, Direct: true}
	if key != "" {
		// "direct": the same key for an upload through POST /media is
		// another request.
		id = keyedID(p.UserID, key)
		c.ID, c.Key, c.Hash = id, key, httpapi.Fingerprint([]any{"direct", c.Name, ctype, req.Size})
	}
	ans, err := s.presignDirect(ctx, ps, id, "", ctype, req.Size)
	if err != nil {
		writeErr(w, err)
		return
	}
	c.UploadID = ans.UploadID
	v, err := s.propose(ctx, wire.CmdMediaCreate, c)
	if err == nil {
		if rr, ok := v.(*recordResult); ok && rr.Replay {
			// Sent again with its key: the upload it made. The multipart
			// upload started for this request is not needed.
			if c.UploadID != "" {
				_ = ps.AbortMultipart(context.WithoutCancel(ctx), store.TierRaw, id, c.UploadID)
			}
			s.m.uploads.WithLabelValues("retried").Inc()
			s.answerDirectAgain(w, r, ps, rr.Record)
			return
		}
	}
	if err != nil {
		if c.UploadID != "" {
			_ = ps.AbortMultipart(context.WithoutCancel(ctx), store.TierRaw, id, c.UploadID)
		}
		writeErr(w, s.withQuotaRetry(err))
		return
	}
	httpapi.WriteJSON(w, http.StatusCreated, ans)
}

// presignDirect makes the URLs of a direct upload of size bytes to id:
// one PUT, or above MultipartThreshold the parts of the multipart upload
// uploadID (a new one when "").
func (s *Service) presignDirect(ctx context.Context, ps store.Presigner, id, uploadID, ctype string, size int64) (directAnswer, error) {
	ans := directAnswer{MediaID: id, ExpiresAt: s.now().Add(directTTL).UTC()}
	if size > MultipartThreshold {
		if uploadID == "" {
			var err error
			if uploadID, err = ps.NewMultipart(ctx, store.TierRaw, id, ctype); err != nil {
				return ans, fmt.Errorf("media: start multipart upload: %w", err)
			}
		}
		ans.UploadID, ans.PartSize = uploadID, PartSize
		for part := 1; int64(part-1)*PartSize < size; part++ {
			u, err := ps.PresignPart(ctx, store.TierRaw, id, uploadID, part, directTTL)
			if err != nil {
				return ans, fmt.Errorf("media: presign part: %w", err)
			}
			ans.Parts = append(ans.Parts, directPart{Part: part, URL: u.String()})
		}
		return ans, nil
	}
	u, err := ps.PresignPut(ctx, store.TierRaw, id, directTTL)
	if err != nil {
		return ans, fmt.Errorf("media: presign upload: %w", err)
	}
	ans.Method, ans.URL = http.MethodPut, u.String()
	return ans, nil
}

// answerDirectAgain answers POST /media/uploads sent again with the
// Idempotency-Key that made rec: 200 with fresh URLs while its bytes are
// awaited (the same multipart upload), else its status.
func (s *Service) answerDirectAgain(w http.ResponseWriter, r *http.Request, ps store.Presigner, rec Record) {
	if rec.Status != StatusUploading {
		httpapi.WriteJSON(w, http.StatusOK, directAnswer{MediaID: rec.ID, Status: rec.Status})
		return
	}
	if rec.Size > MultipartThreshold && rec.UploadID == "" {
		// Not a multipart upload, which every direct upload this large
		// is: no URLs to make again, its status only.
		httpapi.WriteJSON(w, http.StatusOK, directAnswer{MediaID: rec.ID, Status: rec.Status})
		return
	}
	ans, err := s.presignDirect(r.Context(), ps, rec.ID, rec.UploadID, rec.ClaimedType, rec.Size)
	if err != nil {
		writeErr(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, ans)
}

type completeRequest struct {
	Parts []directPart `json:"parts"`
}

// handleComplete is POST /media/{id}/complete: the client says its
// direct upload is done (and, for a multipart one, which parts it sent).
func (s *Service) handleComplete(w http.ResponseWriter, r *http.Request) {
	p, _ := httpapi.PrincipalFrom(r.Context())
	rec, err := s.Get(r.PathValue("id"))
	if err == nil && (rec.Owner != p.UserID || !rec.Direct) {
		err = ErrNotFound
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	var req completeRequest
	if r.ContentLength != 0 {
		if err := httpapi.DecodeJSON(r, &req, 64<<10); err != nil {
			httpapi.WriteError(w, err)
			return
		}
	}
	if rec.Status == StatusUploading && rec.UploadID != "" {
		ps, _ := s.st.(store.Presigner)
		if ps == nil {
			writeErr(w, ErrBadState)
			return
		}
		parts := make([]store.Part, 0, len(req.Parts))
		for _, pt := range req.Parts {
			parts = append(parts, store.Part{Number: pt.Part, ETag: pt.ETag})
		}
		// Parts larger than declared are refused before they are joined:
		// completed, the multipart upload would be gone with its part
		// URLs, and the client could not PUT the declared bytes again.
		if sz, ok := s.st.(store.PartSizer); ok {
			if n, err := sz.PartsSize(r.Context(), store.TierRaw, rec.ID, rec.UploadID, parts); err == nil && (n > rec.Size || n > s.cfg.MaxSize) {
				s.m.uploads.WithLabelValues("too_large").Inc()
				writeErr(w, fmt.Errorf("%w: the parts hold %d bytes, %d declared; PUT the parts again and complete again", ErrTooLarge, n, rec.Size))
				return
			}
		}
		if _, err := ps.CompleteMultipart(r.Context(), store.TierRaw, rec.ID, rec.UploadID, parts); err != nil {
			// A /complete repeated after the store joined the parts (the
			// first was cut off before the upload was marked: a client
			// that timed out, a dropped connection) finds no multipart
			// upload any more, but the object it made: go on with it.
			if _, serr := s.st.Stat(r.Context(), store.TierRaw, rec.ID); serr != nil {
				httpapi.WriteError(w, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeValidation, "completing the multipart upload: %v", err))
				return
			}
		}
	}
	rec, err = s.markUploaded(r.Context(), rec.ID)
	if err != nil {
		writeErr(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusAccepted, map[string]string{"mediaId": rec.ID, "status": rec.Status})
}

// markUploaded checks a direct upload's object (there, not larger than
// declared) and queues its processing; an upload already marked is
// returned as it is. An object larger than declared is deleted (the
// quota counted the declared size) and the upload stays waiting: its
// URL lives on for the rest of its hour, so the client may PUT the
// declared bytes again, and the sweeps delete what is left there once
// the upload is abandoned (with no record, a PUT after the refusal
// would be stored for ever, outside every quota).
func (s *Service) markUploaded(ctx context.Context, id string) (Record, error) {
	rec, err := s.Get(id)
	if err != nil {
		return Record{}, err
	}
	if rec.Status != StatusUploading {
		return rec, nil
	}
	obj, err := s.st.Stat(ctx, store.TierRaw, id)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return Record{}, fmt.Errorf("%w: the upload of %s has not arrived", ErrBadState, id)
		}
		return Record{}, err
	}
	if obj.Size > rec.Size || obj.Size > s.cfg.MaxSize {
		_ = s.st.Delete(ctx, store.TierRaw, id)
		s.m.uploads.WithLabelValues("too_large").Inc()
		return Record{}, fmt.Errorf("%w: %d bytes arrived, %d declared", ErrTooLarge, obj.Size, rec.Size)
	}
	v, err := s.propose(ctx, wire.CmdMediaUploaded, uploadedCmd{ID: id, Size: obj.Size, At: s.now().UTC(), Settle: true})
	if err != nil {
		return Record{}, fmt.Errorf("media: mark uploaded: %w", err)
	}
	s.m.uploads.WithLabelValues("accepted").Inc()
	return s.resultOf(v, id)
}

// listenUploads marks direct uploads as the store announces them, while
// this node leads (one listener per cluster).
func (s *Service) listenUploads(ctx context.Context, n store.Notifier) {
	ch, err := n.ObjectCreated(ctx, store.TierRaw)
	if err != nil {
		s.log.Warn("listening for direct uploads; relying on /complete and /media/events", "err", err)
		return
	}
	for obj := range ch {
		if !ValidID(obj.Key) {
			continue
		}
		rec, err := s.Get(obj.Key)
		if err != nil || !rec.Direct || rec.Status != StatusUploading {
			continue
		}
		if _, err := s.markUploaded(ctx, obj.Key); err != nil && ctx.Err() == nil {
			s.log.Info("a direct upload announced by the store was not accepted", "media", obj.Key, "err", err)
		}
	}
}

// s3Event is the part of an S3 event notification read here.
type s3Event struct {
	Records []struct {
		EventName string `json:"eventName"`
		S3        struct {
			Bucket struct {
				Name string `json:"name"`
			} `json:"bucket"`
			Object struct {
				Key string `json:"key"`
			} `json:"object"`
		} `json:"s3"`
	} `json:"Records"`
}

// handleEvents is POST /media/events: S3 event notifications (a webhook
// target configured on the raw bucket) authenticated by the shared
// secret as a bearer token.
func (s *Service) handleEvents(w http.ResponseWriter, r *http.Request) {
	secret := s.cfg.EventsSecret
	got, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if secret == "" || subtle.ConstantTimeCompare([]byte(got), []byte(secret)) != 1 {
		httpapi.WriteError(w, httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnauthorized, "bad or missing event secret"))
		return
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, maxEventsBody+1))
	if err != nil || len(b) > maxEventsBody {
		httpapi.WriteError(w, httpapi.Errorf(http.StatusRequestEntityTooLarge, httpapi.CodeTooLarge, "event notification too large"))
		return
	}
	events, err := ParseS3Event(b)
	if err != nil {
		httpapi.WriteError(w, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidJSON, "%v", err))
		return
	}
	for _, id := range events {
		if _, err := s.markUploaded(r.Context(), id); err != nil && !errors.Is(err, ErrNotFound) {
			s.log.Info("a direct upload from an S3 event was not accepted", "media", id, "err", err)
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// ParseS3Event returns the media IDs of the ObjectCreated records of an
// S3 event notification (keys are URL-encoded in events); records of
// other events and keys that are no media ID are skipped.
func ParseS3Event(b []byte) ([]string, error) {
	var ev s3Event
	if err := json.Unmarshal(b, &ev); err != nil {
		return nil, fmt.Errorf("not an S3 event notification: %w", err)
	}
	var ids []string
	for _, rec := range ev.Records {
		if !strings.HasPrefix(rec.EventName, "s3:ObjectCreated:") && !strings.HasPrefix(rec.EventName, "ObjectCreated:") {
			continue
		}
		key, err := url.QueryUnescape(rec.S3.Object.Key)
		if err != nil || !ValidID(key) {
			continue
		}
		ids = append(ids, key)
	}
	return ids, nil
}
