package edgechat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session"

	"github.com/edgechat/edgechat/internal/wire"
)

// Send sends a text message to a user. See SendMessage.
func (c *Client) Send(ctx context.Context, to, text string) (Message, error) {
	return c.SendMessage(ctx, Message{To: to, Type: "text", Body: text})
}

// SendGroup sends a text message to a group I am a member of. See
// SendMessage.
func (c *Client) SendGroup(ctx context.Context, gid, text string) (Message, error) {
	return c.SendMessage(ctx, Message{Group: gid, Type: "text", Body: text})
}

// SendMessage sends m to the user m.To, or to the group m.Group (exactly
// one of the two; a group message is published on group/{gid}/newMessage,
// which the server refuses unless I am a member). Type defaults to
// "text"; Mentions may name users beyond those spelled @name in Body,
// whom the server adds; CID is generated when empty; set it to retry an earlier call
// whose outcome is unknown. A CID is mine across direct and group
// messages alike: reusing one for the same conversation returns the
// message first stored with it; for another conversation (recipient or
// group) the server refuses it (a *PublishError, 0x99) and stores
// nothing.
//
// It publishes at QoS 1 and retries with the same CID, across dropped
// connections and server restarts, until the server acknowledges it (a
// PUBACK means the message is durably committed; the server stores a CID
// once however often it is retried) or ctx ends. A refusal (invalid
// message, not allowed, unknown recipient) returns a *PublishError at once.
// A node that answers that it could not commit (0x83) is left for another
// of Options.URLs, when there are several, before the next attempt.
//
// On success it returns the stored message: the server's copy, matched by
// CID on my own topic (for a group message, on the group's topic, which
// the client follows for each of my groups), with ID and Time set. A CID
// stored before (by an earlier call or client) is acknowledged without
// being delivered again: the original is then read through the API (POST
// /chat/messages answers a stored CID with it, storing nothing). If that
// copy has not arrived within Options.EchoWait (or before ctx ends) after
// the acknowledgement, it returns the message as sent with an empty ID
// and a nil error: the message is committed regardless, and its stored
// copy will still reach OnMessage (live or through the next catch-up
// sync).
//
// When ctx ends first, the error wraps ctx.Err() and the message may or
// may not have been stored; call again with the same CID to find out
// without risking a duplicate.
func (c *Client) SendMessage(ctx context.Context, m Message) (Message, error) {
	var topic string
	switch {
	case m.To != "" && m.Group != "":
		return Message{}, fmt.Errorf("%w: a message goes to a user or to a group, not both", ErrInvalidArgument)
	case m.Group != "":
		if !validGroupID(m.Group) {
			return Message{}, fmt.Errorf("%w: %q is not a group ID", ErrInvalidArgument, m.Group)
		}
		topic = groupTopic(m.Group)
	case !validUserID(m.To):
		return Message{}, fmt.Errorf("%w: recipient %q is not a user ID", ErrInvalidArgument, m.To)
	default:
		topic = "user/" + m.To + "/newMessage"
	}
	if m.Type == "" {
		m.Type = "text"
	}
	if m.Type == "text" && m.Body == "" {
		return Message{}, fmt.Errorf("%w: empty message", ErrInvalidArgument)
	}
	if m.Type == "media" && (m.Media == nil || m.Media.ID == "" || len(m.Media.ID) > maxMediaIDLen) {
		return Message{}, fmt.Errorf("%w: a media message needs the ID of an upload", ErrInvalidArgument)
	}
	if len(m.Body) > MaxBodyBytes || !utf8.ValidString(m.Body) {
		return Message{}, fmt.Errorf("%w: body must be valid UTF-8 of at most %d bytes", ErrInvalidArgument, MaxBodyBytes)
	}
	if m.CID == "" {
		m.CID = NewCID()
	} else if len(m.CID) > MaxCIDLen || !wire.Visible(m.CID) { // the server's rule
		return Message{}, fmt.Errorf("%w: cid: 1 to %d bytes of printable characters (no control, format, bidi or zero-width characters, no space but U+0020)", ErrInvalidArgument, MaxCIDLen)
	}
	// Only the media ID goes out: the server fills in the rest from the
	// processed upload, whatever the client claims.
	type mediaRef struct {
		ID string `json:"id"`
	}
	var ref *mediaRef
	if m.Media != nil {
		ref = &mediaRef{ID: m.Media.ID}
	}
	payload, err := json.Marshal(struct {
		CID      string    `json:"cid"`
		Type     string    `json:"type"`
		Body     string    `json:"body,omitempty"`
		ReplyTo  string    `json:"replyTo,omitempty"`
		Media    *mediaRef `json:"media,omitempty"`
		Mentions []string  `json:"mentions,omitempty"`
	}{m.CID, m.Type, m.Body, m.ReplyTo, ref, m.Mentions})
	if err != nil {
		return Message{}, fmt.Errorf("edgechat: encode message: %w", err)
	}

	// Register before publishing: the echo may overtake the PUBACK.
	// Another Send of the same CID may be waiting too (an app retrying
	// from another goroutine): each gets the copy.
	echo := make(chan Message, 1)
	c.mu.Lock()
	c.pending[m.CID] = append(c.pending[m.CID], echo)
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		ws := slices.DeleteFunc(c.pending[m.CID], func(w chan Message) bool { return w == echo })
		if len(ws) == 0 {
			delete(c.pending, m.CID)
		} else {
			c.pending[m.CID] = ws
		}
		c.mu.Unlock()
	}()

	ack, err := c.publishRetry(ctx, topic, payload, true)
	if err != nil {
		return Message{}, err
	}
	sent := Message{From: c.userID, To: m.To, Group: m.Group, CID: m.CID, Type: m.Type, Body: m.Body, ReplyTo: m.ReplyTo, Media: m.Media, Mentions: m.Mentions}
	deadline := time.Now().Add(c.opts.EchoWait)
	t := time.NewTimer(c.opts.EchoWait)
	defer t.Stop()
	if ack.User.Get("id") == "" {
		// The PUBACK of a newly stored message carries its ID; this one
		// acknowledged a CID stored before, which the server does not
		// deliver again: no copy comes unless this call's own earlier
		// attempt stored it. The API answers a send of a stored CID with
		// the original, storing nothing.
		select {
		case got := <-echo:
			return got, nil
		default:
		}
		got, err := c.storedByCID(ctx, deadline, m, ref)
		if err == nil {
			return got, nil
		}
		c.log.Debug("reading the message stored with a resent cid failed", "cid", m.CID, "err", err)
	}
	select {
	case got := <-echo:
		return got, nil
	case <-t.C:
	case <-ctx.Done():
	case <-c.ctx.Done():
	}
	return sent, nil
}

