package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/edgechat/edgechat/internal/ratelimit"
	"github.com/edgechat/edgechat/services/auth"
)

// TokenSource provides an access token for each of a set of users,
// creating the accounts when needed.
type TokenSource interface {
	Tokens(ctx context.Context, users []string, progress func(done int)) (map[string]string, error)
}

// Accounts registers bench users over HTTP and gets their tokens either
// by logging in once each or, much faster for thousands of users, by
// minting them in-process with the node's signing key (DataDir/keys).
type Accounts struct {
	HTTPURL  string
	Password string
	// DataDir, when set, is a node's data directory: tokens are minted
	// with its signing key instead of logging in over HTTP. They carry
	// the claims of a plain user (no admin role), which is what bench
	// users are; `edgechat token` asks the node for the role instead, one
	// admin request per user, too slow for thousands.
	DataDir string
	TTL     time.Duration
	// Concurrency of registrations and logins (argon2id makes each one
	// cost tens of milliseconds of server CPU); default 4.
	Concurrency int
	Client      *http.Client
}

var _ TokenSource = (*Accounts)(nil)

// ErrHTTP wraps an unexpected HTTP answer.
var ErrHTTP = errors.New("unexpected HTTP response")

// Tokens implements TokenSource. Users that already exist (from an
// earlier run with the same password) are reused.
func (a *Accounts) Tokens(ctx context.Context, users []string, progress func(done int)) (map[string]string, error) {
	conc := a.Concurrency
	if conc <= 0 {
		conc = 4
	}
	var mu sync.Mutex
	out := make(map[string]string, len(users))
	var done atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(conc)
	for _, u := range users {
		g.Go(func() error {
			if err := a.register(gctx, u); err != nil {
				return err
			}
			tok, err := a.token(gctx, u)
			if err != nil {
				return err
			}
			mu.Lock()
			out[u] = tok
			mu.Unlock()
			if progress != nil {
				progress(int(done.Add(1)))
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

func (a *Accounts) register(ctx context.Context, user string) error {
	status, body, err := a.post(ctx, "/auth/register", map[string]string{"username": user, "password": a.Password})
	if err != nil {
		return fmt.Errorf("registering %s: %w", user, err)
	}
	if status == http.StatusCreated || status == http.StatusConflict {
		return nil
	}
	return fmt.Errorf("registering %s: %w: %d %s", user, ErrHTTP, status, strings.TrimSpace(string(body)))
}

func (a *Accounts) token(ctx context.Context, user string) (string, error) {
	if a.DataDir != "" {
		ttl := a.TTL
		if ttl <= 0 {
			ttl = 2 * time.Hour
		}
		tok, err := auth.MintFromKeyDir(filepath.Join(a.DataDir, "keys"), auth.DefaultIssuer, auth.Account{UserID: user}, ttl)
		if err != nil {
			return "", fmt.Errorf("minting a token for %s from %s: %w", user, a.DataDir, err)
		}
		return tok, nil
	}
	status, body, err := a.post(ctx, "/auth/login", map[string]string{"username": user, "password": a.Password})
	if err != nil {
		return "", fmt.Errorf("logging in %s: %w", user, err)
	}
	if status != http.StatusOK {
		return "", fmt.Errorf("logging in %s: %w: %d %s", user, ErrHTTP, status, strings.TrimSpace(string(body)))
	}
	var tok struct {
		AccessToken string `json:"accessToken"`
	}
	if err := json.Unmarshal(body, &tok); err != nil || tok.AccessToken == "" {
		return "", fmt.Errorf("logging in %s: %w: no accessToken in %q", user, ErrHTTP, body)
	}
	return tok.AccessToken, nil
}

// post sends a JSON body and returns the status and body, waiting out
// 429s (Retry-After) a few times.
func (a *Accounts) post(ctx context.Context, path string, v any) (int, []byte, error) {
	hc := a.Client
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	payload, err := json.Marshal(v)
	if err != nil {
		return 0, nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(a.HTTPURL, "/")+path, bytes.NewReader(payload))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := ratelimit.DoHTTP(hc, req, 2*time.Minute) // waits out 429s (Retry-After)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, nil, err
	}
	return resp.StatusCode, body, nil
}

// StaticTokens is a TokenSource with tokens known in advance (tests).
type StaticTokens map[string]string

var _ TokenSource = StaticTokens(nil)

// Tokens implements TokenSource.
func (s StaticTokens) Tokens(_ context.Context, users []string, progress func(int)) (map[string]string, error) {
	out := make(map[string]string, len(users))
	for i, u := range users {
		t, ok := s[u]
		if !ok {
			return nil, fmt.Errorf("no token for user %s", u)
		}
		out[u] = t
		if progress != nil {
			progress(i + 1)
		}
	}
	return out, nil
}

// AnonTokens gives every user an empty token: the client then connects
// with a user name and no password, which a broker that allows anonymous
// clients accepts.
type AnonTokens struct{}

var _ TokenSource = AnonTokens{}

// Tokens implements TokenSource.
func (AnonTokens) Tokens(_ context.Context, users []string, progress func(int)) (map[string]string, error) {
	out := make(map[string]string, len(users))
	for _, u := range users {
		out[u] = ""
	}
	if progress != nil {
		progress(len(users))
	}
	return out, nil
}
