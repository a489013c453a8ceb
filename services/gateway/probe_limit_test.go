package gateway

import (
	"errors"
	"net/http"
	"testing"

	"github.com/edgechat/edgechat/internal/httpapi"
)

// A load balancer or kubelet checks /healthz and /readyz from an address
// that client traffic may share (haproxy in TCP mode, a NAT, kube-proxy's
// SNAT): the checks answer the truth even when that address's per-IP
// bucket is empty. Before, they answered 429, so a busy node failed its
// health checks (haproxy took every node out; a liveness probe restarts
// the pod). /metrics stays under the per-IP limit (it costs more).
func TestHealthProbesPassTheEmptiedPerIPBucket(t *testing.T) {
	e := newEnv(t, Config{PerIP: RateSpec{Rate: 0.001, Burst: 2}}) // refills in 1,000 s
	e.g.Mount(httpapi.Route{Method: "GET", Pattern: "/open", Handler: ok200, Public: true})
	e.run(t)
	get := func(path string) int {
		t.Helper()
		resp, err := http.Get(e.g.URL() + path)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	for range 2 {
		if st := get("/open"); st != 200 {
			t.Fatalf("/open: %d", st)
		}
	}
	if st := get("/open"); st != http.StatusTooManyRequests {
		t.Fatalf("/open over the per-IP limit: %d", st)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if st := get(p); st != 200 {
			t.Errorf("%s from an address over its per-IP limit: %d, want 200", p, st)
		}
	}
	notReady := errors.New("no leader")
	e.ready.Store(&notReady)
	if st := get("/readyz"); st != http.StatusServiceUnavailable {
		t.Errorf("/readyz of a node that is not ready: %d, want 503", st)
	}
	if st := get("/metrics"); st != http.StatusTooManyRequests {
		t.Errorf("/metrics over the per-IP limit: %d, want 429", st)
	}
}
