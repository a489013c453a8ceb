package region

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/address"
	"github.com/edgechat/edgechat/internal/peerqueue"
	"github.com/edgechat/edgechat/internal/wire"
	"github.com/edgechat/edgechat/internal/wsnet"
)

// LinkPrefix starts a link's client ID, username and topics.
const LinkPrefix = "$link/"

// LinkALPN is the TLS application protocol a link offers (tls:// and
// wss://): a region's TLS listeners ask for a client certificate only
// from a client that offers it, so browsers and users' apps are never
// asked for one (a browser would show a certificate picker).
const LinkALPN = "edgechat-link"

// DMTopic is the topic a link publishes direct messages on:
// $link/{from region}/dm.
func DMTopic(fromRegion string) string { return LinkPrefix + fromRegion + "/dm" }

// linkClient is the outbound MQTT 5 connection of one link, run by the
// leader: it publishes a batch of outbox entries at QoS 1 in outbox
// order, up to Config.Window publishes in flight (window.go; the other
// region commits them in that order), and answers only when every one
// was acknowledged or refused for good.
type linkClient struct {
	link   Link
	own    string
	number int // this region's number, told in the CONNECT
	tls    *tls.Config
	log    *slog.Logger
	m      *metrics
	gm     *groupMetrics
	dialTO time.Duration
	// clientID of the connection; "": $link/{own}, the link's own.
	clientID string
	// retention: a message older than this is not sent (ops.go); 0: any.
	retention time.Duration
	// tellExpired tells the senders of the messages it does not send,
	// being older than retention, before the cursor passes them
	// (Bridge.tellExpired); nil: nobody is told.
	tellExpired func(ctx context.Context, msgs []expiredMsg) error
	// window: publishes in flight at most (window.go); 0: linkWindow.
	window int

	// onPublish handles what the other region delivers to this link's
	// subscriptions (ephemeral.go); nil: nothing.
	onPublish func(paho.PublishReceived) (bool, error)
	stats     *linkStats // bytes and messages per direction (status.go)

	mu      sync.Mutex
	cl      *paho.Client
	alive   context.Context // canceled when cl's connection ended
	sess    *ackSession     // cl's session (window.go)
	st      stream          // the batches in flight (stream.go)
	dialing *dialAttempt    // the dial in flight (connect), or nil
	// firstRead: when this link first read each relayed group message
	// it holds, by outbox position (expired).
	firstRead map[uint64]time.Time
}

// sessionOf is cl's session.
func (l *linkClient) sessionOf(cl *paho.Client) *ackSession {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cl == cl {
		return l.sess
	}
	return newAckSession(BatchTopic(l.own), l.window) // cl was dropped meanwhile: its publishes fail
}

// start is the peerqueue.AsyncSender of the link (stream.go): it writes
// b's publishes and returns the wait for their PUBACKs.
func (l *linkClient) start(ctx context.Context, b peerqueue.Batch[item]) (func() error, error) {
	var entries []outgoing
	var tell []expiredMsg
	expired := 0
	for _, it := range b.Items {
		if l.expired(it) {
			expired++
			if m, ok := expiredOf(it.Payload, l.link.Name); ok {
				tell = append(tell, m)
			}
			continue
		}
		topic, payload, kind, err := linkPayload(it.Payload, l.own, it.Pos)
		if err != nil || !json.Valid(payload) {
			// Not a message we can send (cannot happen for what the
			// archive stored): skipped, counted, never blocking the link.
			l.log.Error("region link: outbox entry unreadable; skipped", "link", l.link.Name, "pos", it.Pos, "topic", topic, "error", err)
			l.m.sent.WithLabelValues(l.link.Name, "unreadable").Inc()
			continue
		}
		entries = append(entries, outgoing{pos: it.Pos, kind: kind, payload: payload})
	}
	if len(tell) > 0 && l.tellExpired != nil {
		// Told before the cursor passes them (expirytold.go); else the
		// batch is tried again.
		if err := l.tellExpired(ctx, tell); err != nil {
			return nil, err
		}
	}
	if expired > 0 {
		l.m.sent.WithLabelValues(l.link.Name, "expired").Add(float64(expired)) // the leader drops it from the outbox (ops.go)
	}
	// Several entries to a publish (batch.go), the publishes one after
	// another: each waits for the other region's commit of all it holds.
	groups, payloads, tooLarge := batches(entries)
	for _, e := range tooLarge {
		// Cannot happen for what is staged (a stored envelope is at most
		// about 50 KiB, a body of 8 KiB escaped; a large group's state
		// goes in chunks: groupchunks.go):
		// skipped rather than block the link for ever.
		l.log.Error("region link: outbox entry larger than a link's packet; skipped", "link", l.link.Name, "pos", e.pos, "kind", e.kind, "bytes", len(e.payload))
		l.m.sent.WithLabelValues(l.link.Name, "too_large").Inc()
	}
	if len(payloads) == 0 {
		l.skip(b)
		l.droppedExpired(expired)
		return func() error { return nil }, nil
	}
	cl, alive, gen, err := l.begin(ctx, b)
	if err != nil {
		return nil, err
	}
	// Up to Config.Window publishes in flight (window.go), acknowledged
	// in order: each PUBACK says the other region committed all it holds.
	pubs, err := l.publish(ctx, cl, l.sessionOf(cl), alive, payloads)
	if err != nil {
		l.drop(cl)
		return nil, err
	}
	return func() error {
		err := l.await(ctx, alive, pubs, func(i int, code byte, reason string) error {
			return l.acknowledged(groups[i], len(payloads[i]), code, reason)
		})
		if err != nil {
			l.drop(cl)
			return err
		}
		l.acked(gen)
		l.droppedExpired(expired)
		return nil
	}, nil
}

