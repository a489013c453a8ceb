package node

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/services/auth/idp"
)

func TestOIDCConfigFromFlagsAndFile(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("s3cret"), 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "edgechat.yaml")
	yaml := `oidc_providers:
  - name: keycloak
    issuer: https://sso.example.com/realms/corp
    client_id: edgechat
    client_secret_file: ` + secret + `
    required_claim: groups
    required_value: chat
    redirects: [https://chat.example.com/signed-in, "com.example.chat:/cb"]
    jwks_min_refetch: 30s
`
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig([]string{"--config", file, "--oidc-issuer", "https://accounts.google.com", "--oidc-name", "google",
		"--oidc-client-id", "123.apps.googleusercontent.com", "--oidc-accept-on-connect", "--password-login=false"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	list := cfg.OIDCProviderList()
	if len(list) != 2 || cfg.PasswordLogin {
		t.Fatalf("providers %+v, password login %v", list, cfg.PasswordLogin)
	}
	kc, g := list[0], list[1]
	if kc.Name != "keycloak" || kc.Audience != "edgechat" || kc.UsernameClaim != idp.ClaimPreferredUsername ||
		kc.JWKSMinRefetch != 30*time.Second || kc.RequiredValue != "chat" || len(kc.Redirects) != 2 || !kc.AcceptOnConnect {
		t.Fatalf("file provider %+v", kc)
	}
	if g.Name != "google" || g.Issuer != "https://accounts.google.com" || g.Audience != g.ClientID || !g.AcceptOnConnect ||
		strings.Join(g.Scopes, " ") != "openid profile email" {
		t.Fatalf("flag provider %+v", g)
	}
	// Defaults: no provider, passwords on.
	cfg, err = LoadConfig(nil, nil)
	if err != nil || len(cfg.OIDCProviderList()) != 0 || !cfg.PasswordLogin {
		t.Fatalf("defaults: %v %+v %v", err, cfg.OIDCProviderList(), cfg.PasswordLogin)
	}
}

func TestOIDCConfigRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	yamlFile := func(body string) string {
		f := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+"-"+time.Now().Format("150405.000000000")+".yaml")
		if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	iss := []string{"--oidc-issuer", "https://sso.example.com"}
	cases := map[string][]string{
		"client id without issuer":       {"--oidc-client-id", "x"},
		"accept on connect, no provider": {"--oidc-accept-on-connect"},
		"passwords off, no provider":     {"--password-login=false"},
		"issuer without client id":       iss,
		"http issuer":                    {"--oidc-issuer", "http://sso.example.com", "--oidc-client-id", "x"},
		"issuer with query":              {"--oidc-issuer", "https://sso.example.com/?a=1", "--oidc-client-id", "x"},
		"bad name":                       append([]string{"--oidc-client-id", "x", "--oidc-name", "Bad Name"}, iss...),
		"missing secret file":            append([]string{"--oidc-client-id", "x", "--oidc-client-secret-file", filepath.Join(dir, "none")}, iss...),
		"missing ca file":                append([]string{"--oidc-client-id", "x", "--oidc-ca-file", filepath.Join(dir, "none")}, iss...),
		"bad username claim":             {"--config", yamlFile("oidc_providers:\n  - {name: a, issuer: 'https://a.example', client_id: x, username_claim: nickname}\n")},
		"claim without value":            {"--config", yamlFile("oidc_providers:\n  - {name: a, issuer: 'https://a.example', client_id: x, required_claim: groups}\n")},
		"duplicate names":                {"--config", yamlFile("oidc_providers:\n  - {name: a, issuer: 'https://a.example', client_id: x}\n  - {name: a, issuer: 'https://b.example', client_id: x}\n")},
		"duplicate issuers":              {"--config", yamlFile("oidc_providers:\n  - {name: a, issuer: 'https://a.example', client_id: x}\n  - {name: b, issuer: 'https://a.example/', client_id: x}\n")},
		"javascript redirect":            {"--config", yamlFile("oidc_providers:\n  - {name: a, issuer: 'https://a.example', client_id: x, redirects: ['javascript:alert(1)']}\n")},
		"http redirect":                  {"--config", yamlFile("oidc_providers:\n  - {name: a, issuer: 'https://a.example', client_id: x, redirects: ['http://evil.example/cb']}\n")},
		"scopes without openid":          {"--config", yamlFile("oidc_providers:\n  - {name: a, issuer: 'https://a.example', client_id: x, scopes: [profile]}\n")},
		"unknown provider key":           {"--config", yamlFile("oidc_providers:\n  - {name: a, issuer: 'https://a.example', client_id: x, clientID: y}\n")},
		// The provider sends the browser to callback_url: a path other than
		// the provider's own callback is never served (404), and the state
		// cookie (Path=/auth/oidc/{name}/) is not sent to it.
		"callback url of another path":     {"--config", yamlFile("oidc_providers:\n  - {name: a, issuer: 'https://a.example', client_id: x, callback_url: 'https://chat.example/oidc/callback'}\n")},
		"callback url of another provider": {"--config", yamlFile("oidc_providers:\n  - {name: a, issuer: 'https://a.example', client_id: x, callback_url: 'https://chat.example/auth/oidc/b/callback'}\n")},
	}
	for name, args := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := LoadConfig(args, nil); !errors.Is(err, ErrConfig) {
				t.Fatalf("LoadConfig(%q): %v, want ErrConfig", args, err)
			}
		})
	}
	// The message names what is wrong.
	_, err := LoadConfig([]string{"--oidc-issuer", "https://a.example", "--oidc-client-id", "x", "--oidc-name", "Bad Name"}, nil)
	if err == nil || !strings.Contains(err.Error(), "Bad Name") || !errors.Is(err, idp.ErrConfig) {
		t.Fatalf("bad name: %v", err)
	}
	// Plain HTTP is allowed on the loopback (a provider on the same box).
	if _, err := LoadConfig([]string{"--oidc-issuer", "http://127.0.0.1:5556/dex", "--oidc-client-id", "x"}, nil); err != nil {
		t.Fatalf("loopback http issuer: %v", err)
	}
}
