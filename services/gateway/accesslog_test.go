package gateway

import (
	"net/http"
	"strings"
	"testing"

	"github.com/edgechat/edgechat/internal/ratelimit"
)

// The access log writes a request's path cut to 256 bytes, with its
// length: the path is the client's to choose, up to net/http's limit on
// the request's head (some 80 KiB), and every request is logged at Info,
// those the per-IP bucket refuses too, so anyone could write lines of
// 80 KiB into a node's log as fast as they could send them.
func TestAccessLogCutsLongPaths(t *testing.T) {
	e := newEnv(t, Config{PerIP: RateSpec{Rate: 0.001, Burst: 1}})
	e.run(t)
	long := "/" + strings.Repeat("x", 60<<10)
	for i, want := range []int{http.StatusNotFound, http.StatusTooManyRequests} {
		resp, err := http.Get(e.g.URL() + long)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("request %d: %d, want %d", i, resp.StatusCode, want)
		}
	}
	lines := e.logs.lines(t, "http request")
	if len(lines) != 2 {
		t.Fatalf("%d access-log lines, want 2", len(lines))
	}
	for _, l := range lines {
		path, _ := l["path"].(string)
		if len(path) > 300 || !strings.HasPrefix(path, "/xxxx") {
			t.Errorf("a %v answer logged a path of %d bytes (%.80q...), want at most 256 and its length", l["status"], len(path), path)
		}
		if l["path_bytes"] != float64(len(long)) {
			t.Errorf("path_bytes %v, want %d", l["path_bytes"], len(long))
		}
	}
	// A path of the usual length is logged as it is, and alone.
	e2 := newEnv(t, Config{PerIP: ratelimit.Unlimited})
	e2.do("GET", "/presence/alice", "", nil)
	if l := e2.logs.lines(t, "http request"); len(l) != 1 || l[0]["path"] != "/presence/alice" || l[0]["path_bytes"] != nil {
		t.Fatalf("access log of a short path: %v", l)
	}
}