// publishRetry publishes at QoS 1 until a positive PUBACK, whose
// properties it returns. With retry false it gives up after the first
// attempt that reached the server.
func (c *Client) publishRetry(ctx context.Context, topic string, payload []byte, retry bool) (paho.PublishResponseProperties, error) {
	delay := 100 * time.Millisecond
	// A give-up names the last refusal the server gave (errors.Is finds
	// ErrRateLimited or ErrUnavailable in it), not only the deadline.
	var refused error
	notConfirmed := func(attempts int, err error) error {
		if refused != nil {
			return fmt.Errorf("edgechat: publish to %s not confirmed after %d attempt(s): %w (last answer: %w)", topic, attempts, err, refused)
		}
		return fmt.Errorf("edgechat: publish to %s not confirmed after %d attempt(s): %w", topic, attempts, err)
	}
	for attempt := 1; ; attempt++ {
		down, cm, err := c.waitReady(ctx)
		if err != nil {
			return paho.PublishResponseProperties{}, notConfirmed(attempt-1, err)
		}
		ack, err := c.publishOnce(ctx, cm, down, topic, payload)
		var pe *PublishError
		switch {
		case err == nil:
			return ack, nil
		case errors.As(err, &pe) && !retryableReason(pe.Reason):
			return ack, err
		case errors.As(err, &pe):
			refused = pe
			if pe.Reason == 0x83 {
				// Not committed: the node waited its commit timeout (a
				// leader change does not show) and could not, cut off
				// from its cluster. Another node may well commit it.
				c.leaveNode(down)
			}
		}
		switch {
		case ctx.Err() != nil:
			return ack, notConfirmed(attempt, ctx.Err())
		case !retry:
			return ack, err
		}
		c.log.Debug("publish attempt failed; retrying", "topic", topic, "attempt", attempt, "err", err)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return ack, notConfirmed(attempt, ctx.Err())
		case <-c.ctx.Done():
			return ack, ErrClosed
		}
		delay = min(delay*2, 5*time.Second)
	}
}

