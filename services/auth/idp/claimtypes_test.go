package idp_test

import (
	"encoding/json"
	"testing"

	"github.com/edgechat/edgechat/services/auth/idp"
	"github.com/edgechat/edgechat/services/auth/idp/idptest"
)

// Providers differ in how they type the claims that only describe the
// user: AWS Cognito writes email_verified as the string "true" or
// "false", some put an object or a number where a name or picture is
// expected. Such a token is not malformed (its signature, issuer,
// audience, times and subject are what count): the user signs in, an
// email said unverified stays unverified, a claim of an unusable type is
// taken as absent.
func TestProfileClaimsOfOtherTypesDoNotRefuseTheSignIn(t *testing.T) {
	for _, c := range []struct {
		name  string
		extra idptest.Claims
		want  string
	}{
		{"email_verified string true", idptest.Claims{"email": "Vera.K@example.com", "email_verified": "true"}, "vera.k"},
		{"email_verified string false", idptest.Claims{"email": "v@example.com", "email_verified": "false"}, "u0042"},
		{"email_verified something else", idptest.Claims{"email": "v@example.com", "email_verified": "yes"}, "u0042"},
		{"email_verified null", idptest.Claims{"email": "v@example.com", "email_verified": json.RawMessage("null")}, "v__"},
		{"email_verified true", idptest.Claims{"email": "v@example.com", "email_verified": true}, "v__"},
		{"email_verified number", idptest.Claims{"email": "v@example.com", "email_verified": 1}, "u0042"},
		{"email not a string", idptest.Claims{"email": []string{"v@example.com"}}, "u0042"},
		{"name and picture objects", idptest.Claims{"email": "w@example.com", "name": map[string]string{"given": "W"},
			"picture": map[string]any{"data": map[string]string{"url": "https://x.example/p.png"}}}, "w__"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, func(pc *idp.ProviderConfig) { pc.UsernameClaim = idp.ClaimEmail })
			claims := idptest.Claims{"sub": "0042"}
			for k, v := range c.extra {
				claims[k] = v
			}
			status, out := e.exchange("test", e.op.Token(claims))
			if status != 200 || out["userId"] != c.want {
				t.Fatalf("%d %v, want 200 and user %s", status, out, c.want)
			}
		})
	}
	// preferred_username of another type: the subject names the user.
	e := newEnv(t)
	if status, out := e.exchange("test", e.op.Token(idptest.Claims{"sub": "0043", "preferred_username": 12})); status != 200 || out["userId"] != "u0043" {
		t.Fatalf("preferred_username a number: %d %v, want 200 and user u0043", status, out)
	}
}
