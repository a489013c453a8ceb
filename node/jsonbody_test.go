package node_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/edgechat/edgechat/node/nodetest"
)

// rawCall sends body as it is (no JSON encoding) and returns the status
// and the error code of a JSON error answer ("" for none).
func rawCall(t *testing.T, n *nodetest.Node, token, method, path, ctype string, body io.Reader, length int64) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, n.HTTPURL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if length >= 0 {
		req.ContentLength = length
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	_ = json.Unmarshal(rb, &e)
	return resp.StatusCode, e.Error.Code
}

// A request body is one JSON value (docs/protocol.md, HTTP API:
// invalid_json "the body is not one JSON value"): a stray closing
// bracket or brace after it is trailing data, refused like any other,
// not ignored (it was: PATCH /user/me {..}} changed the profile).
func TestJSONBodyWithTrailingCloserRefused(t *testing.T) {
	n := nodetest.StartNode(t)
	tok := n.NewUser(t, "alice")
	for _, body := range []string{`{"displayName":"Eve"}}`, `{"displayName":"Eve"}]`, `{"displayName":"Eve"} ]`} {
		st, code := rawCall(t, n, tok, "PATCH", "/user/me", "application/json", strings.NewReader(body), -1)
		if st != http.StatusBadRequest || code != "invalid_json" {
			t.Errorf("PATCH /user/me %s: %d %q, want 400 invalid_json", body, st, code)
		}
	}
	var me struct{ DisplayName string }
	if st := api(t, n, tok, "GET", "/user/me", nil, &me); st != 200 || me.DisplayName != "Alice" {
		t.Errorf("after the refused patches: %d, display name %q, want Alice", st, me.DisplayName)
	}
	// One value, with white space after it, is fine.
	if st, code := rawCall(t, n, tok, "PATCH", "/user/me", "application/json", strings.NewReader("{\"displayName\":\"Eve\"}\n \t"), -1); st != 200 {
		t.Errorf("PATCH /user/me with trailing white space: %d %q, want 200", st, code)
	}
}
