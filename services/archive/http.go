package archive

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/snowflake"
	"github.com/edgechat/edgechat/internal/wire"
)

// MaxSendBody limits a POST /chat/messages body: an envelope of
// wire.MaxEnvelopeBytes and "to" or "group".
const MaxSendBody = 64 << 10

// MaxReadBody limits a POST /chat/read body.
const MaxReadBody = 1 << 10

// CodeInvalidEnvelope is the error code of an envelope that fails
// wire.ParseEnvelope.
const CodeInvalidEnvelope = "invalid_envelope"

// CodeMediaNotReady: a media message names no ready upload of the sender
// (422).
const CodeMediaNotReady = "media_not_ready"

// Routes are the archive's HTTP endpoints; every one needs a principal.
func (s *Service) Routes() []httpapi.Route {
	return []httpapi.Route{
		{Method: http.MethodGet, Pattern: "/chat/history", Handler: s.handleHistory, Class: "read"},
		{Method: http.MethodGet, Pattern: "/chat/sync", Handler: s.handleSync, Class: "read"},
		{Method: http.MethodGet, Pattern: "/chat/sync/end", Handler: s.handleSyncEnd, Class: "read"},
		{Method: http.MethodGet, Pattern: "/chat/conversations", Handler: s.handleConversations, Class: "read"},
		{Method: http.MethodPost, Pattern: "/chat/messages", Handler: s.handleSend, Class: "write", MaxBody: MaxSendBody},
		{Method: http.MethodPost, Pattern: "/chat/read", Handler: s.handleRead, Class: "write", MaxBody: MaxReadBody},
		{Method: http.MethodGet, Pattern: "/admin/archive", Handler: s.handleArchiveStatus, Admin: true, Class: httpapi.ClassAdmin},
		{Method: http.MethodGet, Pattern: "/admin/archive/segments/{key...}", Handler: s.handleSegment, Admin: true, Class: httpapi.ClassAdmin},
	}
}

// handleSegment serves a segment object this node holds, if the index
// references it: other nodes copy what their local store lacks, backups
// copy what the state references.
func (s *Service) handleSegment(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	ref, ok, err := s.segmentByKey(key)
	switch {
	case err != nil:
		httpapi.WriteError(w, err)
		return
	case !ok || s.tier == nil:
		httpapi.WriteError(w, httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no such segment"))
		return
	}
	rc, err := s.tier.store.Get(r.Context(), ref.Key, 0, -1)
	if errors.Is(err, ErrSegmentMissing) {
		httpapi.WriteError(w, httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "this node does not hold the segment"))
		return
	}
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", segmentContentType)
	w.Header().Set("Content-Length", strconv.FormatInt(ref.Size, 10))
	w.Header().Set("X-Segment-Sha256", hex.EncodeToString(ref.SHA256[:]))
	_, _ = io.Copy(w, io.LimitReader(rc, ref.Size))
}

// handleArchiveStatus answers GET /admin/archive: this node's tiers.
func (s *Service) handleArchiveStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.Status()
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, st)
}

func principal(r *http.Request) (string, error) {
	p, ok := httpapi.PrincipalFrom(r.Context())
	if !ok || p.UserID == "" {
		return "", httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnauthorized, "authentication required")
	}
	return p.UserID, nil
}

func badParam(format string, args ...any) error {
	return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeValidation, format, args...)
}

// query parses the query string strictly: only the allowed names, each
// at most once.
func query(r *http.Request, allowed ...string) (map[string]string, error) {
	vals, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, badParam("malformed query string")
	}
	out := make(map[string]string, len(vals))
	for k, v := range vals {
		known := false
		for _, a := range allowed {
			known = known || a == k
		}
		if !known {
			return nil, badParam("unknown query parameter %q", k)
		}
		if len(v) != 1 {
			return nil, badParam("query parameter %q given %d times", k, len(v))
		}
		out[k] = v[0]
	}
	return out, nil
}

