package media

import (
	"context"
	"errors"
	"net/http"
	"os"
	"time"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/services/media/store"
)

// Error codes of the media routes.
const (
	codeLengthRequired = "length_required"
	codeTooLarge       = "media_too_large"
	codeQuota          = "media_quota"
	codeBadState       = "media_not_uploaded"
)

// Routes are the media endpoints:
//
//	POST /media                 the file as the body (Content-Length, ?name=) or multipart "file": 202 {mediaId, status}
//	POST /media/uploads         {name, size, contentType}: presigned direct upload (S3 store): 201
//	POST /media/{id}/complete   {parts?}: a direct upload is done: 202 {mediaId, status}
//	POST /media/events          S3 event notifications (bearer: the shared secret): 204
//	GET  /media/{id}            the processed file (Range, ETag, immutable caching)
//	GET  /media/{id}/preview    its preview image
//	GET  /media/{id}/info       {id, mime, kind, name, size, width, height, durationMs, placeholder, preview, status, reason?}
func (s *Service) Routes() []httpapi.Route {
	return []httpapi.Route{
		{Method: http.MethodPost, Pattern: "/media", Handler: s.handleUpload, Class: httpapi.ClassUpload,
			MaxBody: s.cfg.MaxSize + multipartSlack, OwnBodyLimit: true}, // 413 media_too_large, not the gateway's payload_too_large
		{Method: http.MethodPost, Pattern: "/media/uploads", Handler: s.handleDirect, Class: httpapi.ClassUpload, MaxBody: 4 << 10},
		{Method: http.MethodPost, Pattern: "/media/{id}/complete", Handler: s.handleComplete, Class: httpapi.ClassUpload, CatchUp: true, MaxBody: 64 << 10},
		{Method: http.MethodPost, Pattern: "/media/events", Handler: s.handleEvents, Public: true, OwnAuth: true, Class: httpapi.ClassWrite, MaxBody: maxEventsBody},
		{Method: http.MethodGet, Pattern: "/media/{id}", Handler: s.handleFile, Class: httpapi.ClassRead},
		{Method: http.MethodGet, Pattern: "/media/{id}/preview", Handler: s.handlePreview, Class: httpapi.ClassRead},
		{Method: http.MethodGet, Pattern: "/media/{id}/info", Handler: s.handleInfo, Class: httpapi.ClassRead},
	}
}

// writeErr maps service errors to JSON errors.
func writeErr(w http.ResponseWriter, err error) {
	var he *httpapi.Error
	switch {
	case errors.As(err, &he):
		httpapi.WriteError(w, he)
	case errors.Is(err, ErrNotFound), errors.Is(err, store.ErrNotFound):
		httpapi.WriteError(w, httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no such media"))
	case errors.Is(err, ErrTooLarge):
		httpapi.WriteError(w, httpapi.Errorf(http.StatusRequestEntityTooLarge, codeTooLarge, "%v", err))
	case errors.Is(err, errBadBody) && errors.Is(err, os.ErrDeadlineExceeded):
		// Paused past the gateway's body timeout (a read deadline).
		httpapi.WriteError(w, httpapi.BodyReadError(err))
	case errors.Is(err, errBadBody):
		httpapi.WriteError(w, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "%v", err))
	case errors.Is(err, ErrEmpty):
		httpapi.WriteError(w, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeValidation, "empty upload"))
	case errors.Is(err, ErrKeyReused):
		httpapi.WriteError(w, httpapi.KeyReused())
	case errors.Is(err, ErrInProgress):
		httpapi.WriteError(w, &httpapi.Error{Status: http.StatusConflict, Code: httpapi.CodeConflict,
			Message: "the upload of this Idempotency-Key is still in progress; retry later", RetryAfter: time.Second})
	case errors.Is(err, ErrBadState):
		httpapi.WriteError(w, httpapi.Errorf(http.StatusConflict, codeBadState, "%v", err))
	case errors.Is(err, ErrQuota):
		retry := time.Hour
		var qe *quotaError
		if errors.As(err, &qe) {
			retry = qe.retry
		}
		httpapi.WriteError(w, &httpapi.Error{Status: http.StatusTooManyRequests, Code: codeQuota,
			Message: "daily upload quota reached", RetryAfter: retry})
	case errors.Is(err, ErrRemoteUnavailable):
		httpapi.WriteError(w, &httpapi.Error{Status: http.StatusServiceUnavailable, Code: codeMediaUnavailable,
			Message: "media of another region, which cannot be reached now; retry", RetryAfter: RemoteRetryAfter})
	case errors.Is(err, wire.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		httpapi.WriteError(w, &httpapi.Error{Status: http.StatusServiceUnavailable, Code: httpapi.CodeUnavailable,
			Message: "media unavailable right now; retry", RetryAfter: time.Second})
	default:
		httpapi.WriteError(w, err)
	}
}

// quotaError is ErrQuota with the time until the quota frees up, the
// next UTC midnight, for 429's Retry-After.
type quotaError struct {
	err   error
	retry time.Duration
}

func (e *quotaError) Error() string { return e.err.Error() }
func (e *quotaError) Unwrap() error { return e.err }

// withQuotaRetry adds to an ErrQuota when the user's quota frees up; other
// errors pass unchanged.
func (s *Service) withQuotaRetry(err error) error {
	if !errors.Is(err, ErrQuota) {
		return err
	}
	now := s.now().UTC()
	y, m, d := now.Date()
	return &quotaError{err: err, retry: time.Date(y, m, d+1, 0, 0, 0, 0, time.UTC).Sub(now)}
}
