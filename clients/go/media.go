package edgechat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Media travels in two steps (see "Media" in docs/protocol.md): the file
// is uploaded over HTTP and processed by the server, which tells the
// uploader the outcome on user/{me}/events; then a media message names
// the ready upload. Downloads may be redirected to an object store.

const (
	// defaultMediaPoll is how often a waiting UploadMedia asks for the
	// upload's status, in case the event was missed (it is not stored:
	// a connection that was down when it was published never gets it).
	defaultMediaPoll = 500 * time.Millisecond
	// maxMediaIDLen mirrors the server's limit on a media ID.
	maxMediaIDLen = 128
	// maxMediaRedirects bounds the redirects a download follows.
	maxMediaRedirects = 5
	// maxMediaEventsKept bounds what one waiting upload remembers of
	// other uploads' events (the user's other devices upload too).
	maxMediaEventsKept = 1024
)

// Upload statuses of MediaStatus.Status.
const (
	MediaStatusUploading  = "uploading"
	MediaStatusProcessing = "processing"
	MediaStatusReady      = "ready"
	MediaStatusRejected   = "rejected"
)

// Event types on user/{me}/events about my uploads.
const (
	eventMediaReady    = "mediaReady"
	eventMediaRejected = "mediaRejected"
)

// MediaRejectedError says that the server refused an upload after
// receiving it: its content is not allowed or could not be processed.
// Reason is one of the server's codes: type_not_allowed, executable,
// too_many_pixels, too_many_frames, too_many_scans, infected, macro,
// corrupt, processing_failed, too_large. Retrying the same file does not help.
type MediaRejectedError struct {
	MediaID string
	Reason  string
}

func (e *MediaRejectedError) Error() string {
	return fmt.Sprintf("edgechat: media %s rejected: %s", e.MediaID, e.Reason)
}

// Unwrap makes a rejection an ErrRefused, like the server's other refusals.
func (e *MediaRejectedError) Unwrap() error { return ErrRefused }

// MediaStatus is what the server says about one of my uploads (or a media
// I may read): the processed file's description once Status is
// MediaStatusReady, the reason once it is MediaStatusRejected.
type MediaStatus struct {
	MediaInfo
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
}

// UploadMedia uploads size bytes of r as a file named name (a hint for
// the server and for the people it is sent to; contentType too, the
// server reads the real type from the bytes; "" sends
// application/octet-stream), then waits until the server has processed
// it, and returns its description, ready for SendMedia.
//
// r is streamed, never held in memory: the server refuses what is over
// its limit while it arrives, and files may be large. Only the first size
// bytes of r are sent; a reader that ends sooner fails the upload with
// ErrInvalidArgument. An upload cannot be replayed from r, so unlike the
// other API calls it does not move to another node when this one is
// unreachable.
//
// progress, if not nil, is called on the goroutine that sends the body,
// in order, each time more of r has been handed to the connection, with
// sent growing up to total (= size); it must return quickly. It is never
// called after UploadMedia returns.
//
// Errors: ErrMediaTooLarge (over the server's size limit), ErrMediaQuota
// (the daily quota is spent; the *APIError's RetryAfter says when it
// frees up), *MediaRejectedError (processing refused the content). When
// ctx ends after the upload was accepted, the returned MediaInfo carries
// the upload's ID (see MediaStatus) along with the error.
//
// The outcome comes as an event on user/{me}/events; while the
// connection is down, or if the event was missed, the status is polled
// every half second instead.
func (c *Client) UploadMedia(ctx context.Context, r io.Reader, size int64, name, contentType string, progress func(sent, total int64)) (MediaInfo, error) {
	if r == nil || size <= 0 {
		return MediaInfo{}, fmt.Errorf("%w: an upload needs a reader and its size (> 0)", ErrInvalidArgument)
	}
	// Listen before uploading: the outcome can be published before the
	// answer that names the upload reaches us.
	w := c.watchMedia()
	defer c.unwatchMedia(w)
	pctx, done := c.untilClosed(ctx)
	id, err := c.postMedia(pctx, r, size, name, contentType, progress)
	done()
	if err != nil {
		return MediaInfo{}, c.closedErr(err)
	}
	return c.awaitMedia(ctx, w, id)
}

