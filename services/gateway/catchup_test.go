package gateway

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
)

// gatewayLag is the state of a gateway's stand-in read barrier: applied
// once a barrier passed, down to make barriers fail.
type gatewayLag struct {
	applied, down atomic.Bool
	barriers      atomic.Int32
}

// newLaggingGateway builds a gateway whose read barrier is lag's.
func newLaggingGateway(t *testing.T) (*Gateway, *gatewayLag) {
	t.Helper()
	lag := &gatewayLag{}
	g, err := New(Config{Addr: "127.0.0.1:0"}, Deps{Verifier: testVerifier, Registerer: prometheus.NewRegistry(),
		ReadBarrier: func(context.Context) error {
			lag.barriers.Add(1)
			if lag.down.Load() {
				return wire.ErrUnavailable
			}
			lag.applied.Store(true)
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Close() })
	return g, lag
}

// A read answered 404 by a node that had not applied what another node
// committed a moment ago runs again once it has; nothing of the first
// answer reaches the client. Other answers and writes never wait.
func TestReadAnswered404RunsAgainAfterTheReadBarrier(t *testing.T) {
	g, lag := newLaggingGateway(t)
	applied, down, barriers := &lag.applied, &lag.down, &lag.barriers
	notYet := func(w http.ResponseWriter) {
		w.Header().Set("X-Stale", "1")
		httpapi.WriteError(w, httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no such thing"))
	}
	g.Mount(
		httpapi.Route{Method: http.MethodGet, Pattern: "/thing/{id}", Handler: func(w http.ResponseWriter, r *http.Request) {
			if !applied.Load() {
				notYet(w)
				return
			}
			httpapi.WriteJSON(w, http.StatusOK, map[string]string{"id": r.PathValue("id")})
		}},
		httpapi.Route{Method: http.MethodPost, Pattern: "/thing", Class: httpapi.ClassWrite, Handler: func(w http.ResponseWriter, r *http.Request) {
			notYet(w)
		}},
		httpapi.Route{Method: http.MethodGet, Pattern: "/other", Handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Other", "1")
			httpapi.WriteJSON(w, http.StatusOK, map[string]bool{"ok": true})
		}},
	)
	do := func(method, path string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, path, nil)
		req.Header.Set("Authorization", "Bearer good-alice")
		w := httptest.NewRecorder()
		g.Handler().ServeHTTP(w, req)
		return w
	}

	w := do(http.MethodGet, "/thing/t1")
	if w.Code != http.StatusOK || strings.TrimSpace(w.Body.String()) != `{"id":"t1"}` || w.Header().Get("X-Stale") != "" {
		t.Fatalf("read of what the node had not applied: %d %q %v", w.Code, w.Body, w.Header())
	}
	if barriers.Load() != 1 || testutil.CounterValue(t, g.mReadAgain) != 1 {
		t.Fatalf("barriers %d, metric %v", barriers.Load(), testutil.CounterValue(t, g.mReadAgain))
	}
	if w := do(http.MethodGet, "/other"); w.Code != http.StatusOK || w.Header().Get("X-Other") != "1" || w.Header().Get("X-Request-Id") == "" {
		t.Fatalf("other read: %d %v", w.Code, w.Header())
	}
	if w := do(http.MethodPost, "/thing"); w.Code != http.StatusNotFound {
		t.Fatalf("write: %d", w.Code)
	}
	if barriers.Load() != 1 {
		t.Fatalf("an answer that was not a read's 404 waited: %d barriers", barriers.Load())
	}

	// A node that cannot catch up keeps the 404 it found, as written.
	applied.Store(false)
	down.Store(true)
	w = do(http.MethodGet, "/thing/t2")
	if w.Code != http.StatusNotFound || w.Header().Get("X-Stale") != "1" || errorCode(t, w.Header().Get("Content-Type"), w.Body.Bytes()) != httpapi.CodeNotFound {
		t.Fatalf("404 that stands: %d %v %q", w.Code, w.Header(), w.Body)
	}
	if barriers.Load() != 2 {
		t.Fatalf("barriers %d, want 2", barriers.Load())
	}
}

// A CatchUp route (a list) runs only once the node has applied what the
// cluster committed before the request; a node that cannot catch up
// answers 503 and does not run it.
func TestCatchUpRouteWaitsForTheReadBarrier(t *testing.T) {
	g, lag := newLaggingGateway(t)
	applied, down := &lag.applied, &lag.down
	var ran atomic.Int32
	g.Mount(httpapi.Route{Method: http.MethodGet, Pattern: "/list", CatchUp: true, Handler: func(w http.ResponseWriter, r *http.Request) {
		ran.Add(1)
		httpapi.WriteJSON(w, http.StatusOK, map[string]bool{"applied": applied.Load()})
	}})
	do := func() *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, "/list", nil)
		req.Header.Set("Authorization", "Bearer good-alice")
		w := httptest.NewRecorder()
		g.Handler().ServeHTTP(w, req)
		return w
	}
	if w := do(); w.Code != http.StatusOK || strings.TrimSpace(w.Body.String()) != `{"applied":true}` {
		t.Fatalf("list: %d %q", w.Code, w.Body)
	}
	down.Store(true)
	if w := do(); w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" ||
		errorCode(t, w.Header().Get("Content-Type"), w.Body.Bytes()) != httpapi.CodeUnavailable {
		t.Fatalf("list without a leader: %d %v %q", w.Code, w.Header(), w.Body)
	}
	if ran.Load() != 1 {
		t.Fatalf("handler ran %d times, want 1", ran.Load())
	}
}