// maxFirstRead bounds linkClient.firstRead: beyond it the times are
// forgotten and taken again (a relayed message then waits longer).
const maxFirstRead = 1 << 16

// expired tells whether the outbox entry it is a message older than
// --link-retention: by its ID's time, or, for a group message this
// region relays for a member of another region (queuedTime), by when
// this link first read it, as the leader's link since it leads.
func (l *linkClient) expired(it item) bool {
	if l.retention <= 0 {
		return false
	}
	t, ok, relayed := queuedTime(it.Payload)
	if relayed {
		l.mu.Lock()
		if l.firstRead == nil || len(l.firstRead) >= maxFirstRead {
			l.firstRead = map[uint64]time.Time{}
		}
		if t, ok = l.firstRead[it.Pos]; !ok {
			t, ok = time.Now(), true
			l.firstRead[it.Pos] = t
		}
		l.mu.Unlock()
	}
	return ok && time.Since(t) > l.retention
}

// droppedExpired counts n messages of a batch that is done (the cursor
// moves past it) that the link did not send, being older than
// --link-retention: as the leader's expiry counts what it drops (ops.go),
// which runs every ExpireEvery and never sees these once the cursor
// passed them; without it nothing an operator watches (the expired
// total, the link status, the log) said they were dropped.
func (l *linkClient) droppedExpired(n int) {
	if n == 0 {
		return
	}
	l.m.expired.WithLabelValues(l.link.Name).Add(float64(n))
	if l.stats != nil {
		l.stats.expired.Add(uint64(n))
	}
	l.log.Warn("region link: messages older than --link-retention dropped; they will not reach the other region",
		"link", l.link.Name, "dropped", n, "retention", l.retention)
}

// acknowledged counts the PUBACK of a publish of group (bytes long); an
// error for a refusal to resend.
func (l *linkClient) acknowledged(group []outgoing, bytes int, code byte, reason string) error {
	if code >= 0x80 {
		if retryable(code) {
			return fmt.Errorf("region: link %s: publish: refused %#x %s", l.link.Name, code, reason)
		}
		l.log.Warn("region link: the other region refused a batch; skipped", "link", l.link.Name,
			"from_pos", group[0].pos, "messages", len(group), "code", code, "reason", reason)
		l.m.sent.WithLabelValues(l.link.Name, "refused").Add(float64(len(group)))
		return nil
	}
	for _, e := range group {
		l.m.sent.WithLabelValues(l.link.Name, "acknowledged").Inc()
		if e.kind == "message" || e.kind == "state" {
			l.gm.sent.WithLabelValues(l.link.Name, e.kind).Inc()
		}
	}
	l.stats.outMany(len(group), bytes)
	return nil
}

// retryable tells whether a negative PUBACK may succeed later: the
// other region could not commit (0x80 unspecified, 0x83 implementation
// specific: "not committed"; 0x97 quota). Refusals of the message itself
// (0x87 not authorized, 0x90 topic name invalid, 0x99 payload format
// invalid) are skipped.
func retryable(code byte) bool {
	switch code {
	case 0x87, 0x90, 0x99:
		return false
	}
	return true
}