func limitParam(q map[string]string, def, max int) (int, error) {
	v := q["limit"]
	if v == "" { // absent or empty: the default, as the users service's lists
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > max {
		return 0, badParam("limit must be an integer from 1 to %d", max)
	}
	return n, nil
}

// writeMessages writes {"messages":[...],<extra>} with the stored
// envelopes copied verbatim (they are never re-encoded).
func writeMessages(w http.ResponseWriter, msgs [][]byte, extra func(*bytes.Buffer)) {
	n := 64
	for _, m := range msgs {
		n += len(m) + 1
	}
	var b bytes.Buffer
	b.Grow(n)
	b.WriteString(`{"messages":[`)
	for i, m := range msgs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(m)
	}
	b.WriteByte(']')
	extra(&b)
	b.WriteString("}\n")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b.Bytes())
}

// readBarrier waits until this node has applied everything the cluster
// committed before the request, for the reads a client catches up with
// (a sync page, the conversation list, a conversation's newest page):
// a message whose live delivery went out before the client subscribed
// must be in them. It writes a 503 and returns false when the node
// cannot reach its leader.
func (s *Service) readBarrier(w http.ResponseWriter, r *http.Request, what, me string) bool {
	if s.barrier == nil {
		return true
	}
	ctx, cancel := context.WithTimeout(r.Context(), readBarrierTimeout)
	err := s.barrier(ctx)
	cancel()
	if err != nil {
		s.log.Warn(what+": read barrier", "user", me, "err", err)
		httpapi.WriteError(w, &httpapi.Error{Status: http.StatusServiceUnavailable, Code: httpapi.CodeUnavailable,
			Message: "cannot read now: this node cannot reach its cluster's leader; retry", RetryAfter: time.Second})
		return false
	}
	return true
}

func (s *Service) handleHistory(w http.ResponseWriter, r *http.Request) {
	me, err := principal(r)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	q, err := query(r, "with", "group", "before", "limit")
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	limit, err := limitParam(q, historyDefault, historyMax)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	var before *snowflake.ID
	if v := q["before"]; v != "" { // empty: the newest page, as an empty cursor
		id, err := snowflake.Parse(v)
		if err != nil {
			httpapi.WriteError(w, badParam("before must be a decimal message id"))
			return
		}
		before = &id
	}
	with, hasWith := q["with"]
	gid, hasGroup := q["group"]
	var conv string
	caughtUp := false // the read barrier was passed
	switch {
	case hasWith == hasGroup:
		httpapi.WriteError(w, badParam("give exactly one of with or group"))
		return
	case hasGroup:
		if wire.ValidGroupID(gid) != nil {
			httpapi.WriteError(w, badParam("invalid group id"))
			return
		}
		// The newest page is a catch-up read: the barrier comes first,
		// so that membership is judged on the state the page is read
		// from. Checked before it, a member removed through another
		// node a moment ago (still listed here) would be handed the
		// messages the catch-up brings, those sent after the removal.
		if before == nil {
			if !s.readBarrier(w, r, "history", me) {
				return
			}
			caughtUp = true
		}
		// Members only; anyone else is told the group does not exist,
		// once this node has caught up with the cluster: a member just
		// added through another node is not refused (as POST /chat/read).
		conv, err = s.memberConv(me, gid)
		if errors.Is(err, wire.ErrNotFound) && s.groups != nil && !caughtUp {
			if !s.readBarrier(w, r, "history", me) {
				return
			}
			caughtUp = true
			conv, err = s.memberConv(me, gid)
		}
		if err != nil {
			httpapi.WriteError(w, httpError(err))
			return
		}
	default:
		if wire.ValidPeerID(with) != nil {
			httpapi.WriteError(w, badParam("invalid user id in with%s", wire.LowercaseHint(with)))
			return
		}
		if peer, err := s.resolvePeer(with); err == nil {
			with = peer // name@{this region} is the local name
		}
		// The conversation key is built from the caller's own ID, so a
		// user can only ever read conversations they take part in.
		conv = directConv(me, with)
	}
	// Only the newest page can hold what was just committed.
	if before == nil && !caughtUp && !s.readBarrier(w, r, "history", me) {
		return
	}
	msgs, hasMore, err := s.historyPage(r.Context(), conv, before, limit)
	if err != nil {
		s.log.Error("history", "user", me, "err", err)
		httpapi.WriteError(w, readError(err))
		return
	}
	if hasGroup {
		// Still a member once the page is read: a removal committed
		// between the check above and the read, and a message the group
		// sent after it, may be on the page. A snapshot that holds such
		// a message was taken after the removal had reached the member
		// cache, so this check sees it.
		if _, err := s.memberConv(me, gid); err != nil {
			httpapi.WriteError(w, httpError(err))
			return
		}
	}
	writeMessages(w, msgs, func(b *bytes.Buffer) {
		b.WriteString(`,"hasMore":` + strconv.FormatBool(hasMore))
	})
}