// leaveNodeFor is how long the connection attempts after leaveNode
// pass over the node it left (once).
const leaveNodeFor = 30 * time.Second

// leaveNode closes the connection of down, whose node answered that it
// could not commit (0x83), so that the client connects to another of
// Options.URLs: a node cut off from its cluster (a partition, a minority)
// keeps its clients connected, and commits and delivers nothing while
// the rest of the cluster does. The next attempt passes over that node
// once; with one URL, or when the connection is gone already, it does
// nothing.
func (c *Client) leaveNode(down chan struct{}) {
	if c.nBrokers < 2 {
		return
	}
	c.mu.Lock()
	leave := c.down == down && c.leaving != down && !isClosed(down) && !c.closed
	u := c.connURL
	if leave {
		c.leaving = down
		c.skipURL, c.skipUntil = u, time.Now().Add(leaveNodeFor)
	}
	c.mu.Unlock()
	if leave {
		if pu, err := url.Parse(u); err == nil {
			u = pu.Redacted()
		}
		c.log.Warn("the node cannot commit (cut off from its cluster?); moving to another", "url", u)
		c.cm.TerminateConnectionForTest() // the only way autopaho offers to force a fresh connection
	}
}

// storedByCID asks the API for the message I stored with m's CID (POST
// /chat/messages with it answers the original, 200, and stores nothing),
// by deadline.
func (c *Client) storedByCID(ctx context.Context, deadline time.Time, m Message, media any) (Message, error) {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	body := map[string]any{"cid": m.CID, "type": m.Type}
	if m.Group != "" {
		body["group"] = m.Group
	} else {
		body["to"] = m.To
	}
	if m.Body != "" {
		body["body"] = m.Body
	}
	if m.ReplyTo != "" {
		body["replyTo"] = m.ReplyTo
	}
	if m.Media != nil {
		body["media"] = media
	}
	if len(m.Mentions) > 0 {
		body["mentions"] = m.Mentions
	}
	var got Message
	if err := c.call(ctx, http.MethodPost, "/chat/messages", body, &got); err != nil {
		return Message{}, err
	}
	if got.ID == "" || got.CID != m.CID {
		return Message{}, fmt.Errorf("edgechat: the server answered no stored message for cid %s", m.CID)
	}
	return got, nil
}

// publishOnce makes one QoS 1 attempt on the current connection, abandoned
// as soon as that connection drops: paho forgets an unacknowledged publish
// of a connection without a session and would otherwise wait for its
// packet timeout.
func (c *Client) publishOnce(ctx context.Context, cm *autopaho.ConnectionManager, down chan struct{}, topic string, payload []byte) (paho.PublishResponseProperties, error) {
	var none paho.PublishResponseProperties
	if isClosed(down) {
		return none, ErrNotConnected // that connection is gone; wait for the next one
	}
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-down:
			cancel()
		case <-c.ctx.Done():
			cancel()
		case <-stop:
		}
	}()
	resp, err := cm.Publish(actx, &paho.Publish{Topic: topic, QoS: 1, Payload: payload})
	if resp != nil && resp.ReasonCode >= 0x80 {
		pe := &PublishError{Reason: resp.ReasonCode}
		if resp.Properties != nil {
			pe.Text = resp.Properties.ReasonString
		}
		return none, pe
	}
	if err != nil {
		if errors.Is(err, autopaho.ConnectionDownError) {
			return none, ErrNotConnected
		}
		return none, fmt.Errorf("edgechat: publish to %s: %w", topic, err)
	}
	if resp != nil && resp.Properties != nil {
		return *resp.Properties, nil
	}
	return none, nil
}

// MarkRead tells peer that I have read their messages up to upTo (a
// message ID). It waits for the server's acknowledgement, retrying across
// reconnections until ctx ends.
func (c *Client) MarkRead(ctx context.Context, peer string, upTo string) error {
	return c.receipt(ctx, ReceiptRead, peer, upTo)
}