// dialAttempt is a connection being dialled (linkClient.dialing): one at
// a time; every caller waits for it or for its own context.
type dialAttempt struct {
	done   chan struct{} // closed when cl, alive and err are set
	cancel context.CancelFunc
	cl     *paho.Client
	alive  context.Context
	err    error
}

// errLinkClosed fails a dial that close ended.
var errLinkClosed = errors.New("link closed")

// connect returns the live connection, dialling a new one when there is
// none or the last one ended. The dial runs outside l.mu, bounded by
// Config.Timeout: a peer that accepts TCP and never answers the CONNECT
// held the mutex for the whole timeout, and every other request of the
// node's query connection (a 2 s look-up, a search) waited for it
// whatever its own deadline. Callers share the dial in flight and give
// up at their own context's end.
func (l *linkClient) connect(ctx context.Context) (*paho.Client, context.Context, error) {
	l.mu.Lock()
	if l.cl != nil {
		select {
		case <-l.cl.Done():
			l.cl = nil
		default:
			cl, alive := l.cl, l.alive
			l.mu.Unlock()
			return cl, alive, nil
		}
	}
	d := l.dialing
	if d == nil {
		// Not the caller's context: the dial is every waiter's; close
		// cancels it.
		dctx, cancel := context.WithTimeout(context.Background(), l.dialTO)
		d = &dialAttempt{done: make(chan struct{}), cancel: cancel}
		l.dialing = d
		go l.dial(dctx, d) // ends within dialTO
	}
	l.mu.Unlock()
	select {
	case <-d.done:
		return d.cl, d.alive, d.err
	case <-ctx.Done():
		return nil, nil, fmt.Errorf("region: link %s: connect: %w", l.link.Name, ctx.Err())
	}
}

// dial runs attempt d and installs its connection, unless close ended it
// meanwhile.
func (l *linkClient) dial(ctx context.Context, d *dialAttempt) {
	defer d.cancel()
	defer close(d.done)
	cl, sess, err := l.open(ctx)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dialing != d {
		if cl != nil {
			_ = cl.Disconnect(&paho.Disconnect{ReasonCode: 0})
			_ = sess.Close()
		}
		d.err = fmt.Errorf("region: link %s: connect: %w", l.link.Name, errLinkClosed)
		return
	}
	l.dialing = nil
	if err != nil {
		d.err = err
		// The link's status says why it is down; the log says it once
		// per change of reason (the attempts repeat every few seconds).
		if l.stats.setFailure(err.Error()) {
			l.log.Warn("region link cannot connect; its messages wait in the outbox", "link", l.link.Name, "url", l.link.URL, "error", err)
		}
		return
	}
	l.stats.setFailure("")
	l.m.connects.WithLabelValues(l.link.Name, "connected").Inc()
	l.log.Info("region link connected", "link", l.link.Name, "url", l.link.URL)
	l.cl, l.alive, l.sess = cl, ctxOfDone(cl.Done()), sess // one goroutine per connection, ending with it
	l.stats.setUp(true, time.Now())
	context.AfterFunc(l.alive, func() { l.stats.setUp(false, time.Now()); _ = sess.Close() })
	d.cl, d.alive = l.cl, l.alive
}

