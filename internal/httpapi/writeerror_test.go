package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"syscall"
	"testing"
)

type recorder struct {
	http.ResponseWriter
	err error
}

func (r *recorder) RecordError(err error) { r.err = err }

// wrapped is a handler's own writer around the gateway's (compression,
// say): the cause still reaches the recorder inside it.
type wrapped struct{ http.ResponseWriter }

func (w wrapped) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func TestWriteErrorMapsAndRecordsCauses(t *testing.T) {
	full := fmt.Errorf("storing: %w", &os.PathError{Op: "write", Path: "/x", Err: syscall.ENOSPC})
	quota := fmt.Errorf("storing: %w", &os.PathError{Op: "write", Path: "/x", Err: syscall.EDQUOT})
	for _, c := range []struct {
		err      error
		status   int
		recorded bool
	}{
		{errors.New("boom"), 500, true},
		{full, 507, true},
		{quota, 507, true},
		{Errorf(409, CodeConflict, "taken"), 409, false},
		{fmt.Errorf("wrapped: %w", Errorf(404, CodeNotFound, "no")), 404, false},
	} {
		rec := &recorder{ResponseWriter: httptest.NewRecorder()}
		WriteError(wrapped{rec}, c.err)
		got := rec.ResponseWriter.(*httptest.ResponseRecorder)
		if got.Code != c.status {
			t.Errorf("%v: status %d, want %d", c.err, got.Code, c.status)
		}
		if (rec.err != nil) != c.recorded || (c.recorded && rec.err != c.err) {
			t.Errorf("%v: recorded %v", c.err, rec.err)
		}
		if c.status == 507 && got.Header().Get("Retry-After") != "60" {
			t.Errorf("%v: Retry-After %q", c.err, got.Header().Get("Retry-After"))
		}
	}
}

// Every 401 names its scheme (RFC 9110 §15.5.2), and one a handler set
// (the gateway's invalid_token) is kept.
func TestWriteErrorChallengesA401(t *testing.T) {
	rec := httptest.NewRecorder()
	WriteError(rec, Errorf(http.StatusUnauthorized, "invalid_credentials", "invalid username or password"))
	if got := rec.Header().Get("WWW-Authenticate"); got != `Bearer realm="edgechat"` {
		t.Fatalf("WWW-Authenticate %q", got)
	}
	rec = httptest.NewRecorder()
	rec.Header().Set("WWW-Authenticate", `Bearer realm="edgechat", error="invalid_token"`)
	WriteError(rec, Errorf(http.StatusUnauthorized, CodeUnauthorized, "expired"))
	if got := rec.Header().Get("WWW-Authenticate"); got != `Bearer realm="edgechat", error="invalid_token"` {
		t.Fatalf("kept challenge: %q", got)
	}
	rec = httptest.NewRecorder()
	WriteError(rec, Errorf(http.StatusForbidden, CodeForbidden, "no"))
	if got := rec.Header().Get("WWW-Authenticate"); got != "" {
		t.Fatalf("403 challenged: %q", got)
	}
}
