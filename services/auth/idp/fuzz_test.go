package idp

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/edgechat/edgechat/internal/httpapi"
)

// FuzzUnverifiedIssuer: any CONNECT password is read without panicking,
// and a JWT-shaped one gives back its "iss".
func FuzzUnverifiedIssuer(f *testing.F) {
	f.Add("eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJodHRwczovL2EuZXhhbXBsZSJ9.c2ln")
	f.Add("a.b.c")
	f.Add("")
	f.Add("....")
	f.Fuzz(func(t *testing.T, token string) {
		iss := UnverifiedIssuer(token)
		if len(token) > maxTokenBytes && iss != "" {
			t.Fatalf("an oversized token was read: %q", iss)
		}
	})
}

// FuzzDecodeExchange: a body is a valid request or a 4xx httpapi.Error.
func FuzzDecodeExchange(f *testing.F) {
	f.Add([]byte(`{"subjectToken":"a.b.c"}`))
	f.Add([]byte(`{"subjectToken":"a.b.c","subjectTokenType":"urn:ietf:params:oauth:token-type:id_token"}`))
	f.Add([]byte(`{"subjectToken":""}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeExchange(body)
		if err != nil {
			var he *httpapi.Error
			if !errors.As(err, &he) || he.Status < 400 || he.Status > 499 || he.Code == "" {
				t.Fatalf("decoder error is not a 4xx httpapi.Error: %#v", err)
			}
			return
		}
		if req.SubjectToken == "" || !okTokenTypes[req.SubjectTokenType] {
			t.Fatalf("accepted %+v", req)
		}
		b, _ := json.Marshal(req)
		if again, err := decodeExchange(b); err != nil || again != req {
			t.Fatalf("round trip %+v -> %+v %v", req, again, err)
		}
	})
}

// FuzzParseJWKS: a provider's JWKS (outside input) yields only public
// signing keys of allowed algorithms, at most maxJWKSKeys of them.
func FuzzParseJWKS(f *testing.F) {
	f.Add([]byte(`{"keys":[{"kty":"RSA","kid":"k1","use":"sig","alg":"RS256","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","alg":"EdDSA"}]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, err := parseJWKS(b)
		if err != nil {
			return
		}
		if len(keys) > maxJWKSKeys {
			t.Fatalf("%d keys", len(keys))
		}
		for _, k := range keys {
			if !k.IsPublic() || !k.Valid() || (k.Use != "" && k.Use != "sig") || (k.Algorithm != "" && !algAllowed(k.Algorithm)) {
				t.Fatalf("kept key %+v", k)
			}
		}
	})
}

// FuzzDecodeLink: a body of POST /user/me/identities is a valid request
// or a 4xx httpapi.Error.
func FuzzDecodeLink(f *testing.F) {
	f.Add([]byte(`{"provider":"corp","subjectToken":"a.b.c","currentPassword":"pw"}`))
	f.Add([]byte(`{"provider":"corp","subjectToken":"a.b.c","proofProvider":"corp","proofToken":"d.e.f"}`))
	f.Add([]byte(`{"provider":"corp","subjectToken":"a.b.c"}`))
	f.Add([]byte(`{"provider":""}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeLink(body)
		if err != nil {
			var he *httpapi.Error
			if !errors.As(err, &he) || he.Status < 400 || he.Status > 499 || he.Code == "" {
				t.Fatalf("decoder error is not a 4xx httpapi.Error: %#v", err)
			}
			return
		}
		if req.Provider == "" || req.SubjectToken == "" {
			t.Fatalf("accepted %+v", req)
		}
		if byPassword, byToken := req.CurrentPassword != "", req.ProofProvider != "" && req.ProofToken != ""; byPassword == byToken {
			t.Fatalf("accepted without exactly one proof: %+v", req)
		}
	})
}
