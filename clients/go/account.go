package edgechat

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"time"
)

// Deletion is the server's answer to DeleteAccount: when the account's
// data is erased and what stays.
type Deletion struct {
	UserID   string    `json:"userId"`
	DeleteAt time.Time `json:"deleteAt"`
	Kept     []Kept    `json:"kept"`
}

// Kept is one thing that stays after an account is erased.
type Kept struct {
	What   string `json:"what"`
	Detail string `json:"detail"`
}

// DeleteAccount deletes the signed-in user's account (DELETE /user/me),
// confirmed with the password. It is final: the account is disabled at
// once (this client's connection is closed by the server and its token
// refused) and its data erased after the server's grace period. A wrong
// password is an *APIError with status 403.
func (c *Client) DeleteAccount(ctx context.Context, password string) (Deletion, error) {
	var d Deletion
	if err := c.call(ctx, http.MethodDelete, "/user/me", map[string]string{"password": password}, &d); err != nil {
		return Deletion{}, fmt.Errorf("edgechat: delete account: %w", err)
	}
	return d, nil
}

// PasswordChange is the server's answer to ChangePassword: the tokens of
// this session, and how many sessions ended.
type PasswordChange struct {
	Tokens
	Revoked int `json:"revoked"`
}

// ChangePassword changes the signed-in user's password (POST
// /auth/password), proven with the current one. The server signs the
// user out everywhere else in the same commit: every other device and
// browser must sign in again with the new password. This client goes
// on: the server closes its connection too, and it reconnects with the
// new tokens (its token calls, the reconnection's among them, wait for
// the answer meanwhile; a connection attempt that had its token before
// the change began is refused, and tried again, without OnSignedOut;
// an API call refused so (401) is made again with the new token),
// which it refreshes from then on (telling onRefresh, which
// may be nil, each rotated pair, as RefreshingTokenSource does). An app
// that keeps tokens must save the returned ones. A wrong current
// password is an *APIError with status 403, a new password the server
// refuses one with status 400.
func (c *Client) ChangePassword(ctx context.Context, currentPassword, newPassword string, onRefresh func(Tokens)) (PasswordChange, error) {
	// The server closes this client's connection when the change
	// commits, maybe before its answer arrives: hold token calls (the
	// reconnection's among them) until the new tokens are in place, so
	// that it does not present revoked ones and count as signed out.
	var tok string
	gate := make(chan struct{})
	for {
		var err error
		if tok, err = c.token(ctx); err != nil { // waits for a change under way
			return PasswordChange{}, err
		}
		c.sourceMu.Lock()
		if c.sourceGate == nil {
			c.sourceGate = gate
			c.pwChanges++ // a token asked for before may be revoked
			c.sourceMu.Unlock()
			break
		}
		c.sourceMu.Unlock()
	}
	var source TokenSource
	defer func() {
		c.sourceMu.Lock()
		if source != nil {
			c.source = source
		}
		c.sourceGate = nil
		c.sourceMu.Unlock()
		close(gate)
	}()
	start := time.Now()
	var pc PasswordChange
	body := map[string]string{"currentPassword": currentPassword, "newPassword": newPassword}
	if err := c.callAs(ctx, tok, http.MethodPost, "/auth/password", body, &pc); err != nil {
		return PasswordChange{}, fmt.Errorf("edgechat: change password: %w", err)
	}
	if pc.AccessToken == "" {
		return PasswordChange{}, fmt.Errorf("%w: server returned no access token", ErrBadToken)
	}
	if pc.ExpiresIn > 0 {
		pc.Expiry = start.Add(time.Duration(pc.ExpiresIn) * time.Second)
	}
	// The node that answered first, then the others.
	k := int(c.httpCur.Load())
	source = RefreshingTokenSourceURLs(append(slices.Clone(c.httpURLs[k:]), c.httpURLs[:k]...), pc.Tokens, onRefresh)
	return pc, nil
}

// Session is one sign-in of the user (a device or browser), as Sessions
// lists it.
type Session struct {
	ID         string     `json:"id"`
	Device     string     `json:"device,omitempty"` // what LoginDevice named
	Agent      string     `json:"agent,omitempty"`  // the sign-in's User-Agent
	CreatedAt  *time.Time `json:"createdAt,omitempty"`
	LastUsedAt time.Time  `json:"lastUsedAt"` // signed in or refreshed
	ExpiresAt  time.Time  `json:"expiresAt"`
	Current    bool       `json:"current"` // this client's session
}

// Sessions lists where the user is signed in (GET /auth/sessions), most
// recently used first.
func (c *Client) Sessions(ctx context.Context) ([]Session, error) {
	var out struct {
		Sessions []Session `json:"sessions"`
	}
	if err := c.call(ctx, http.MethodGet, "/auth/sessions", nil, &out); err != nil {
		return nil, fmt.Errorf("edgechat: sessions: %w", err)
	}
	return out.Sessions, nil
}

// EndSession signs one of the user's sessions out at once (DELETE
// /auth/sessions/{id}): its tokens are refused and its connections
// closed on every node. An ID that is not one of the user's live
// sessions is an *APIError with status 404.
func (c *Client) EndSession(ctx context.Context, id string) error {
	if err := c.call(ctx, http.MethodDelete, "/auth/sessions/"+url.PathEscape(id), nil, nil); err != nil {
		return fmt.Errorf("edgechat: end session: %w", err)
	}
	return nil
}