// MarkGroupRead moves my read cursor of a group up to upTo (a message
// ID), through POST /chat/read: the group's unread count (Conversations)
// then counts only the messages after it. Cursors only move forward and
// stop at the group's newest message; no receipt goes to the other
// members (the protocol has none for groups). It retries, while ctx
// lasts, a request that got no answer or an answer that may change (429,
// 5xx): moving a cursor twice to the same place is harmless. A group I
// am not a member of is an error wrapping ErrNotFound.
func (c *Client) MarkGroupRead(ctx context.Context, gid string, upTo string) error {
	if !validGroupID(gid) {
		return fmt.Errorf("%w: group ID %q", ErrInvalidArgument, gid)
	}
	if IDTime(upTo).IsZero() {
		return fmt.Errorf("%w: %q is not a message ID", ErrInvalidArgument, upTo)
	}
	body := struct {
		Group string `json:"group"`
		UpTo  string `json:"upTo"`
	}{gid, upTo}
	delay := 200 * time.Millisecond
	for {
		err := c.call(ctx, http.MethodPost, "/chat/read", body, nil)
		var ae *APIError
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return err
		case errors.As(err, &ae) && ae.Status != http.StatusTooManyRequests && ae.Status < 500:
			return err // a refusal: asking again changes nothing
		case errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrClosed):
			return err
		}
		wait := delay
		if ae != nil && ae.RetryAfter > wait {
			wait = ae.RetryAfter
		}
		c.log.Debug("marking a group read failed; retrying", "group", gid, "err", err, "in", wait)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return fmt.Errorf("edgechat: mark group %s read: %w (last error: %v)", gid, ctx.Err(), err)
		case <-c.ctx.Done():
			return ErrClosed
		}
		delay = min(delay*2, 5*time.Second)
	}
}

// MarkDelivered tells peer that their messages up to upTo reached me.
func (c *Client) MarkDelivered(ctx context.Context, peer string, upTo string) error {
	return c.receipt(ctx, ReceiptDelivered, peer, upTo)
}

func (c *Client) receipt(ctx context.Context, typ, peer, upTo string) error {
	if !validUserID(peer) {
		return fmt.Errorf("%w: user ID %q", ErrInvalidArgument, peer)
	}
	if IDTime(upTo).IsZero() {
		return fmt.Errorf("%w: %q is not a message ID", ErrInvalidArgument, upTo)
	}
	payload, _ := json.Marshal(Receipt{Type: typ, UpTo: upTo})
	_, err := c.publishRetry(ctx, "user/"+peer+"/receipts", payload, true)
	return err
}

// Typing tells a user that I am typing to them. It is best effort: QoS 0,
// and ErrNotConnected while the connection is down. A UI sends it again
// every few seconds while the user types, and StopTyping when they stop
// without sending.
func (c *Client) Typing(ctx context.Context, to string) error {
	return c.userTyping(ctx, to, TypingStarted)
}

// StopTyping tells a user that I stopped typing to them (cleared the
// composer, left the conversation) without sending; best effort, as
// Typing.
func (c *Client) StopTyping(ctx context.Context, to string) error {
	return c.userTyping(ctx, to, TypingStopped)
}

// TypingGroup tells the members of one of my groups that I am typing
// there (group/{gid}/typing; the members' clients that follow it, with
// Options.OnTypingNotice in this SDK, get it); best effort, as Typing.
func (c *Client) TypingGroup(ctx context.Context, gid string) error {
	return c.groupTyping(ctx, gid, TypingStarted)
}

// StopTypingGroup tells the members of one of my groups that I stopped
// typing there; best effort, as Typing.
func (c *Client) StopTypingGroup(ctx context.Context, gid string) error {
	return c.groupTyping(ctx, gid, TypingStopped)
}

func (c *Client) userTyping(ctx context.Context, to, state string) error {
	if !validUserID(to) {
		return fmt.Errorf("%w: user ID %q", ErrInvalidArgument, to)
	}
	return c.publishTyping(ctx, "user/"+to+"/typing", state)
}

func (c *Client) groupTyping(ctx context.Context, gid, state string) error {
	if !validGroupID(gid) {
		return fmt.Errorf("%w: group ID %q", ErrInvalidArgument, gid)
	}
	return c.publishTyping(ctx, "group/"+gid+"/typing", state)
}

func (c *Client) publishTyping(ctx context.Context, topic, state string) error {
	c.mu.Lock()
	up, closed := c.readyClosed, c.closed
	c.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if !up {
		return ErrNotConnected
	}
	payload := []byte(`{"state":"` + state + `"}`)
	_, err := c.cm.Publish(ctx, &paho.Publish{Topic: topic, QoS: 0, Payload: payload})
	if errors.Is(err, autopaho.ConnectionDownError) {
		return ErrNotConnected
	}
	if err != nil {
		return fmt.Errorf("edgechat: typing: %w", err)
	}
	return nil
}

