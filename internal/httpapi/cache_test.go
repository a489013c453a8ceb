package httpapi

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func cached(method string, v any, status int, inm ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, "/x", nil)
	for _, h := range inm {
		r.Header.Add("If-None-Match", h)
	}
	w := httptest.NewRecorder()
	WriteJSONCached(w, r, status, v, CachePrivateRevalidate)
	return w
}

func TestWriteJSONCached(t *testing.T) {
	type profile struct {
		UserID string `json:"userId"`
		About  string `json:"about"`
	}
	v1 := profile{"alice", "hi"}
	first := cached("GET", v1, 200)
	etag := first.Header().Get("ETag")
	if first.Code != 200 || first.Body.String() != `{"userId":"alice","about":"hi"}`+"\n" {
		t.Fatalf("first: %d %q", first.Code, first.Body)
	}
	if !strings.HasPrefix(etag, `"`) || !strings.HasSuffix(etag, `"`) || len(etag) != 26 {
		t.Fatalf("ETag %q is not a strong tag", etag)
	}
	if first.Header().Get("Cache-Control") != "private, no-cache" || first.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("headers %v", first.Header())
	}
	if again := cached("GET", v1, 200); again.Header().Get("ETag") != etag {
		t.Fatal("ETag not stable for the same value")
	}
	changed := cached("GET", profile{"alice", "bye"}, 200)
	if changed.Header().Get("ETag") == etag {
		t.Fatal("ETag did not change with the representation")
	}

	weak := "W/" + etag
	for _, tc := range []struct {
		name   string
		method string
		status int
		inm    []string
		want   int
	}{
		{"exact", "GET", 200, []string{etag}, 304},
		{"head", "HEAD", 200, []string{etag}, 304},
		{"weak form matches", "GET", 200, []string{weak}, 304},
		{"in a list", "GET", 200, []string{`"a", W/"b",` + etag}, 304},
		{"in a second header", "GET", 200, []string{`"a"`, etag}, 304},
		{"star", "GET", 200, []string{"*"}, 304},
		{"other tag", "GET", 200, []string{`"nope"`}, 200},
		{"unquoted", "GET", 200, []string{strings.Trim(etag, `"`)}, 200},
		{"malformed before the tag", "GET", 200, []string{`"a, ` + etag}, 200},
		{"stale tag", "GET", 200, []string{changed.Header().Get("ETag")}, 200},
		{"not for PATCH", "PATCH", 200, []string{etag}, 200},
		{"not for 201", "GET", 201, []string{etag}, 201},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := cached(tc.method, v1, tc.status, tc.inm...)
			if w.Code != tc.want {
				t.Fatalf("status %d, want %d", w.Code, tc.want)
			}
			if w.Header().Get("ETag") != etag || w.Header().Get("Cache-Control") != "private, no-cache" {
				t.Fatalf("headers %v", w.Header())
			}
			if tc.want == 304 && w.Body.Len() != 0 {
				t.Fatalf("304 with a body %q", w.Body)
			}
		})
	}

	// A value that cannot be encoded is a 500, not a half-written 200.
	w := cached("GET", map[string]any{"f": func() {}}, 200)
	if w.Code != http.StatusInternalServerError || w.Header().Get("ETag") != "" {
		t.Fatalf("unencodable: %d %v", w.Code, w.Header())
	}
}

// FuzzIfNoneMatch: any header parses without panicking, and a header
// that lists our tag (alone or after well-formed tags) always matches.
func FuzzIfNoneMatch(f *testing.F) {
	for _, s := range []string{`"a"`, `W/"a", "b"`, `*`, `"a`, `W/`, `,,,`, `"a" "b"`} {
		f.Add(s)
	}
	etag := StrongETag([]byte("x"))
	f.Fuzz(func(t *testing.T, h string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("If-None-Match", h)
		IfNoneMatch(r, etag)
		r.Header.Add("If-None-Match", etag)
		if !IfNoneMatch(r, etag) {
			t.Fatalf("tag in its own header line not matched after %q", h)
		}
	})
}
