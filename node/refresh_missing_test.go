package node_test

import (
	"strings"
	"testing"

	"github.com/edgechat/edgechat/node/nodetest"
)

// A refresh or logout that carries no refresh token at all (no
// refreshToken, no session cookie: a curl user who forgot the body's
// field) says so; it answered "refresh token unknown, expired or
// revoked", sending the user to look for what happened to a token they
// never sent. The code and status stay 401 invalid_refresh_token.
func TestRefreshWithoutAnyTokenSaysNoneWasSent(t *testing.T) {
	n := nodetest.StartNode(t)
	n.NewUser(t, "alice")
	for _, path := range []string{"/auth/refresh", "/auth/logout"} {
		var out struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		st := api(t, n, "", "POST", path, map[string]string{}, &out)
		if st != 401 || out.Error.Code != "invalid_refresh_token" || !strings.Contains(out.Error.Message, "no refresh token") {
			t.Errorf("POST %s {}: %d %+v, want 401 invalid_refresh_token saying no refresh token was sent", path, st, out.Error)
		}
	}
}