// WatchPresence subscribes to a user's presence: OnPresence gets its
// current status at once (it is retained) and every change after, and the
// subscription is renewed on every reconnection. While disconnected it
// only records the wish and returns nil, as when the connection drops
// before the server answered. The server lets me see only the
// presence of users I have a conversation with (or share a group with);
// for anyone else it returns an error wrapping ErrForbidden. A server
// that cannot check for now (its node is catching up with its cluster)
// is asked again until ctx ends. Cut short by Close, it returns ErrClosed.
func (c *Client) WatchPresence(ctx context.Context, uid string) error {
	if !validUserID(uid) {
		return fmt.Errorf("%w: user ID %q", ErrInvalidArgument, uid)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	c.watched[uid] = struct{}{}
	up, connCtx := c.readyClosed, c.connCtx
	c.mu.Unlock()
	if !up {
		return nil
	}
	sctx, stop := c.onThisConnection(ctx, connCtx)
	defer stop()
	var refused, unverified []string
	var err error
	for wait := 250 * time.Millisecond; ; wait = min(2*wait, 4*time.Second) {
		refused, unverified, err = subscribe(sctx, c.cm, []paho.SubscribeOptions{{Topic: "presence/" + uid, QoS: 1}})
		if err != nil || len(unverified) == 0 {
			break
		}
		// The node cannot check the contact now (it is catching up with
		// its cluster): ask again; the user stays watched whatever
		// happens, so the next connection subscribes anyway.
		select {
		case <-ctx.Done():
			return fmt.Errorf("edgechat: presence of %s not granted yet: %w", uid, ctx.Err())
		case <-sctx.Done():
			return c.connectionGone()
		case <-time.After(wait):
		}
	}
	if err != nil && ctx.Err() == nil && connectionLost(sctx, err) {
		return c.connectionGone() // afterConnect subscribes it on the next connection
	}
	if err == nil && len(refused) > 0 {
		c.mu.Lock()
		delete(c.watched, uid)
		c.mu.Unlock()
		return fmt.Errorf("%w: presence of %s", ErrForbidden, uid)
	}
	return err
}

// onThisConnection is ctx, also ended when the connection of connCtx
// drops: a SUBSCRIBE or UNSUBSCRIBE whose connection dropped gets no
// answer, and paho would wait for its packet timeout (10 s).
func (c *Client) onThisConnection(ctx, connCtx context.Context) (context.Context, func()) {
	sctx, cancel := context.WithCancel(ctx)
	if connCtx == nil {
		return sctx, cancel
	}
	stop := context.AfterFunc(connCtx, cancel)
	return sctx, func() { stop(); cancel() }
}

// connectionLost reports whether a request made with sctx failed because
// its connection went away (not because the server refused it).
func connectionLost(sctx context.Context, err error) bool {
	return sctx.Err() != nil || errors.Is(err, autopaho.ConnectionDownError) ||
		errors.Is(err, paho.ErrConnectionLost) || errors.Is(err, session.ErrNoConnection)
}

// connectionGone is what a presence call cut short by the loss of its
// connection returns: ErrClosed when Close cut it, else nil (the next
// connection does what it would have done).
func (c *Client) connectionGone() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	return nil
}

// UnwatchPresence stops presence updates for uid.
func (c *Client) UnwatchPresence(ctx context.Context, uid string) error {
	c.mu.Lock()
	_, was := c.watched[uid]
	delete(c.watched, uid)
	up, connCtx := c.readyClosed, c.connCtx
	c.mu.Unlock()
	if !was || !up {
		return nil
	}
	sctx, stop := c.onThisConnection(ctx, connCtx)
	defer stop()
	_, err := c.cm.Unsubscribe(sctx, &paho.Unsubscribe{Topics: []string{"presence/" + uid}})
	if err != nil && ctx.Err() == nil && connectionLost(sctx, err) {
		return c.connectionGone() // the next connection does not subscribe it
	}
	if err != nil {
		return fmt.Errorf("edgechat: unsubscribe: %w", err)
	}
	return nil
}
