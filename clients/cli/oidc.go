package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/oauth2"

	edgechat "github.com/edgechat/edgechat/clients/go"
)

// Signing in through the server's OpenID Connect provider from a
// terminal: the provider's device flow (RFC 8628) when it offers one: the
// user opens a URL on any device and enters a code; the ID token it
// yields is exchanged for edgechat tokens. The refresh token is kept in a
// session file (0600) so that the next start signs in without the
// provider.

// ErrNoDeviceFlow: the provider offers no device flow; the user signs in
// in a browser instead.
var ErrNoDeviceFlow = errors.New("cli: the provider offers no device flow")

// OIDCLogin signs a terminal user in through a provider of Server.
type OIDCLogin struct {
	Server      string // the node's HTTP base URL
	Provider    string // the provider's name at the server
	SessionFile string // where the refresh token is kept ("": not kept)
	Device      string // names the session a new sign-in makes ("": none)
	Out         io.Writer
	// HTTPClient talks to the provider (nil: http.DefaultClient).
	HTTPClient *http.Client
}

// DefaultSessionFile is where the session of provider at server is kept:
// the user's config directory, edgechat/sessions/.
func DefaultSessionFile(server, provider string) (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("cli: config directory: %w", err)
	}
	u, err := url.Parse(server)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("%w: server URL %q", ErrConfig, server)
	}
	name := strings.NewReplacer(":", "_", "/", "_").Replace(provider + "@" + u.Host)
	return filepath.Join(dir, "edgechat", "sessions", name+".json"), nil
}

// refreshTimeout bounds the refresh of a kept session.
const refreshTimeout = 30 * time.Second

type sessionFile struct {
	RefreshToken string `json:"refreshToken"`
	UserID       string `json:"userId"`
	// RefreshKey is the Idempotency-Key of a refresh of RefreshToken
	// sent without an answer yet: the next start sends it again with the
	// same key, which the server answers as a retry (a minute at most)
	// instead of ending the session as a reuse.
	RefreshKey string `json:"refreshKey,omitempty"`
}

// SaveSession writes the refresh token of t to path, readable by the
// user only (the directory 0700, the file 0600, replaced atomically).
func SaveSession(path string, t edgechat.Tokens) error {
	if path == "" || t.RefreshToken == "" {
		return nil
	}
	b, _ := json.Marshal(sessionFile{RefreshToken: t.RefreshToken, UserID: t.UserID})
	if err := writePrivate(path, b); err != nil {
		return fmt.Errorf("cli: session file: %w", err)
	}
	return nil
}

