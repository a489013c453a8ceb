package httpapi

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// Cache-Control values for WriteJSONCached. Per-user API answers may be
// kept by the client only and must be revalidated (a cheap 304).
const (
	CachePrivateRevalidate = "private, no-cache"
	CacheNoStore           = "no-store"
)

// WriteJSONCached writes v like WriteJSON, with a strong ETag computed
// over the encoded body and the given Cache-Control (none when empty).
// A GET or HEAD answered 200 whose If-None-Match matches the ETag (a
// list, weak W/ tags and * are understood) gets 304 Not Modified with the
// ETag and Cache-Control and no body. Other statuses and methods (the
// answer to a PATCH, say) carry the ETag but are never 304.
func WriteJSONCached(w http.ResponseWriter, r *http.Request, status int, v any, cacheControl string) {
	body, err := json.Marshal(v)
	if err != nil { // a value that cannot be encoded is a bug in the handler
		WriteError(w, fmt.Errorf("encoding response: %w", err))
		return
	}
	body = append(body, '\n') // the same bytes WriteJSON's Encoder writes
	etag := StrongETag(body)
	h := w.Header()
	h.Set("ETag", etag)
	if cacheControl != "" {
		h.Set("Cache-Control", cacheControl)
	}
	if status == http.StatusOK && (r.Method == http.MethodGet || r.Method == http.MethodHead) && IfNoneMatch(r, etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// StrongETag is a strong entity tag for a representation: a quoted,
// URL-safe base64 of the first 144 bits of its SHA-256.
func StrongETag(body []byte) string {
	sum := sha256.Sum256(body)
	return `"` + base64.RawURLEncoding.EncodeToString(sum[:18]) + `"`
}

// IfNoneMatch reports whether r's If-None-Match header matches etag, with
// the weak comparison RFC 9110 §13.1.2 prescribes for it: W/"x" matches
// "x", and * matches any current representation. A malformed list matches
// only up to the point where it goes wrong.
func IfNoneMatch(r *http.Request, etag string) bool {
	want := opaqueTag(etag)
	if want == "" {
		return false
	}
	for _, v := range r.Header.Values("If-None-Match") {
		for {
			v = strings.TrimLeft(v, " \t,")
			if v == "" {
				break
			}
			if v[0] == '*' {
				return true
			}
			tag, rest, ok := scanTag(v)
			if !ok {
				break
			}
			if tag == want {
				return true
			}
			v = rest
		}
	}
	return false
}

// scanTag reads one entity tag (optionally W/) from the front of s and
// returns its opaque part with quotes.
func scanTag(s string) (tag, rest string, ok bool) {
	s = strings.TrimPrefix(s, "W/")
	if len(s) < 2 || s[0] != '"' {
		return "", "", false
	}
	end := strings.IndexByte(s[1:], '"')
	if end < 0 {
		return "", "", false
	}
	return s[:end+2], s[end+2:], true
}

func opaqueTag(etag string) string {
	tag, rest, ok := scanTag(etag)
	if !ok || strings.TrimSpace(rest) != "" {
		return ""
	}
	return tag
}