// postMedia streams the body to POST /media and returns the upload's ID.
func (c *Client) postMedia(ctx context.Context, r io.Reader, size int64, name, contentType string, progress func(sent, total int64)) (string, error) {
	tok, err := c.token(ctx)
	if err != nil {
		return "", err
	}
	u := c.HTTPURL() + "/media"
	if name != "" {
		u += "?" + url.Values{"name": {name}}.Encode()
	}
	body := &uploadBody{r: r, total: size, progress: progress}
	defer body.stop()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, body)
	if err != nil {
		return "", fmt.Errorf("edgechat: upload %q: %w", name, err)
	}
	// The server needs the length up front (it refuses a raw body
	// without one, and refuses too large a file before reading it).
	req.ContentLength = size
	if contentType == "" {
		contentType = "application/octet-stream"
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := c.hc.Do(req)
	if err != nil {
		if sent := body.count(); sent < size && ctx.Err() == nil && body.eof() {
			return "", fmt.Errorf("%w: the reader ended after %d of %d bytes", ErrInvalidArgument, sent, size)
		}
		return "", fmt.Errorf("edgechat: upload %q: %w", name, err)
	}
	defer resp.Body.Close()
	var ans struct {
		MediaID string `json:"mediaId"`
		Status  string `json:"status"`
	}
	if err := readAnswer(resp, http.MethodPost, "/media", &ans); err != nil {
		// A proxy in front of the node may answer 413 in its own words.
		var ae *APIError
		if errors.As(err, &ae) && ae.Status == http.StatusRequestEntityTooLarge && !errors.Is(err, ErrMediaTooLarge) {
			return "", fmt.Errorf("%w: %w", ErrMediaTooLarge, err)
		}
		return "", err
	}
	if ans.MediaID == "" {
		return "", fmt.Errorf("edgechat: upload %q: the server answered no mediaId", name)
	}
	return ans.MediaID, nil
}

// uploadBody is the request body of an upload: it counts what the
// transport reads for the progress callback, stops at total, and stops
// reading r once the upload is over, because the transport may still be
// reading the body after Do returns (when the server answers early) and r
// belongs to the caller again by then.
type uploadBody struct {
	mu       sync.Mutex // held during every read of r, so that stop waits for one in flight
	r        io.Reader
	total    int64
	sent     int64
	ended    bool // r reported io.EOF
	stopped  bool
	progress func(sent, total int64)
}

var errUploadOver = errors.New("edgechat: upload over")

func (b *uploadBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return 0, errUploadOver
	}
	if b.sent >= b.total {
		return 0, io.EOF
	}
	if rest := b.total - b.sent; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := b.r.Read(p)
	if n > 0 {
		b.sent += int64(n)
		if b.progress != nil {
			b.progress(b.sent, b.total)
		}
	}
	if errors.Is(err, io.EOF) {
		b.ended = true
	}
	return n, err
}

func (b *uploadBody) stop() {
	b.mu.Lock()
	b.stopped = true
	b.mu.Unlock()
}

func (b *uploadBody) count() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sent
}

func (b *uploadBody) eof() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ended
}

// mediaEvent is a mediaReady or mediaRejected event.
type mediaEvent struct {
	Type    string     `json:"type"`
	MediaID string     `json:"mediaId"`
	Media   *MediaInfo `json:"media"`
	Reason  string     `json:"reason"`
}

// mediaWatch collects the media events that arrive while one
// UploadMedia runs, the ones before its ID is known included.
type mediaWatch struct {
	mu     sync.Mutex
	events map[string]mediaEvent
	notify chan struct{} // capacity 1: something was added
}