func (s *Service) handleSync(w http.ResponseWriter, r *http.Request) {
	me, err := principal(r)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	q, err := query(r, "since", "limit")
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	limit, err := limitParam(q, syncDefault, syncMax)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	// The cursor is documented as opaque; today it is the decimal commit
	// position (fsm.Position.Seq) of the last message returned.
	var since uint64
	if v := q["since"]; v != "" {
		if len(v) > 20 || v[0] == '+' {
			httpapi.WriteError(w, badParam("malformed sync cursor"))
			return
		}
		since, err = strconv.ParseUint(v, 10, 64)
		if err != nil {
			httpapi.WriteError(w, badParam("malformed sync cursor"))
			return
		}
	}
	if !s.readBarrier(w, r, "sync", me) {
		return
	}
	if since != 0 && s.applied != nil {
		// A cursor past the end of the stream (what this node has
		// applied, everything committed before the request) was not made
		// by this cluster: one made anew from nothing under the same
		// names. Every message before it would be lost to the client for
		// good: it syncs from the beginning.
		if applied, err := s.applied(); err == nil && since>>16 > applied {
			since = 0
		}
	}
	msgs, next, hasMore, err := s.syncPage(r.Context(), me, since, limit)
	if err != nil {
		s.log.Error("sync", "user", me, "err", err)
		httpapi.WriteError(w, readError(err))
		return
	}
	writeMessages(w, msgs, func(b *bytes.Buffer) {
		b.WriteString(`,"cursor":"` + strconv.FormatUint(next, 10) + `","hasMore":` + strconv.FormatBool(hasMore))
	})
}

// syncEndWithinMax bounds GET /chat/sync/end's within (seconds): a week.
const syncEndWithinMax = 7 * 24 * 3600

// handleSyncEnd answers a sync cursor without paging the stream: where it
// ends now, or (within=N) from where a sync returns every message created
// in the last N seconds. A client's first connection needs no more: its
// reads of the conversation list and pages cover the rest.
func (s *Service) handleSyncEnd(w http.ResponseWriter, r *http.Request) {
	me, err := principal(r)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	q, err := query(r, "within")
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	var createdAfter time.Time
	if v, ok := q["within"]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > syncEndWithinMax || v[0] == '+' {
			httpapi.WriteError(w, badParam("within must be a number of seconds from 1 to %d", syncEndWithinMax))
			return
		}
		createdAfter = time.Now().Add(-time.Duration(n) * time.Second)
	}
	if !s.readBarrier(w, r, "sync end", me) {
		return
	}
	cursor, err := s.syncEnd(me, createdAfter)
	if err != nil {
		s.log.Error("sync end", "user", me, "err", err)
		httpapi.WriteError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"cursor": strconv.FormatUint(cursor, 10)})
}

// conversationJSON has exactly one of Peer and Group.
type conversationJSON struct {
	Peer        string          `json:"peer,omitempty"`
	Group       string          `json:"group,omitempty"`
	LastMessage json.RawMessage `json:"lastMessage"`
	Unread      int             `json:"unread"`
	PeerRead    string          `json:"peerRead,omitempty"`
}

