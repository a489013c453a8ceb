// Package httpapi is the small shared vocabulary of edgechat's HTTP
// services: routes, the verified principal in a request context, JSON
// responses, JSON errors with stable codes and strict request decoding.
// The gateway mounts routes; services write handlers against this.
package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/edgechat/edgechat/internal/wire"
)

// Principal is the identity the gateway verified from a bearer token.
type Principal = wire.Principal

type principalKey struct{}

// WithPrincipal stores the verified identity in ctx; only the gateway calls it.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

type secureKey struct{}

// WithSecure marks a request that reached the gateway over TLS through a
// trusted proxy that terminated it (X-Forwarded-Proto: https).
func WithSecure(ctx context.Context) context.Context {
	return context.WithValue(ctx, secureKey{}, true)
}

// IsSecure tells whether the client's request came over TLS: to this
// node, or to a trusted proxy in front of it (WithSecure). Cookies are
// marked Secure then.
func IsSecure(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	v, _ := r.Context().Value(secureKey{}).(bool)
	return v
}

// PrincipalFrom returns the verified identity of the request.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// Route is one endpoint a service offers.
type Route struct {
	Method  string // GET, POST, ...
	Pattern string // net/http ServeMux pattern without the method, e.g. "/user/{uid}"
	Handler http.HandlerFunc
	Public  bool   // reachable without a token
	Admin   bool   // only for principals with the admin role (403 otherwise)
	Class   string // rate-limit class, e.g. "auth", "read", "write"
	MaxBody int64  // request body limit in bytes; 0 means DefaultMaxBody
	// OwnBodyLimit leaves the refusal of a declared Content-Length over
	// MaxBody to the handler, which answers it with its own error (POST
	// /media: 413 media_too_large); the gateway still cuts the body off
	// at MaxBody.
	OwnBodyLimit bool
	// MaxQuery raises the gateway's query string limit (2 KiB) for this
	// route, in bytes; 0 keeps it. For redirects from other parties that
	// carry long parameters (an OIDC provider's authorization code).
	MaxQuery int
	// OwnAuth, on a Public route, hands the handler the Authorization
	// header (removed from every other request): a webhook whose caller
	// authenticates with a shared secret, not a user token.
	OwnAuth bool
	// CatchUp makes the gateway wait until this node has applied what the
	// cluster committed before the request (503 unavailable when the node
	// cannot reach its leader), for a read that lists what writes through
	// any node change (a user's groups, contacts), and for a write whose
	// handler checks such state before it proposes (a group's roles, an
	// upload to complete): what the client just did through another node
	// is there. Reads of one thing need no flag: their 404 runs again
	// after the same wait.
	CatchUp bool
}

// HeaderPeer names the node that sends a request of its own to another
// member's HTTP API: a media read it makes for its user (a local media
// store) or for another region, a segment copy. The gateway takes such a
// request, when it comes straight from that member's address, for the
// cluster's own traffic and does not rate-limit it as a client's (the
// user was charged on the node they asked); from anywhere else the
// header is dropped and changes nothing (gateway.Deps.Peer).
const HeaderPeer = "X-Edgechat-Peer"

// DefaultMaxBody limits JSON request bodies.
const DefaultMaxBody = 64 << 10

// Error codes shared by services; a service may add its own.
const (
	CodeBadRequest     = "bad_request"
	CodeInvalidJSON    = "invalid_json"
	CodeUnknownField   = "unknown_field"
	CodeValidation     = "validation_failed"
	CodeUnauthorized   = "unauthorized"
	CodeForbidden      = "forbidden"
	CodeNotFound       = "not_found"
	CodeConflict       = "conflict"
	CodeTooLarge       = "payload_too_large"
	CodeUnsupported    = "unsupported_media_type"
	CodeRateLimited    = "rate_limited"
	CodeUnavailable    = "unavailable"
	CodeInternal       = "internal"
	CodeMethodNotAllow = "method_not_allowed"
	CodeURITooLong     = "uri_too_long"      // 414: query string over the limit
	CodeHeadersTooBig  = "headers_too_large" // 431: request headers over the limit
	// CodeRequestTimeout (408): the request's body did not arrive in time
	// (the gateway's body timeout); the connection is closed.
	CodeRequestTimeout = "request_timeout"
	// CodeNoSpace (507): the node's disk is full; nothing was stored.
	CodeNoSpace = "insufficient_storage"
)

// noSpaceRetry is the Retry-After of a 507: space comes back when an
// operator frees it, not in a second.
const noSpaceRetry = time.Minute

// ErrorRecorder is implemented by a ResponseWriter that wants the cause
// of a 500 or 507 WriteError answers (the client only sees "internal
// error"): the gateway puts it on the request's log line.
type ErrorRecorder interface{ RecordError(error) }