func (w *mediaWatch) add(ev mediaEvent) {
	w.mu.Lock()
	if len(w.events) < maxMediaEventsKept {
		w.events[ev.MediaID] = ev
	}
	w.mu.Unlock()
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

func (w *mediaWatch) get(id string) (mediaEvent, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ev, ok := w.events[id]
	return ev, ok
}

func (c *Client) watchMedia() *mediaWatch {
	w := &mediaWatch{events: map[string]mediaEvent{}, notify: make(chan struct{}, 1)}
	c.mu.Lock()
	c.uploads[w] = struct{}{}
	c.mu.Unlock()
	return w
}

func (c *Client) unwatchMedia(w *mediaWatch) {
	c.mu.Lock()
	delete(c.uploads, w)
	c.mu.Unlock()
}

// noteMediaEvent hands a media event on user/{me}/events to the waiting
// uploads. It runs on paho's router and must not block.
func (c *Client) noteMediaEvent(payload []byte) {
	c.mu.Lock()
	waiting := len(c.uploads) > 0
	c.mu.Unlock()
	if !waiting {
		return
	}
	var ev mediaEvent
	if json.Unmarshal(payload, &ev) != nil || ev.MediaID == "" || (ev.Type != eventMediaReady && ev.Type != eventMediaRejected) {
		return
	}
	c.mu.Lock()
	for w := range c.uploads {
		w.add(ev)
	}
	c.mu.Unlock()
}

// awaitMedia waits for the outcome of upload id: its event, or a status
// poll that finds it done.
func (c *Client) awaitMedia(ctx context.Context, w *mediaWatch, id string) (MediaInfo, error) {
	t := time.NewTicker(c.mediaPoll)
	defer t.Stop()
	poll := false
	for {
		if ev, ok := w.get(id); ok {
			switch {
			case ev.Type == eventMediaRejected:
				return MediaInfo{}, &MediaRejectedError{MediaID: id, Reason: ev.Reason}
			case ev.Media != nil:
				info := *ev.Media
				info.ID = id
				return info, nil
			}
			poll = true // a ready event without the description: ask for it
		}
		if poll {
			poll = false
			st, err := c.MediaStatus(ctx, id)
			switch {
			case err == nil && st.Status == MediaStatusReady:
				st.MediaInfo.ID = id
				return st.MediaInfo, nil
			case err == nil && st.Status == MediaStatusRejected:
				return MediaInfo{}, &MediaRejectedError{MediaID: id, Reason: st.Reason}
			case errors.Is(err, ErrUnauthorized), errors.Is(err, ErrNotFound):
				return MediaInfo{ID: id}, fmt.Errorf("edgechat: upload %s: %w", id, err)
			case err != nil && ctx.Err() == nil:
				c.log.Debug("media status poll failed", "media", id, "err", err)
			}
		}
		select {
		case <-w.notify:
		case <-t.C:
			poll = true
		case <-ctx.Done():
			return MediaInfo{ID: id}, fmt.Errorf("edgechat: upload %s still processing: %w", id, ctx.Err())
		case <-c.ctx.Done():
			return MediaInfo{ID: id}, ErrClosed
		}
	}
}

// MediaStatus asks the server about an upload (GET /media/{id}/info): a
// way to learn the outcome of an upload whose UploadMedia was cut short.
// Others' media answer only once ready and sent to me; anything else is
// ErrNotFound.
func (c *Client) MediaStatus(ctx context.Context, id string) (MediaStatus, error) {
	if !validMediaID(id) {
		return MediaStatus{}, fmt.Errorf("%w: media ID %q", ErrInvalidArgument, id)
	}
	var st MediaStatus
	err := c.get(ctx, "/media/"+url.PathEscape(id)+"/info", nil, &st)
	return st, err
}

// SendMedia sends an upload to a user as a media message, with an
// optional caption; media is what UploadMedia returned (only its ID is
// sent: the server fills in the description from the upload). It behaves
// like SendMessage, whose CID retry rules apply; an ID that is not a
// ready upload of mine is refused with a *PublishError wrapping
// ErrInvalidMessage.
func (c *Client) SendMedia(ctx context.Context, to string, media MediaInfo, caption string) (Message, error) {
	return c.SendMessage(ctx, Message{To: to, Type: "media", Body: caption, Media: &media})
}

// DownloadMedia writes a media file (or, with preview, its preview
// image) to w and returns how many bytes it wrote. The server may
// redirect to an object store's presigned URL: redirects are followed,
// and the access token goes only to the API's own origin, never to
// another host. Errors are *APIError (ErrNotFound for a media I may not
// read, or one without a preview); after a failure mid-way w holds a
// partial file.
func (c *Client) DownloadMedia(ctx context.Context, id string, w io.Writer, preview bool) (int64, error) {
	if !validMediaID(id) {
		return 0, fmt.Errorf("%w: media ID %q", ErrInvalidArgument, id)
	}
	ctx, done := c.untilClosed(ctx)
	defer done()
	n, err := c.download(ctx, id, w, preview)
	return n, c.closedErr(err)
}

func (c *Client) download(ctx context.Context, id string, w io.Writer, preview bool) (int64, error) {
	tok, err := c.token(ctx)
	if err != nil {
		return 0, err
	}
	path := "/media/" + url.PathEscape(id)
	if preview {
		path += "/preview"
	}
	origin, err := url.Parse(c.HTTPURL() + path)
	if err != nil {
		return 0, fmt.Errorf("edgechat: download %s: %w", id, err)
	}
	// A copy of the client that hands redirects back: the standard
	// policy keeps Authorization for another port of the same host, and
	// an object store must not see the token at all.
	hc := *c.hc
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	target := origin
	for hops := 0; ; hops++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, target.String(), nil)
		if err != nil {
			return 0, fmt.Errorf("edgechat: download %s: %w", id, err)
		}
		if sameOrigin(target, origin) {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, fmt.Errorf("edgechat: download %s: %w", id, redactURLError(err))
		}
		switch resp.StatusCode {
		case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
			loc := resp.Header.Get("Location")
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			if hops >= maxMediaRedirects {
				return 0, fmt.Errorf("edgechat: download %s: more than %d redirects", id, maxMediaRedirects)
			}
			next, err := target.Parse(loc)
			if loc == "" || err != nil || (next.Scheme != "http" && next.Scheme != "https") {
				return 0, fmt.Errorf("edgechat: download %s: bad redirect (HTTP %d)", id, resp.StatusCode)
			}
			target = next
			continue
		case http.StatusOK:
			n, err := io.Copy(w, resp.Body)
			resp.Body.Close()
			if err != nil {
				return n, fmt.Errorf("edgechat: download %s: %w", id, redactURLError(err))
			}
			return n, nil
		}
		err = readAnswer(resp, http.MethodGet, req.URL.Path, nil)
		resp.Body.Close()
		if err == nil { // another 2xx (206 and the like), which a plain GET should not get
			err = fmt.Errorf("edgechat: download %s: unexpected HTTP %d", id, resp.StatusCode)
		}
		return 0, err
	}
}

// sameOrigin reports whether a and b have the same scheme, host and port.
func sameOrigin(a, b *url.URL) bool {
	return strings.EqualFold(a.Scheme, b.Scheme) && strings.EqualFold(a.Hostname(), b.Hostname()) && effectivePort(a) == effectivePort(b)
}

func effectivePort(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if strings.EqualFold(u.Scheme, "https") {
		return "443"
	}
	return "80"
}

// redactURLError drops the URL from a transport error: after a redirect
// it is a presigned URL, whose signature must not end up in logs.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// validMediaID accepts what the server may have issued: printable ASCII
// without a slash, at most maxMediaIDLen bytes.
func validMediaID(id string) bool {
	if id == "" || len(id) > maxMediaIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] >= 0x7f || id[i] == '/' {
			return false
		}
	}
	return true
}