func (s *Service) handleConversations(w http.ResponseWriter, r *http.Request) {
	me, err := principal(r)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	q, err := query(r, "limit", "cursor")
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	limit, err := limitParam(q, conversationsDefault, conversationsMax)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	var after *convCursor
	if v := q["cursor"]; v != "" { // empty: the start, as an empty since
		c, err := parseConvCursor(v)
		if err != nil {
			httpapi.WriteError(w, err)
			return
		}
		after = &c
	}
	if !s.readBarrier(w, r, "conversations", me) {
		return
	}
	convs, next, hasMore, err := s.conversationsAfter(r.Context(), me, limit, after)
	if err != nil {
		s.log.Error("conversations", "user", me, "err", err)
		httpapi.WriteError(w, readError(err))
		return
	}
	out := struct {
		Conversations []conversationJSON `json:"conversations"`
		HasMore       bool               `json:"hasMore"`
		NextCursor    string             `json:"nextCursor,omitempty"`
	}{Conversations: make([]conversationJSON, 0, len(convs)), HasMore: hasMore}
	if hasMore {
		out.NextCursor = next.String()
	}
	for _, c := range convs {
		cj := conversationJSON{Peer: c.Peer, Group: c.Group, LastMessage: c.Last, Unread: c.Unread}
		if c.PeerRead != 0 {
			cj.PeerRead = strconv.FormatUint(uint64(c.PeerRead), 10)
		}
		out.Conversations = append(out.Conversations, cj)
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
}

// sendRequest is the body of POST /chat/messages: "to" or "group" plus
// the fields of a client envelope, kept raw so that wire.ParseEnvelope
// alone decides what is valid.
type sendRequest struct {
	To       *string         `json:"to"`
	Group    *string         `json:"group"`
	CID      json.RawMessage `json:"cid"`
	Type     json.RawMessage `json:"type"`
	Body     json.RawMessage `json:"body"`
	ReplyTo  json.RawMessage `json:"replyTo"`
	Media    json.RawMessage `json:"media"`
	Mentions json.RawMessage `json:"mentions"`
}

// target is where a message goes: exactly one of To and Group is set.
type target struct{ To, Group string }

// decodeSendRequest strictly decodes a send body and validates the
// envelope part with wire.ParseEnvelope. Its errors are *httpapi.Error.
func decodeSendRequest(body []byte) (dst target, env wire.Envelope, err error) {
	var req sendRequest
	if err := httpapi.DecodeJSONBytes(body, &req); err != nil {
		return target{}, wire.Envelope{}, err
	}
	switch {
	case (req.To == nil) == (req.Group == nil):
		return target{}, wire.Envelope{}, badParam("give exactly one of to and group")
	case req.To != nil && wire.ValidPeerID(*req.To) != nil:
		return target{}, wire.Envelope{}, badParam("to must be a user id%s", wire.LowercaseHint(*req.To))
	case req.To != nil:
		dst.To = *req.To
	case wire.ValidGroupID(*req.Group) != nil:
		return target{}, wire.Envelope{}, badParam("group must be a group id")
	default:
		dst.Group = *req.Group
	}
	var b bytes.Buffer
	b.Grow(len(body))
	b.WriteByte('{')
	for _, f := range []struct {
		name string
		raw  json.RawMessage
	}{{"cid", req.CID}, {"type", req.Type}, {"body", req.Body}, {"replyTo", req.ReplyTo}, {"media", req.Media}, {"mentions", req.Mentions}} {
		if f.raw == nil {
			continue
		}
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		b.WriteString(`"` + f.name + `":`)
		b.Write(f.raw)
	}
	b.WriteByte('}')
	env, err = wire.ParseEnvelope(b.Bytes())
	if err != nil {
		return target{}, wire.Envelope{}, httpapi.Errorf(http.StatusBadRequest, CodeInvalidEnvelope, "%v", err)
	}
	return dst, env, nil
}

func (s *Service) handleSend(w http.ResponseWriter, r *http.Request) {
	me, err := principal(r)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if len(r.URL.RawQuery) > 0 {
		httpapi.WriteError(w, badParam("no query parameters allowed"))
		return
	}
	var raw json.RawMessage
	// DecodeJSON enforces the content type and the size limit; the strict
	// field checks happen in decodeSendRequest.
	if err := httpapi.DecodeJSON(r, &raw, MaxSendBody); err != nil {
		s.messages.WithLabelValues(resultRefused).Inc()
		httpapi.WriteError(w, err)
		return
	}
	dst, env, err := decodeSendRequest(raw)
	if err != nil {
		s.messages.WithLabelValues(resultRefused).Inc()
		httpapi.WriteError(w, err)
		return
	}
	var (
		stored  wire.Envelope
		payload []byte
		dup     bool
	)
	if dst.Group != "" {
		stored, payload, dup, err = s.SendGroup(r.Context(), me, dst.Group, env)
	} else {
		stored, payload, dup, err = s.SendDirect(r.Context(), me, dst.To, env)
	}
	if err != nil {
		if !errors.Is(err, wire.ErrNotFound) && !errors.Is(err, wire.ErrInvalid) && !errors.Is(err, wire.ErrForbidden) {
			s.log.Warn("send over HTTP failed", "from", me, "to", dst.To, "group", dst.Group, "err", err)
		}
		httpapi.WriteError(w, httpError(err))
		return
	}
	status := http.StatusOK
	if !dup {
		status = http.StatusCreated
		s.deliver(stored, payload)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(payload)
}

// deliver publishes a newly stored message: a direct message to the
// recipient and to the sender's other devices, a group message to the
// group's topic (the sender's devices are members, so they get it there).
// When every node delivers what it stores (Deps.Live), only nodes of an
// earlier version get it from here. A failed publish is logged, not
// returned: the message is committed and clients catch up through sync.
func (s *Service) deliver(env wire.Envelope, payload []byte) {
	scope := wire.ScopeCluster
	if s.DeliversCommitted() {
		scope = wire.ScopeOlderPeers
	}
	props := []wire.Prop{{Key: "id", Value: env.ID.String()}, {Key: "from", Value: env.From}}
	for _, t := range deliveryTopics(env.From, env.To, env.Group) {
		if err := s.pub.Publish(wire.Outbound{Topic: t, Payload: payload, QoS: 1, UserProps: props, Scope: scope}); err != nil {
			s.log.Warn("publishing a stored message failed; clients will get it by sync", "topic", t, "id", env.ID, "err", err)
		}
	}
}

// readRequest is the body of POST /chat/read: exactly one of with (a
// user ID) and group, and upTo (a message ID as a decimal string).
type readRequest struct {
	With  *string `json:"with"`
	Group *string `json:"group"`
	UpTo  *string `json:"upTo"`
}

// handleRead moves the caller's read cursor of a direct conversation or a
// group (204). For a direct conversation it also publishes a read receipt
// to the peer, as an MQTT read receipt would be delivered.
func (s *Service) handleRead(w http.ResponseWriter, r *http.Request) {
	me, err := principal(r)
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if len(r.URL.RawQuery) > 0 {
		httpapi.WriteError(w, badParam("no query parameters allowed"))
		return
	}
	var req readRequest
	if err := httpapi.DecodeJSON(r, &req, MaxReadBody); err != nil {
		httpapi.WriteError(w, err)
		return
	}
	var upTo snowflake.ID
	switch {
	case (req.With == nil) == (req.Group == nil):
		err = badParam("give exactly one of with and group")
	case req.With != nil && wire.ValidPeerID(*req.With) != nil:
		err = badParam("with must be a user id%s", wire.LowercaseHint(*req.With))
	case req.Group != nil && wire.ValidGroupID(*req.Group) != nil:
		err = badParam("group must be a group id")
	case req.UpTo == nil:
		err = badParam("upTo is required")
	default:
		if upTo, err = snowflake.Parse(*req.UpTo); err != nil {
			err = badParam("upTo must be a decimal message id")
		}
	}
	if err != nil {
		httpapi.WriteError(w, err)
		return
	}
	if req.Group != nil {
		err = s.MarkGroupRead(r.Context(), me, *req.Group, upTo)
	} else {
		upTo, err = s.MarkReadUpTo(r.Context(), me, *req.With, upTo) // what the receipt may say
	}
	if err != nil {
		if !errors.Is(err, wire.ErrNotFound) && !errors.Is(err, wire.ErrInvalid) {
			s.log.Warn("mark read over HTTP failed", "reader", me, "err", err)
		}
		httpapi.WriteError(w, httpError(err))
		return
	}
	// A receipt to bob@us is delivered to the link of us, which
	// subscribes to receipts addressed to its users (bridge/region).
	peer := ""
	if req.With != nil {
		peer, _ = s.resolvePeer(*req.With) // MarkRead accepted it
	}
	// Never to a peer who blocked me (as MQTT refuses it), mine or of
	// another region (this region knows their blocks of its users): my
	// own cursor moves all the same, it is mine.
	if peer != "" && peer != me && upTo != 0 && (s.blocks == nil || !s.blocks.IsBlocked(peer, me)) {
		rc, _ := json.Marshal(wire.Receipt{Type: wire.ReceiptRead, UpTo: upTo, Peer: me})
		o := wire.Outbound{Topic: wire.ReceiptsTopic(peer), Payload: rc, QoS: 1, UserProps: []wire.Prop{{Key: "from", Value: me}}}
		if err := s.pub.Publish(o); err != nil {
			s.log.Warn("publishing a read receipt failed", "reader", me, "peer", *req.With, "err", err)
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// segmentRetryAfter is the Retry-After of a read the segment store
// could not answer.
const segmentRetryAfter = 5 * time.Second

// readError is what a read of history answers for err: 503 while sealed
// messages cannot be read from the segment store (retried), else err
// (500 for a missing or damaged segment).
func readError(err error) error {
	if errors.Is(err, ErrSegmentUnavailable) {
		return &httpapi.Error{Status: http.StatusServiceUnavailable, Code: httpapi.CodeUnavailable,
			Message: "older messages cannot be read from the archive right now; retry", RetryAfter: segmentRetryAfter}
	}
	return err
}

// httpError maps service errors to JSON errors with stable codes.
func httpError(err error) error {
	var he *httpapi.Error
	var ee *wire.EnvelopeError
	switch {
	case errors.As(err, &he):
		return he
	case errors.Is(err, ErrSegmentUnavailable):
		return readError(err)
	case errors.As(err, &ee):
		return httpapi.Errorf(http.StatusBadRequest, CodeInvalidEnvelope, "%v", ee)
	case errors.Is(err, wire.ErrNotFound):
		return httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "%s", trimPrefix(err))
	case errors.Is(err, wire.ErrForbidden):
		if r := (*wire.Refusal)(nil); errors.As(err, &r) {
			return httpapi.Errorf(http.StatusForbidden, httpapi.CodeForbidden, "%s", r.Why)
		}
		return httpapi.Errorf(http.StatusForbidden, httpapi.CodeForbidden, "not allowed")
	case errors.Is(err, wire.ErrMediaNotReady):
		return httpapi.Errorf(http.StatusUnprocessableEntity, CodeMediaNotReady, "%s", trimPrefix(err))
	case errors.Is(err, wire.ErrInvalid):
		return httpapi.Errorf(http.StatusBadRequest, CodeInvalidEnvelope, "%s", trimPrefix(err))
	case errors.Is(err, wire.ErrUnavailable), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return &httpapi.Error{Status: http.StatusServiceUnavailable, Code: httpapi.CodeUnavailable, Message: "cannot store messages right now; retry", RetryAfter: time.Second}
	default:
		return err
	}
}

func trimPrefix(err error) string {
	s := err.Error()
	const p = "archive: "
	if len(s) > len(p) && s[:len(p)] == p {
		return s[len(p):]
	}
	return s
}