// open dials the other region and sends the CONNECT, within ctx.
func (l *linkClient) open(ctx context.Context) (*paho.Client, *ackSession, error) {
	u, err := url.Parse(l.link.URL)
	if err != nil {
		return nil, nil, err
	}
	cfg := l.tls.Clone() // with this region's certificate when --link-cert
	if cfg == nil {
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if cfg.ServerName == "" {
		cfg.ServerName = u.Hostname()
	}
	// http/1.1 too: a gateway that does not ask links for certificates
	// (no --link-ca) refuses a client offering only protocols it lacks.
	cfg.NextProtos = []string{LinkALPN, "http/1.1"}
	var conn net.Conn
	switch u.Scheme {
	case "tls":
		conn, err = (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", u.Host)
	case "wss", "ws":
		conn, err = wsnet.Dial(ctx, l.link.URL, cfg) // no Origin header
	default:
		conn, err = (&net.Dialer{}).DialContext(ctx, "tcp", u.Host)
	}
	if err != nil {
		l.m.connects.WithLabelValues(l.link.Name, "dial_failed").Inc()
		return nil, nil, fmt.Errorf("region: link %s: dial: %w", l.link.Name, err)
	}
	sess := newAckSession(BatchTopic(l.own), l.window)
	// Over TLS or WebSocket, unwrapped, paho's writers interleave inside
	// packets and the peer drops the link (pahoconn).
	// ... and a packet the other region announces above what a link
	// takes fails the connection at once (packetlimit.go).
	cc := paho.ClientConfig{Conn: limitPackets(conn, maxInboundPacket), PacketTimeout: l.dialTO, Session: sess}
	if l.onPublish != nil {
		cc.OnPublishReceived = []func(paho.PublishReceived) (bool, error){l.onPublish}
	}
	cl := paho.NewClient(cc)
	id := LinkPrefix + l.own
	user := id
	if l.clientID != "" {
		id = l.clientID
	}
	maxPacket := uint32(maxInboundPacket)
	// No secret: the link's certificate stands for it (Config.LinkCA).
	ca, err := cl.Connect(ctx, &paho.Connect{ClientID: id, Username: user, UsernameFlag: true,
		Password: []byte(l.link.Secret), PasswordFlag: l.link.Secret != "", KeepAlive: 30, CleanStart: true,
		// RequestProblemInfo: paho's zero value asks the broker to drop
		// every reason string (MQTT-3.1.2-29), the CONNACK's that tells
		// a number clash included.
		Properties: &paho.ConnectProperties{RequestProblemInfo: true, MaximumPacketSize: &maxPacket,
			User: paho.UserProperties{{Key: NumberProp, Value: strconv.Itoa(l.number)}}}})
	if err != nil {
		_ = conn.Close()
		_ = sess.Close()
		reason := ""
		if ca != nil && ca.Properties != nil {
			reason = ca.Properties.ReasonString
		}
		// The error says the reason string once: paho's may carry it.
		said := ""
		if !strings.Contains(err.Error(), reason) {
			said = " " + reason
		}
		if ca != nil && ca.ReasonCode == 0x87 && strings.Contains(reason, numberClash) {
			// Both regions mint IDs with the same number: the other side
			// refused and said so; say it here too, where the messages wait.
			l.m.connects.WithLabelValues(l.link.Name, "number_clash").Inc()
			l.log.Error("region link refused: the other region has this region's number; give each linked region its own --region-number",
				"link", l.link.Name, "number", l.number, "reason", reason)
			return nil, nil, fmt.Errorf("region: link %s: connect: %w%s", l.link.Name, err, said)
		}
		l.m.connects.WithLabelValues(l.link.Name, "refused").Inc()
		return nil, nil, fmt.Errorf("region: link %s: connect: %w%s", l.link.Name, err, said)
	}
	return cl, sess, nil
}

// ctxOfDone is a context canceled when done is closed.
func ctxOfDone(done <-chan struct{}) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-done
		cancel()
	}()
	return ctx
}

// drop closes cl if it is still the live connection.
func (l *linkClient) drop(cl *paho.Client) {
	l.mu.Lock()
	if l.cl == cl {
		l.cl = nil
	}
	l.mu.Unlock()
	_ = cl.Disconnect(&paho.Disconnect{ReasonCode: 0})
}

// close ends the connection (the leader stopped leading) and a dial in
// flight.
func (l *linkClient) close() {
	l.mu.Lock()
	cl := l.cl
	l.cl = nil
	if d := l.dialing; d != nil {
		l.dialing = nil
		d.cancel()
	}
	l.mu.Unlock()
	if cl != nil {
		_ = cl.Disconnect(&paho.Disconnect{ReasonCode: 0})
	}
}

// forwardPayload turns a stored envelope of this region (from "alice",
// to "bob@us") into what the link sends: the sender qualified with this
// region ("alice@eu"), and so are the mentions of this region's users
// (mentions.go).
func forwardPayload(stored []byte, own string) ([]byte, error) {
	var env wire.Envelope
	if err := json.Unmarshal(stored, &env); err != nil {
		return nil, err
	}
	if env.ID == 0 || env.From == "" || address.RegionOf(env.To) == "" {
		return nil, errors.New("not a stored direct message to another region")
	}
	env.From = address.Qualify(env.From, own)
	env.Mentions = qualifyMentions(env.Mentions, own)
	return env.Marshal(), nil
}