// writePrivate replaces the file at path with b, readable by the user
// only: the directory is made 0700, the file is written 0600 under
// another name and renamed, so that a reader never sees half of it.
func writePrivate(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func loadSession(path string) sessionFile {
	if path == "" {
		return sessionFile{}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return sessionFile{}
	}
	var s sessionFile
	if json.Unmarshal(b, &s) != nil {
		return sessionFile{}
	}
	return s
}

func (o OIDCLogin) client() *http.Client {
	if o.HTTPClient != nil {
		return o.HTTPClient
	}
	return http.DefaultClient
}

func (o OIDCLogin) getJSON(ctx context.Context, u string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := o.client().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(v)
}

// Tokens signs in: with the kept refresh token when it still works,
// else through the provider's device flow (printing what to open and
// the code to Out). The new refresh token is kept, also when ctx ends
// while the kept one is being refreshed (that refresh runs to its end,
// at most refreshTimeout).
func (o OIDCLogin) Tokens(ctx context.Context) (edgechat.Tokens, error) {
	server := strings.TrimRight(o.Server, "/")
	if kept := loadSession(o.SessionFile); kept.RefreshToken != "" {
		// Once sent, the refresh runs to its end and its token is kept
		// even when ctx ends meanwhile: the server may already have
		// spent it, and the next start presenting it again would revoke
		// the session. Its key is kept before it is sent, so that a
		// refresh whose answer was lost goes again as a retry.
		if kept.RefreshKey == "" {
			kept.RefreshKey = edgechat.NewIdempotencyKey()
			if b, err := json.Marshal(kept); err == nil {
				_ = writePrivate(o.SessionFile, b) // without it, a lost answer costs the session, as before
			}
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), refreshTimeout)
		t, err := edgechat.RefreshWithKey(rctx, server, kept.RefreshToken, kept.RefreshKey)
		cancel()
		if err == nil {
			return t, SaveSession(o.SessionFile, t)
		}
		if ctx.Err() != nil {
			return edgechat.Tokens{}, fmt.Errorf("cli: refresh the kept session: %w", ctx.Err())
		}
	}
	var provs struct {
		Providers []struct {
			Name     string `json:"name"`
			Issuer   string `json:"issuer"`
			ClientID string `json:"clientId"`
		} `json:"providers"`
	}
	if err := o.getJSON(ctx, server+"/auth/oidc/providers", &provs); err != nil {
		return edgechat.Tokens{}, fmt.Errorf("cli: the server's identity providers: %w", err)
	}
	var issuer, clientID string
	var names []string
	for _, p := range provs.Providers {
		names = append(names, p.Name)
		if p.Name == o.Provider {
			issuer, clientID = p.Issuer, p.ClientID
		}
	}
	if issuer == "" {
		return edgechat.Tokens{}, fmt.Errorf("%w: the server has no provider %q (it has %q)", ErrConfig, o.Provider, names)
	}
	var meta struct {
		DeviceAuth string `json:"device_authorization_endpoint"`
		Token      string `json:"token_endpoint"`
	}
	if err := o.getJSON(ctx, strings.TrimRight(issuer, "/")+"/.well-known/openid-configuration", &meta); err != nil {
		return edgechat.Tokens{}, fmt.Errorf("cli: provider discovery: %w", err)
	}
	if meta.DeviceAuth == "" || meta.Token == "" {
		fmt.Fprintf(o.Out, "Sign in in a browser: %s/auth/oidc/%s/start\n", server, url.PathEscape(o.Provider))
		return edgechat.Tokens{}, ErrNoDeviceFlow
	}
	cfg := oauth2.Config{ClientID: clientID, Scopes: []string{"openid", "profile", "email"},
		Endpoint: oauth2.Endpoint{DeviceAuthURL: meta.DeviceAuth, TokenURL: meta.Token}}
	octx := context.WithValue(ctx, oauth2.HTTPClient, o.client())
	da, err := cfg.DeviceAuth(octx)
	if err != nil {
		return edgechat.Tokens{}, fmt.Errorf("cli: device authorization: %w", err)
	}
	// The provider's answer goes to the terminal: printed safe.
	uri, complete, code := safeText(da.VerificationURI, false), safeText(da.VerificationURIComplete, false), safeText(da.UserCode, false)
	if complete != "" {
		fmt.Fprintf(o.Out, "To sign in, open %s\n(or open %s and enter the code %s)\n", complete, uri, code)
	} else {
		fmt.Fprintf(o.Out, "To sign in, open %s and enter the code %s\n", uri, code)
	}
	if da.Expiry.IsZero() {
		da.Expiry = time.Now().Add(10 * time.Minute)
	}
	tok, err := cfg.DeviceAccessToken(octx, da)
	if err != nil {
		return edgechat.Tokens{}, fmt.Errorf("cli: waiting for the sign-in: %w", err)
	}
	idToken, _ := tok.Extra("id_token").(string)
	if idToken == "" {
		return edgechat.Tokens{}, errors.New("cli: the provider returned no ID token")
	}
	t, err := edgechat.ExchangeOIDCDevice(ctx, server, o.Provider, idToken, o.Device)
	if err != nil {
		return edgechat.Tokens{}, fmt.Errorf("cli: exchanging the provider's token: %w", err)
	}
	return t, SaveSession(o.SessionFile, t)
}
