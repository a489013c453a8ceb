package node

import (
	"fmt"
	"os"
	"strconv"

	"github.com/edgechat/edgechat/services/auth/idp"
)

// Federated sign-in (docs/operations.md "Federated sign-in (OIDC)"): any
// number of providers in the YAML file (oidc_providers), or one from the
// --oidc-* flags.

func boolSetter(f func(c *Config) *bool) func(*Config, string) error {
	return func(c *Config, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("not a boolean: %q", v)
		}
		*f(c) = b
		return nil
	}
}

var oidcSettings = []setting{
	{name: "oidc-name", usage: "name of the OIDC provider of the --oidc-* flags, used in URLs (/auth/oidc/NAME/token)", set: stringSetter(func(c *Config) *string { return &c.OIDCName })},
	{name: "oidc-issuer", usage: "issuer URL of an OpenID Connect provider whose users may sign in (discovery: ISSUER/.well-known/openid-configuration)", set: stringSetter(func(c *Config) *string { return &c.OIDCIssuer })},
	{name: "oidc-client-id", usage: "this server's client ID at the OIDC provider", set: stringSetter(func(c *Config) *string { return &c.OIDCClientID })},
	{name: "oidc-client-secret-file", usage: "file holding the client secret at the OIDC provider (confidential clients)", set: stringSetter(func(c *Config) *string { return &c.OIDCClientSecretFile })},
	{name: "oidc-audience", usage: "audience provider tokens must carry (default: the client ID)", set: stringSetter(func(c *Config) *string { return &c.OIDCAudience })},
	{name: "oidc-ca-file", usage: "PEM CAs trusted for the OIDC provider's HTTPS, besides the system's (a private CA)", set: stringSetter(func(c *Config) *string { return &c.OIDCCAFile })},
	{name: "oidc-accept-on-connect", usage: "MQTT CONNECT accepts an OIDC provider's JWT as the password (username = the mapped user ID), for every configured provider", isBool: true, set: boolSetter(func(c *Config) *bool { return &c.OIDCAcceptOnConnect })},
	{name: "password-login", usage: "built-in username/password accounts may register and log in (false: only OIDC providers)", isBool: true, set: boolSetter(func(c *Config) *bool { return &c.PasswordLogin })},
}

// OIDCProviderList is the configured providers with their defaults:
// oidc_providers from the file, then the one of the --oidc-* flags.
func (c Config) OIDCProviderList() []idp.ProviderConfig {
	var out []idp.ProviderConfig
	for _, p := range c.OIDCProviders {
		p.AcceptOnConnect = p.AcceptOnConnect || c.OIDCAcceptOnConnect
		out = append(out, p.WithDefaults())
	}
	if c.OIDCIssuer != "" {
		out = append(out, idp.ProviderConfig{
			Name: c.OIDCName, Issuer: c.OIDCIssuer, ClientID: c.OIDCClientID, ClientSecretFile: c.OIDCClientSecretFile,
			Audience: c.OIDCAudience, CAFile: c.OIDCCAFile, AcceptOnConnect: c.OIDCAcceptOnConnect,
		}.WithDefaults())
	}
	return out
}

func (c Config) validateOIDC() error {
	if c.OIDCIssuer == "" {
		for flag, v := range map[string]string{"--oidc-client-id": c.OIDCClientID, "--oidc-client-secret-file": c.OIDCClientSecretFile,
			"--oidc-audience": c.OIDCAudience, "--oidc-ca-file": c.OIDCCAFile} {
			if v != "" {
				return fmt.Errorf("%w: %s needs --oidc-issuer", ErrConfig, flag)
			}
		}
		if c.OIDCName != "" && c.OIDCName != idp.DefaultName {
			return fmt.Errorf("%w: --oidc-name needs --oidc-issuer", ErrConfig)
		}
	}
	list := c.OIDCProviderList()
	if err := idp.ValidateAll(list); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	for _, p := range list {
		for what, f := range map[string]string{"client_secret_file": p.ClientSecretFile, "ca_file": p.CAFile} {
			if f == "" {
				continue
			}
			if _, err := os.Stat(f); err != nil {
				return fmt.Errorf("%w: OIDC provider %q: %s: %v", ErrConfig, p.Name, what, err)
			}
		}
	}
	if c.OIDCAcceptOnConnect && len(list) == 0 {
		return fmt.Errorf("%w: --oidc-accept-on-connect needs an OIDC provider (--oidc-issuer or oidc_providers)", ErrConfig)
	}
	if !c.PasswordLogin && len(list) == 0 {
		return fmt.Errorf("%w: --password-login=false needs an OIDC provider (--oidc-issuer or oidc_providers): nobody could sign in", ErrConfig)
	}
	return nil
}
