package node_test

import (
	"testing"

	"github.com/edgechat/edgechat/node/nodetest"
	"github.com/edgechat/edgechat/services/auth/idp/idptest"
)

// Microsoft Entra ID's authorization codes run to 2,000 characters and
// more (Azure AD B2C's past 2,400), so its redirect to the callback has a
// query string over the gateway's 2 KiB limit: the sign-in ended in 414
// uri_too_long. The callback takes a longer query now.
func TestOIDCCodeFlowWithALongCode(t *testing.T) {
	op := idptest.Start(t)
	op.SetCodeLength(2600)
	n := nodetest.StartNode(t, withOIDC(op))
	op.NextLogin(idptest.Claims{"sub": "e-1", "preferred_username": "eve"})
	resp, got := browse(t, browser(t, op, nil), n.HTTPURL+"/auth/oidc/corp/start")
	if resp.StatusCode != 200 || got.UserID != "eve" || got.AccessToken == "" {
		t.Fatalf("code flow with a 2,600-character code: %d %+v", resp.StatusCode, got)
	}
}
