package backup

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/edgechat/edgechat/internal/wire"
)

// GET /admin/backup on a node that cannot reach its leader answers 503
// unavailable with Retry-After, as docs/protocol.md says of unavailable
// (it had no Retry-After: `edgechat backup` and scripts had nothing to
// wait by).
func TestBackupStreamUnavailableSaysRetryAfter(t *testing.T) {
	for name, cause := range map[string]error{
		"no leader": fmt.Errorf("cluster: %w: no leader", wire.ErrUnavailable),
		"timeout":   context.DeadlineExceeded,
	} {
		t.Run(name, func(t *testing.T) {
			svc, err := NewService(Source{State: func(context.Context) (int64, uint64, io.ReadCloser, error) {
				return 0, 0, nil, cause
			}}, nil, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			mux := http.NewServeMux()
			for _, r := range svc.Routes() {
				mux.HandleFunc(r.Method+" "+r.Pattern, r.Handler)
			}
			srv := httptest.NewServer(mux)
			defer srv.Close()
			resp, err := http.Get(srv.URL + "/admin/backup")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
				t.Fatalf("GET /admin/backup without a leader: %d, Retry-After %q, %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
			}
		})
	}
}
