package web_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"testing"

	"github.com/edgechat/edgechat/node/nodetest"
)

// During a rolling upgrade the balancer sends a page of the conversation
// list after the first to a node older than its cursor, which refuses
// the parameter (400 validation_failed): the page shows what the first
// page listed. It showed nothing of the list (the error only), where the
// client before paging showed the first 1,000.
func TestConversationsPageRefusedByAnOlderNode(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "alice")
	bobTok := n.NewUser(t, "bob")
	if err := postMessage(n.HTTPURL, bobTok, `{"to":"alice","cid":"b1","type":"text","body":"from bob"}`); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(n.HTTPURL)
	if err != nil {
		t.Fatal(err)
	}
	node := httputil.NewSingleHostReverseProxy(u)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/chat/conversations" {
			node.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Query().Has("cursor") { // an older node
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"error":{"code":"validation_failed","message":"unknown query parameter \"cursor\""}}`)
			return
		}
		// The newer node's first page, as if more followed.
		rec := httptest.NewRecorder()
		node.ServeHTTP(rec, r)
		var page map[string]any
		if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &page) != nil {
			w.WriteHeader(rec.Code)
			_, _ = w.Write(rec.Body.Bytes())
			return
		}
		page["hasMore"], page["nextCursor"] = true, "1.dzz"
		_ = json.NewEncoder(w).Encode(page)
	}))
	t.Cleanup(front.Close)

	alice := browser(t)
	signIn(t, alice, front.URL, "alice")
	run(t, alice, "alice's list shows bob's conversation with its message and badge",
		poll(`(document.querySelector('[data-conv="d:bob"] .conv-last') || {}).textContent === 'from bob' && (document.querySelector('[data-conv="d:bob"] .badge') || {}).textContent === '1'`))
}
