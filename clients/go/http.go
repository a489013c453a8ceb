package edgechat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// maxResponseBytes bounds what the SDK reads from one HTTP answer.
const maxResponseBytes = 32 << 20

// doJSON sends body (if not nil) as JSON and decodes a 2xx answer into out
// (if not nil); other statuses become *APIError.
// idempotencyKeyCtx carries the Idempotency-Key doJSONSent sends with a
// request (withIdempotencyKey).
type idempotencyKeyCtx struct{}

// withIdempotencyKey makes the requests made with ctx carry key as
// their Idempotency-Key: the same request sent again after a lost answer
// is then answered as the retry it is.
func withIdempotencyKey(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, idempotencyKeyCtx{}, key)
}

// hasIdempotencyKey reports whether the requests made with ctx carry an
// Idempotency-Key: sent again through any node, they are retries.
func hasIdempotencyKey(ctx context.Context) bool {
	key, _ := ctx.Value(idempotencyKeyCtx{}).(string)
	return key != ""
}

func doJSON(ctx context.Context, hc *http.Client, method, fullURL, token string, body, out any) error {
	_, err := doJSONSent(ctx, hc, method, fullURL, token, body, out)
	return err
}

// doJSONSent is doJSON that also reports whether the request may have
// reached the server: sent is false only when it provably did not (no
// connection could be made, nothing was written), so that it is safe
// to send it to another node even when it is not idempotent.
func doJSONSent(ctx context.Context, hc *http.Client, method, fullURL, token string, body, out any) (sent bool, err error) {
	if hc == nil {
		hc = http.DefaultClient
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return false, fmt.Errorf("edgechat: encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	var wrote atomic.Bool
	wd, _ := ctx.Value(watchdogCtx{}).(*watchdog)
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteHeaders:         func() { wrote.Store(true); wd.kick() },
		WroteRequest:         func(httptrace.WroteRequestInfo) { wd.kick() },
		GotFirstResponseByte: wd.kick,
	})
	req, err := http.NewRequestWithContext(ctx, method, fullURL, rd)
	if err != nil {
		return false, fmt.Errorf("edgechat: %s %s: %w", method, fullURL, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if key, _ := ctx.Value(idempotencyKeyCtx{}).(string); key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := hc.Do(req)
	if err != nil {
		// A dial error before anything was written: the server never saw
		// it. Anything else (a reset, a timeout after writing) may come
		// after the server acted.
		var oe *net.OpError
		sent = wrote.Load() || !errors.As(err, &oe) || oe.Op != "dial"
		return sent, fmt.Errorf("edgechat: %s %s: %w", method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	if wd != nil {
		resp.Body = &kickingBody{ReadCloser: resp.Body, wd: wd}
	}
	return true, readAnswer(resp, method, req.URL.Path, out)
}

// watchdogCtx carries the watchdog of a request (withWatchdog).
type watchdogCtx struct{}

// watchdog cancels a request that makes no progress (nothing written,
// no answer's first byte, nothing of its body read) for its limit: a
// node that vanished without a reset would otherwise hold the request
// for as long as the kernel keeps the connection. A slow answer that
// keeps coming is not cut. A nil watchdog does nothing.
type watchdog struct {
	t     *time.Timer
	limit time.Duration
}

// withWatchdog is ctx, cancelled once a request made with it makes no
// progress for limit; stop releases it.
func withWatchdog(ctx context.Context, limit time.Duration) (context.Context, func()) {
	ctx, cancel := context.WithCancel(ctx)
	wd := &watchdog{t: time.AfterFunc(limit, cancel), limit: limit}
	return context.WithValue(ctx, watchdogCtx{}, wd), func() { wd.t.Stop(); cancel() }
}

func (w *watchdog) kick() {
	if w != nil {
		w.t.Reset(w.limit)
	}
}

// kickingBody is an answer's body whose reads kick its watchdog.
type kickingBody struct {
	io.ReadCloser
	wd *watchdog
}

func (b *kickingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.wd.kick()
	}
	return n, err
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
	if hr, ok := out.(headerReader); ok {
		hr.readHeader(resp.Header)
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
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	return c.call(ctx, http.MethodGet, path, nil, out)
}

// call sends a request to the API with the client's current token.
//
// The API answers on every node, and the client knows several
// (Options.HTTPURL, HTTPURLs, or its ws URLs): it tries them in turn,
// starting with the one that last answered, and stays on the first that
// answers. A read (GET) moves on whenever it gets no answer (the node
// died; the MQTT connection is failing over too), a 502 or 504 (a
// gateway in front of the node says so) or a 503 (the node cannot
// reach its cluster's leader, so it cannot promise a read holds
// everything committed). So does a request with an Idempotency-Key
// (a token refresh): the key is decided in the cluster's replicated
// state, so the next node answers it as the retry it is. Any other
// request moves on only when it provably never reached the node (see
// doJSONSent): one whose answer was lost may have been carried out, and
// sending it again elsewhere could do it twice.
func (c *Client) call(ctx context.Context, method, path string, body, out any) error {
	ctx, done := c.untilClosed(ctx)
	defer done()
	tok, changes, err := c.tokenOf(ctx)
	if err == nil {
		err = c.callAs(ctx, tok, method, path, body, out)
	}
	if errors.Is(err, ErrUnauthorized) && c.passwordChangedSince(changes) {
		// The token was asked for before a password change, which
		// revoked it (a 401 is not carried out): again with the new one.
		if tok, _, err = c.tokenOf(ctx); err == nil {
			err = c.callAs(ctx, tok, method, path, body, out)
		}
	}
	return c.closedErr(err)
}

// untilClosed is ctx, also ended by Close: a call in flight (a node
// that does not answer) does not hold its caller past Close.
func (c *Client) untilClosed(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancel(ctx)
	if c.ctx == nil { // a Client that Dial did not make (tests)
		return ctx, cancel
	}
	stop := context.AfterFunc(c.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

// closedErr is ErrClosed for a call that failed once the client was
// closed (cut short by Close, or made after it), else err.
func (c *Client) closedErr(err error) error {
	if err != nil && c.ctx != nil && c.ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ErrClosed, err)
	}
	return err
}

// callAs is call with the access token tok.
func (c *Client) callAs(ctx context.Context, tok, method, path string, body, out any) error {
	k, err := callNodes(ctx, c.hc, c.httpURLs, int(c.httpCur.Load()), method, path, tok, body, out)
	if err == nil {
		c.httpCur.Store(int32(k))
	}
	return err
}

// callNodes sends one request to urls[start], then to the next ones in
// turn while call's rule (above) allows, and returns the index of the
// node that answered.
func callNodes(ctx context.Context, hc *http.Client, urls []string, start int, method, path, token string, body, out any) (int, error) {
	var lastErr error
	// A request that may move on (a read, one with an Idempotency-Key)
	// gives up on a node that makes no progress for readAttemptTimeout
	// (see watchdog): one that vanished without a reset (powered off, a
	// partition that drops packets) would otherwise hold it for as long
	// as the kernel keeps the connection, many minutes.
	mayMove := method == http.MethodGet || hasIdempotencyKey(ctx)
	for i := range urls {
		k := (start + i) % len(urls)
		actx, cancel := ctx, func() {}
		if mayMove {
			actx, cancel = withWatchdog(ctx, readAttemptTimeout)
		}
		sent, err := doJSONSent(actx, hc, method, urls[k]+path, token, body, out)
		cancel()
		if err == nil {
			return k, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			return k, err
		}
		var ae *APIError
		answered := errors.As(err, &ae)
		switch {
		case !sent: // it never reached the node: any request may go elsewhere
		case !mayMove:
			return k, err
		case !answered, gatewayOrUnavailable(ae.Status): // a read: no answer, or not now
		default:
			return k, err
		}
	}
	return start, lastErr
}

// readAttemptTimeout is how long an attempt of a request that may move
// to the next node (see callNodes) waits for progress: a node answers a
// read within its read barrier's wait (5 s) or says 503. A variable for
// the tests.
var readAttemptTimeout = 15 * time.Second

// gatewayOrUnavailable: a 503 (the node cannot reach its leader), or
// a 502 or 504, which a gateway in front of a node (a TLS terminator,
// an ingress per node) answers for a node that is gone or does not
// answer: for a read, no answer from that node.
func gatewayOrUnavailable(status int) bool {
	return status == http.StatusServiceUnavailable || status == http.StatusBadGateway || status == http.StatusGatewayTimeout
}

// History returns a page of the conversation with a user, newest first,
// of messages older than before (all when before is empty), and whether
// older ones exist. limit <= 0 lets the server choose.
func (c *Client) History(ctx context.Context, with string, before string, limit int) ([]Message, bool, error) {
	if !validUserID(with) {
		return nil, false, fmt.Errorf("%w: user ID %q", ErrInvalidArgument, with)
	}
	return c.history(ctx, url.Values{"with": {with}}, before, limit)
}

// GroupHistory returns a page of a group's messages, newest first, of
// messages older than before (all when before is empty), and whether
// older ones exist. limit <= 0 lets the server choose. A member reads the
// whole history of the group, also what was sent before they joined
// (sync holds a group's messages only from when I am a member: page back
// through GroupHistory for the rest); for anyone else the group does not
// exist (an error wrapping ErrNotFound).
func (c *Client) GroupHistory(ctx context.Context, gid string, before string, limit int) ([]Message, bool, error) {
	if !validGroupID(gid) {
		return nil, false, fmt.Errorf("%w: group ID %q", ErrInvalidArgument, gid)
	}
	return c.history(ctx, url.Values{"group": {gid}}, before, limit)
}

// history reads one page of GET /chat/history for the conversation q
// names.
func (c *Client) history(ctx context.Context, q url.Values, before string, limit int) ([]Message, bool, error) {
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

// conversationsMax is the most conversations GET /chat/conversations
// lists (its limit's maximum; its default is 200).
const conversationsMax = 1000

// Conversations lists my conversations with their last message and
// unread count, most recent activity first: all of them, paging the
// list 1000 at a time (a server older than the list's nextCursor lists
// 1000 at most: the least recent are left out, and logged; so are those
// past a page that a node older than the cursor refused, as one may
// during a rolling upgrade).
func (c *Client) Conversations(ctx context.Context) ([]Conversation, error) {
	var out []Conversation
	cursor := ""
	for {
		var r struct {
			Conversations []Conversation `json:"conversations"`
			HasMore       bool           `json:"hasMore"`
			NextCursor    string         `json:"nextCursor"`
		}
		q := url.Values{"limit": {strconv.Itoa(conversationsMax)}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		if err := c.get(ctx, "/chat/conversations", q, &r); err != nil {
			var ae *APIError
			if cursor != "" && errors.As(err, &ae) && ae.Status == http.StatusBadRequest {
				// Only the cursor differs from the first page's request:
				// a node older than it (a rolling upgrade) refuses it.
				c.log.Warn("a node refused the conversation list's cursor; the least recent are left out", "listed", len(out), "err", err)
				return out, nil
			}
			return nil, err
		}
		out = append(out, r.Conversations...)
		if !r.HasMore {
			return out, nil
		}
		if r.NextCursor == "" || r.NextCursor == cursor {
			c.log.Warn("more conversations than the server lists; the least recent are left out", "listed", len(out))
			return out, nil
		}
		cursor = r.NextCursor
	}
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

// headerReader is an answer that also wants the response's header.
type headerReader interface{ readHeader(http.Header) }

// syncPage is one answer of /chat/sync.
type syncPage struct {
	Messages []Message `json:"messages"`
	Cursor   string    `json:"cursor"`
	HasMore  bool      `json:"hasMore"`
	date     time.Time // the answering node's clock (Date), if it said
}

func (p *syncPage) readHeader(h http.Header) {
	if d, err := http.ParseTime(h.Get("Date")); err == nil {
		p.date = d
	}
}

// syncEndWithinMax is the largest within GET /chat/sync/end takes
// (seconds: a week).
const syncEndWithinMax = 7 * 24 * 3600

// syncEnd is the answer of /chat/sync/end.
type syncEnd struct {
	Cursor string    `json:"cursor"`
	date   time.Time // the answering node's clock (Date), if it said
}

func (p *syncEnd) readHeader(h http.Header) {
	if d, err := http.ParseTime(h.Get("Date")); err == nil {
		p.date = d
	}
}

// fetchSyncEnd asks from where a sync returns what was created since
// after (GET /chat/sync/end?within=). The server counts within back from
// its own clock: when it is ahead of this machine's, the window is
// widened by the difference and asked again, so that after holds by
// the earlier of the two clocks. ok is false when the server is older
// than that call (404), or when the window is longer than the call
// allows (a week: this machine's clock is that far behind the server's):
// the caller pages from the beginning.
func (c *Client) fetchSyncEnd(ctx context.Context, after time.Time) (cursor string, ok bool, err error) {
	ask := func(within time.Duration) (syncEnd, bool, error) {
		secs := int64((within + time.Second - 1) / time.Second)
		if secs > syncEndWithinMax {
			return syncEnd{}, false, nil // refused (400) however often asked
		}
		q := url.Values{"within": {strconv.FormatInt(max(secs, 1), 10)}}
		var p syncEnd
		err := c.get(ctx, "/chat/sync/end", q, &p)
		if ae := (*APIError)(nil); errors.As(err, &ae) && ae.Status == http.StatusNotFound {
			return p, false, nil
		}
		return p, err == nil && p.Cursor != "", err
	}
	p, ok, err := ask(time.Since(after))
	if !ok || err != nil {
		return "", ok, err
	}
	// Date has whole seconds: ahead by more than one is another clock.
	if ahead := time.Until(p.date); !p.date.IsZero() && ahead > time.Second {
		if p, ok, err = ask(time.Since(after) + ahead); !ok || err != nil {
			return "", ok, err
		}
	}
	return p.Cursor, true, nil
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