// Error is a JSON error response: {"error":{"code","message"}}.
type Error struct {
	Status     int           `json:"-"`
	Code       string        `json:"code"`
	Message    string        `json:"message"`
	RetryAfter time.Duration `json:"-"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf builds an *Error.
func Errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// WriteJSON writes v with the status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// BearerChallenge is the WWW-Authenticate of every 401 the API answers
// (the gateway adds RFC 6750's error="invalid_token" to a bad token's).
const BearerChallenge = `Bearer realm="edgechat"`

// WriteError writes err as a JSON error. Errors that are not *Error
// become 500, or 507 when the disk was full (ENOSPC, EDQUOT), and their
// cause goes to the ResponseWriter's ErrorRecorder, if it has one. A 401
// carries BearerChallenge unless the handler set a challenge.
func WriteError(w http.ResponseWriter, err error) {
	var e *Error
	if !errors.As(err, &e) {
		if noSpace(err) {
			e = &Error{Status: http.StatusInsufficientStorage, Code: CodeNoSpace,
				Message: "the server has no space to store this now", RetryAfter: noSpaceRetry}
		} else {
			e = &Error{Status: http.StatusInternalServerError, Code: CodeInternal, Message: "internal error"}
		}
		recordError(w, err)
	}
	if e.Status == http.StatusUnauthorized && w.Header().Get("WWW-Authenticate") == "" {
		// RFC 9110 §15.5.2: a 401 names the scheme to authenticate with.
		// Bearer (RFC 6750) is the API's; it opens no browser dialog.
		w.Header().Set("WWW-Authenticate", BearerChallenge)
	}
	if e.RetryAfter > 0 {
		secs := int((e.RetryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
	}
	WriteJSON(w, e.Status, struct {
		Error *Error `json:"error"`
	}{e})
}

// recordError hands err to the first ErrorRecorder among w and the
// writers it wraps (Unwrap, as http.ResponseController follows).
func recordError(w http.ResponseWriter, err error) {
	for w != nil {
		if r, ok := w.(ErrorRecorder); ok {
			r.RecordError(err)
			return
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return
		}
		w = u.Unwrap()
	}
}

// noSpace reports whether err comes from a full disk or quota.
func noSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// DecodeJSON strictly decodes a JSON request body into v: the content
// type must be JSON, unknown fields and trailing data are refused, and the
// body may be at most maxBytes (DefaultMaxBody when 0).
func DecodeJSON(r *http.Request, v any, maxBytes int64) error {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBody
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return Errorf(http.StatusUnsupportedMediaType, CodeUnsupported, "content type must be application/json")
		}
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBytes+1))
	if err != nil {
		return BodyReadError(err)
	}
	if int64(len(body)) > maxBytes {
		return Errorf(http.StatusRequestEntityTooLarge, CodeTooLarge, "body over %d bytes", maxBytes)
	}
	return DecodeJSONBytes(body, v)
}

// BodyReadError is the answer to a request whose body could not be read:
// 413 payload_too_large over the gateway's per-route limit
// (http.MaxBytesReader), 408 request_timeout when it did not arrive in
// time (the gateway's body timeout: a read deadline), else 400
// bad_request.
func BodyReadError(err error) error {
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return Errorf(http.StatusRequestEntityTooLarge, CodeTooLarge, "body over %d bytes", tooLarge.Limit)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return Errorf(http.StatusRequestTimeout, CodeRequestTimeout, "the request's body did not arrive in time")
	}
	return Errorf(http.StatusBadRequest, CodeBadRequest, "reading body: %v", err)
}

// DecodeJSONTyped is DecodeJSON for the endpoints a browser's session
// cookie works on (/auth/*): the Content-Type must be there too. A page
// of another origin of the same site (SameSite cookies go along) can POST
// a body without one (fetch of a Blob in no-cors mode), never one that
// says application/json without a CORS preflight the gateway refuses.
func DecodeJSONTyped(r *http.Request, v any, maxBytes int64) error {
	if r.Header.Get("Content-Type") == "" {
		return Errorf(http.StatusUnsupportedMediaType, CodeUnsupported, "content type must be application/json")
	}
	return DecodeJSON(r, v, maxBytes)
}

// jsonKind names the kind of JSON value encoding/json's
// UnmarshalTypeError.Value describes ("array", "number 5", "string").
func jsonKind(v string) string {
	if kind, _, ok := strings.Cut(v, " "); ok {
		v = kind
	}
	switch v {
	case "array":
		return "an array"
	case "string":
		return "a string"
	case "number":
		return "a number"
	case "bool":
		return "true or false"
	}
	return v
}

// DecodeJSONBytes is DecodeJSON's strict decoding of an in-memory body.
func DecodeJSONBytes(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var ute *json.UnmarshalTypeError
		switch {
		case errors.Is(err, io.EOF):
			return Errorf(http.StatusBadRequest, CodeInvalidJSON, "the body is empty: want a JSON object")
		case errors.As(err, &ute) && ute.Field == "":
			// The body itself (an array, a string): no field to name.
			return Errorf(http.StatusBadRequest, CodeValidation, "the body must be a JSON object, not %s", jsonKind(ute.Value))
		case errors.As(err, &ute):
			return Errorf(http.StatusBadRequest, CodeValidation, "field %q has the wrong type", ute.Field)
		case bytes.HasPrefix([]byte(err.Error()), []byte("json: unknown field")):
			return Errorf(http.StatusBadRequest, CodeUnknownField, "%s", err.Error()[6:])
		default:
			return Errorf(http.StatusBadRequest, CodeInvalidJSON, "invalid JSON: %v", err)
		}
	}
	// Anything but white space after the value is trailing data. (dec.More
	// is no test of that: it answers false before a stray ']' or '}'.)
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Errorf(http.StatusBadRequest, CodeInvalidJSON, "trailing data after the JSON value")
	}
	return nil
}

// AdminUserID reads the {uid} of an /admin/users/{uid} path, as every
// endpoint there reads it: a user ID. One written with capitals (Bob,
// the name as typed at sign-up) names no user: 404 not_found saying user
// IDs are lowercase and naming bob, as GET /user/{uid} answers it;
// anything else malformed is 400 validation_failed. The error is for
// WriteError.
func AdminUserID(r *http.Request) (string, error) {
	uid := r.PathValue("uid")
	if wire.ValidUserID(uid) == nil {
		return uid, nil
	}
	if hint := wire.LowercaseHint(uid); hint != "" && !strings.Contains(uid, "@") {
		return "", Errorf(http.StatusNotFound, CodeNotFound, "no such user%s", hint)
	}
	return "", Errorf(http.StatusBadRequest, CodeValidation, "invalid user id %q", uid)
}
