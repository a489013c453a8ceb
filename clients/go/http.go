package edgechat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// maxResponseBytes bounds what the SDK reads from one HTTP answer.
const maxResponseBytes = 32 << 20

// doJSON sends body (if not nil) as JSON and decodes a 2xx answer into out
// (if not nil); other statuses become *APIError.
func doJSON(ctx context.Context, hc *http.Client, method, fullURL, token string, body, out any) error {
	if hc == nil {
		hc = http.DefaultClient
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("edgechat: encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, fullURL, rd)
	if err != nil {
		return fmt.Errorf("edgechat: %s %s: %w", method, fullURL, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("edgechat: %s %s: %w", method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	return readAnswer(resp, method, req.URL.Path, out)
}

// readAnswer decodes a 2xx answer into out (if not nil) and turns any
// other status into an *APIError; it is shared by the JSON calls and the
// media transfers, which build their requests differently.
func readAnswer(resp *http.Response, method, path string, out any) error {
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return fmt.Errorf("edgechat: %s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("edgechat: %s %s: %w", method, path, apiError(resp, data))
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("edgechat: %s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// apiError builds the *APIError of a non-2xx answer whose body is data.
func apiError(resp *http.Response, data []byte) *APIError {
	ae := &APIError{Status: resp.StatusCode}
	var eb struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(data, &eb) == nil {
		ae.Code, ae.Message = eb.Error.Code, eb.Error.Message
	}
	// Retry-After is in seconds on every answer of the API that has it
	// (429 and 503); the HTTP-date form is not used.
	if secs, err := strconv.Atoi(strings.TrimSpace(resp.Header.Get("Retry-After"))); err == nil && secs >= 0 {
		ae.RetryAfter = time.Duration(secs) * time.Second
	}
	return ae
}

// get calls the API with the client's current token.
func (c *Client) get(ctx context.Context, path string, q url.Values, out any) error {
	tok, err := c.token(ctx)
	if err != nil {
		return err
	}
	// The API answers on every node: when the current node cannot be
	// reached (it died; the MQTT connection is failing over too), or
	// answers 503 (it cannot reach its cluster's leader, so it cannot
	// promise a read holds everything committed), try the others in turn
	// and stay on the first that answers.
	var lastErr error
	start := int(c.httpCur.Load())
	for i := range c.httpURLs {
		k := (start + i) % len(c.httpURLs)
		u := c.httpURLs[k] + path
		if len(q) > 0 {
			u += "?" + q.Encode()
		}
		err := doJSON(ctx, c.hc, http.MethodGet, u, tok, nil, out)
		var ae *APIError
		if errors.As(err, &ae) && ae.Status == http.StatusServiceUnavailable && ctx.Err() == nil {
			lastErr = err
			continue
		}
		if err == nil || ae != nil || ctx.Err() != nil {
			if err == nil {
				c.httpCur.Store(int32(k))
			}
			return err
		}
		lastErr = err
	}
	return lastErr
}

// History returns a page of the conversation with a user, newest first,
// of messages older than before (all when before is empty), and whether
// older ones exist. limit <= 0 lets the server choose.
func (c *Client) History(ctx context.Context, with string, before string, limit int) ([]Message, bool, error) {
	if !validUserID(with) {
		return nil, false, fmt.Errorf("%w: user ID %q", ErrInvalidArgument, with)
	}
	q := url.Values{"with": {with}}
	if before != "" {
		q.Set("before", before)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var r struct {
		Messages []Message `json:"messages"`
		HasMore  bool      `json:"hasMore"`
	}
	if err := c.get(ctx, "/chat/history", q, &r); err != nil {
		return nil, false, err
	}
	return r.Messages, r.HasMore, nil
}

// Conversations lists my conversations with their last message and
// unread count.
func (c *Client) Conversations(ctx context.Context) ([]Conversation, error) {
	var r struct {
		Conversations []Conversation `json:"conversations"`
	}
	if err := c.get(ctx, "/chat/conversations", nil, &r); err != nil {
		return nil, err
	}
	return r.Conversations, nil
}

// Presence asks the server for a user's status.
func (c *Client) Presence(ctx context.Context, uid string) (Presence, error) {
	if !validUserID(uid) {
		return Presence{}, fmt.Errorf("%w: user ID %q", ErrInvalidArgument, uid)
	}
	var p Presence
	err := c.get(ctx, "/presence/"+url.PathEscape(uid), nil, &p)
	return p, err
}

// Profile returns a user's public profile.
func (c *Client) Profile(ctx context.Context, uid string) (Profile, error) {
	if !validUserID(uid) {
		return Profile{}, fmt.Errorf("%w: user ID %q", ErrInvalidArgument, uid)
	}
	var p Profile
	err := c.get(ctx, "/user/"+url.PathEscape(uid), nil, &p)
	return p, err
}

// syncPage is one answer of /chat/sync.
type syncPage struct {
	Messages []Message `json:"messages"`
	Cursor   string    `json:"cursor"`
	HasMore  bool      `json:"hasMore"`
}

func (c *Client) fetchSync(ctx context.Context, since string, limit int) (syncPage, error) {
	q := url.Values{"limit": {strconv.Itoa(limit)}}
	if since != "" {
		q.Set("since", since)
	}
	var p syncPage
	err := c.get(ctx, "/chat/sync", q, &p)
	return p, err
}
