package media

import (
	"strings"
	"testing"
)

// The daily quota frees up at the next UTC midnight, and 429 media_quota
// says so in Retry-After (protocol.md: "Retry-After says when to
// retry"; the Go SDK: "RetryAfter says when it frees up"), for POST
// /media as for POST /media/uploads. It said an hour whatever the time,
// so a client that waited as told at 10:00 UTC was refused again 13
// times before the quota freed up.
func TestQuotaRetryAfterIsTheNextUTCMidnight(t *testing.T) {
	e := newEnv(t, Config{QuotaCount: 1}) // the clock: 2026-05-01 10:00 UTC
	hdr := map[string]string{"Content-Type": "text/plain"}
	if w := e.do("POST", "/media?name=a.txt", "alice", strings.NewReader("first"), hdr); w.Code != 202 {
		t.Fatalf("first upload: %d %s", w.Code, w.Body)
	}
	w := e.do("POST", "/media?name=b.txt", "alice", strings.NewReader("second"), hdr)
	if w.Code != 429 || !strings.Contains(w.Body.String(), "media_quota") {
		t.Fatalf("second upload: %d %s, want 429 media_quota", w.Code, w.Body)
	}
	if got := w.Header().Get("Retry-After"); got != "50400" { // 14 h to midnight
		t.Errorf("Retry-After %q at 10:00 UTC, want 50400 (the next UTC midnight)", got)
	}
}
