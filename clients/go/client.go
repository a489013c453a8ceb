// Package edgechat is the Go SDK of edgechat: it logs in, keeps an MQTT
// connection (WebSocket or TCP, through paho.golang's autopaho) to a node
// up across drops and token expiry, sends messages with at-least-once
// retries that the server turns into exactly-once storage (same client
// message ID on every retry), catches up on what was missed after every
// reconnection through /chat/sync, and hands every message to the
// application exactly once, in one goroutine. Repeats are dropped by ID
// against the last 10,000 IDs seen; so that a catch-up never replays
// more than that, the client also syncs in the background after every
// 5,000 messages received live, which moves its cursor past them. A
// message that came live is also remembered until a catch-up that
// started after it has ended, so that a long catch-up (after a long
// time away, or from an old Options.Cursor) that reaches it after more
// than 10,000 others does not deliver it again.
// Group messages arrive live too: the client subscribes to the topic of
// each of the user's groups, and of each group the user joins.
//
// Groups: Groups lists mine (names, member counts, my role), SendGroup
// (or SendMessage with Message.Group) publishes to a group's topic with
// the same CID retries and acknowledgement as a direct message,
// GroupHistory pages through a group's messages, and MarkGroupRead
// moves my read cursor of a group (its unread count in Conversations).
//
// Read state and typing: OnRead tells where my own read cursor of a
// conversation moved and its unread count, whichever of my devices read
// (MarkRead, MarkGroupRead, another client), so that a badge follows
// reads made elsewhere; OnReceipt tells how far a peer received or read
// mine (direct conversations: groups have no receipts). Typing and
// StopTyping tell a user, TypingGroup and StopTypingGroup the members of
// a group; OnTypingNotice gets them all (with it set the client follows
// the typing topic of each of my groups as it does their messages),
// while the older OnTyping gets only a user's direct starts.
//
// Resuming: an application that keeps its messages can save Cursor()
// (after Sync, which catches up and so moves the cursor past everything
// delivered) and start its next Client from it with Options.Cursor. That
// client's first catch-up then delivers what was committed after the
// cursor, direct and group messages, however long the application was
// away, instead of only the minute before Dial.
//
// A minimal client:
//
//	tok, _ := edgechat.Login(ctx, "http://localhost:8080", "alice", "secret")
//	c, _ := edgechat.Dial(ctx, edgechat.Options{
//		URLs:      []string{"ws://localhost:8080/mqtt"},
//		Token:     tok.AccessToken,
//		OnMessage: func(m edgechat.Message) { fmt.Println(m.From, m.Body) },
//	})
//	defer c.Close()
//	c.Send(ctx, "bob", "hello")
package edgechat

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/wire"
)

// Options configure Dial. URLs and one of Token or TokenSource are required.
type Options struct {
	// URLs of the broker, tried in order: ws://, wss://, tcp://, mqtt://,
	// tls://, mqtts://. A WebSocket URL without a path gets /mqtt. Give
	// several nodes of a cluster to survive the loss of one: the client
	// reconnects to the next, and the HTTP API calls (sync, history) move
	// to the next node's API as well (see HTTPURLs). With several, it
	// also leaves a node that answers a publish that it could not commit
	// (0x83: cut off from its cluster): the next connection passes over
	// that node once. A node cut off for --node-down-after (3 s) closes
	// its clients' connections and refuses them until it hears a leader
	// again, so a client that only receives moves to the next URL too
	// (and syncs).
	URLs []string
	// HTTPURL is the node's HTTP API base URL. Without it and HTTPURLs,
	// the API of each ws(s) URL's node is used (ws://h:p/mqtt gives
	// http://h:p); with only tcp/tls URLs one of them is required.
	HTTPURL string
	// HTTPURLs are the HTTP API base URLs of the cluster's nodes (one per
	// node), tried after HTTPURL, in order, when a node cannot be
	// reached: give them with tcp/tls broker URLs so that catch-up syncs
	// and other API calls survive the loss of a node. A read moves on
	// when it gets no answer (nothing for 15 s, from a node that
	// vanished without a reset; a slow answer that keeps coming is read
	// to its end), a 503, or a 502 or 504 (a gateway in front of the
	// node answering for it), and so does a token refresh of
	// RefreshingTokenSourceURLs (it carries an Idempotency-Key); any
	// other call (a password change) only when it provably never reached
	// the node.
	// Pair them with RefreshingTokenSourceURLs.
	HTTPURLs []string
	// Token is a fixed access token. Tokens are short-lived, so long-running
	// clients set TokenSource instead (see RefreshingTokenSource).
	Token string
	// TokenSource is called before every connection attempt and every HTTP
	// request; it must return quickly when its cached token is still good.
	TokenSource TokenSource
	// Device is this connection's device ID (the MQTT client ID is
	// "{userID}/{Device}"); default "go-" plus random hex. At most 64
	// bytes, without / + # or control characters (else ErrBadOptions).
	// One running client per Device: a second one takes the connection
	// over, and the first stops connecting (see OnTakenOver).
	Device string
	// HeartbeatInterval between presence heartbeats; 0 means 10s and a
	// negative value disables them.
	HeartbeatInterval time.Duration
	// SyncFromStart makes the first catch-up at Dial deliver the whole
	// stored history through OnMessage. Without it, that catch-up
	// delivers only the messages created in the minute before Dial or
	// later (see Dial), and moves the cursor to the end.
	SyncFromStart bool
	// Cursor resumes from a sync cursor saved from an earlier client of
	// the same user (Client.Cursor, best taken after Client.Sync): the
	// first catch-up delivers every message committed after it, however
	// old, and nothing before it; SyncFromStart is then ignored. Messages
	// the earlier client received live after its cursor last moved come
	// again (an application that stores messages keeps them by ID). A
	// cursor the server refuses as malformed fails Dial with
	// ErrBadOptions. Empty: as without it.
	Cursor string
	// EchoWait bounds how long Send waits, after the server acknowledged a
	// message, for the stored copy carrying its ID; default 5s.
	EchoWait time.Duration
	// TLSConfig for wss://, tls:// and mqtts:// URLs (nil: system roots).
	TLSConfig *tls.Config

	// Callbacks run one at a time, in arrival order, on one goroutine of
	// the client's; they may call the client's methods, Close included
	// (it then returns without waiting for the callback). Each is optional.
	OnMessage          func(Message)                // every message (incoming, and my own from any device), once per ID
	OnTyping           func(from string)            // a peer is typing to me (direct only, never "stopped": see OnTypingNotice)
	OnReceipt          func(Receipt)                // a peer received or read my messages
	OnPresence         func(uid string, p Presence) // a watched user's status changed
	OnEvent            func(raw []byte)             // server events on user/{me}/events
	OnConnectionChange func(connected bool)         // true once connected and subscribed, false when the connection drops
	// OnTypingNotice gets every typing notice: direct and group ones,
	// started and stopped (OnTyping, when set too, still gets the
	// direct "typing" ones). Set, the client also subscribes to the
	// typing topic of each of my groups (group/{gid}/typing); my own
	// group notices (from my other devices) are not passed on.
	OnTypingNotice func(TypingNotice)
	// OnRead runs when my own read cursor of a conversation moves, on
	// any of my devices: a badge or unread count the application keeps
	// follows it (ReadState.Unread). OnEvent gets the raw event too.
	OnRead func(ReadState)
	// OnSignedOut runs once when the server stops taking this client's
	// credentials after it had connected: the session was ended, the
	// password changed or the account suspended or deleted elsewhere, so
	// the access token and its refresh are refused. The client goes on
	// trying (a token source may yet fix it); an app signs the user in
	// again or calls Close.
	OnSignedOut func(err error)
	// OnTakenOver runs once when another client connected with this
	// client's ID (the same user and Device) and the server closed this
	// one (DISCONNECT 0x8E) twice within a minute: two running clients
	// with one Device would otherwise take the connection from each
	// other for ever, each reconnecting at once. (After a first takeover
	// the client waits 2 s before it connects again: a lone one can come
	// from the cluster itself.) The client that was taken over does not
	// connect again (calls that need the connection wait for their ctx);
	// an app tells the user, or calls Close and dials again with another
	// Device. Without it, the client logs an error.
	OnTakenOver func()

	Logger     *slog.Logger // nil: slog.Default()
	HTTPClient *http.Client // nil: http.DefaultClient
}

const (
	defaultHeartbeat = 10 * time.Second
	defaultEchoWait  = 5 * time.Second
	// initialMargin: how much older than Dial a message the first sync
	// still delivers (clock skew between nodes, and client and server).
	initialMargin  = time.Minute
	dedupeCapacity = 10000
	// cursorEvery live messages, a background sync moves the cursor past
	// them: a catch-up after a reconnection then replays at most about
	// this many, well inside the dedupe window (LESSONS.md #9).
	cursorEvery      = dedupeCapacity / 2
	syncPageLimit    = 500
	keepAliveSeconds = 30
	tokenTimeout     = 10 * time.Second
)

// Client is a connected edgechat user. Its methods are safe for
// concurrent use.
type Client struct {
	opts Options
	// source replaces opts' token once ChangePassword has new tokens
	// (the old ones are revoked); sourceGate, while a change is under
	// way, holds every token call back until it ends (closed then).
	sourceMu   sync.Mutex
	source     TokenSource
	sourceGate chan struct{}
	log        *slog.Logger
	hc         *http.Client
	userID     string
	clientID   string
	httpURLs   []string // every node's API base URL, tried in turn (see call)
	httpCur    atomic.Int32
	cm         *autopaho.ConnectionManager
	nBrokers   int // len(Options.URLs)

	// pwChanges counts the password changes begun (under sourceMu), and
	// connectChanges is its value when the latest connection attempt
	// asked for its token: a refusal of a token asked for before a
	// change is not a sign-out.
	pwChanges      uint64
	connectChanges atomic.Uint64

	ctx    context.Context // lives until Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine of the client but the dispatcher
	// The dispatcher runs the callbacks, which may call Close: Close
	// waits for it only when called from another goroutine.
	dispatcher   atomic.Uint64 // its goroutine ID
	dispatchDone chan struct{}
	closeDone    chan struct{} // closed once the first Close has stopped everything else

	queue *eventQueue
	seen  *idSet // dispatcher goroutine only
	// liveIDs (dispatcher goroutine only) are the messages that arrived
	// live, each with the number of catch-up syncs started when it was
	// queued: a sync that started after it may still bring it, however
	// many messages come before it (more than seen remembers, after a
	// long time away), so it is kept until such a sync has ended.
	liveIDs     map[string]uint64
	syncsBegun  atomic.Uint64 // syncsStarted, for the MQTT router
	liveSince   atomic.Int64  // messages first seen live since the last sync started
	syncTrigger chan struct{} // capacity 1: coalesces reconnections
	initialSync chan struct{} // closed after the first successful sync
	dialStart   time.Time     // the first sync delivers what is younger (see Dial)
	fatal       chan error    // capacity 1: a refusal of the first connection
	// syncsStarted and syncsDone count catch-up syncs (under mu), and
	// syncDone is closed and replaced whenever one ends: Sync waits on it.
	syncsStarted, syncsDone uint64
	syncDone                chan struct{}
	// refusedSync is the number of the last sync whose credentials the
	// server refused (401), with refusal its error: Sync returns it
	// (the loop goes on asking: a token source may fix it).
	refusedSync uint64
	refusal     error

	mu          sync.Mutex
	gen         int             // connection generation, bumped on every OnConnectionUp
	down        chan struct{}   // closed when connection gen drops
	connCtx     context.Context // ends when connection gen drops
	connCM      *autopaho.ConnectionManager
	ready       chan struct{} // closed while connected and subscribed
	readyClosed bool
	connected   bool // latest state reported to OnConnectionChange
	// lastConnectErr is why the last connection attempt failed: a Dial
	// whose context ends before the first connection says it.
	lastConnectErr error
	// toldSignedOut: OnSignedOut ran (it runs once).
	toldSignedOut bool
	// takenOver is set once the server closed the connection because
	// another client took this client ID, twice within takeoverWindow:
	// no connection is attempted. A first takeover (lastTakeover) only
	// holds the next attempt back until resumeAt. dropNoted, made when a connection drops, is closed once the
	// server's DISCONNECT of it (if any) was looked at: the next
	// connection attempt waits for it (see buildConnect).
	takenOver    bool
	lastTakeover time.Time
	resumeAt     time.Time
	dropNoted    chan struct{}
	watched      map[string]struct{}
	pending      map[string][]chan Message // cid -> the Sends waiting for its echo (one each)
	uploads      map[*mediaWatch]struct{}  // UploadMedia calls waiting for a media event
	mediaPoll    time.Duration             // how often a waiting UploadMedia asks /media/{id}/info
	cursor       string
	synced       bool
	closed       bool
	// dialing is the broker URL of the latest connection attempt, and
	// connURL that of the connection of down (see onConnectionUp).
	dialing, connURL string
	// leaving is the connection that leaveNode closed (once each), and
	// skipURL the node the next connection attempts pass over, until
	// skipUntil or once passed over.
	leaving   chan struct{}
	skipURL   string
	skipUntil time.Time
}

// Dial connects, subscribes to the user's topics and establishes the sync
// cursor, then returns; from then on the client reconnects by itself until
// Close. Everything from Dial on is delivered, including what arrives
// while the connection is down. With Options.Cursor, the first catch-up
// delivers everything committed after that cursor. Without it or
// SyncFromStart, history from more than a minute before Dial is not
// replayed (use History and GroupHistory): the first
// catch-up starts where the server says that minute starts (GET
// /chat/sync/end; from the beginning with a server without that call, or
// when this machine's clock is more than a week behind the server's)
// and delivers the messages whose ID time is at most a minute older than
// Dial's start, by this machine's clock or the server's (the earlier of
// the two). That covers a message
// committed while the connection dropped during the walk, which would
// otherwise never come (it is neither live nor after the cursor), as long
// as the clocks of the nodes that stamp IDs are within a minute of the
// answering node's; messages from that minute before Dial may be
// delivered too.
//
// Until the first connection Dial tries again until ctx ends (the server
// may be starting) and then returns ctx's error with the last attempt's
// (connection refused, ...); it fails at once when the server refuses
// the sign-in (ErrUnauthorized) and, with one URL, when the server's
// certificate fails verification (an x509 error: a self-signed
// certificate or a private CA belongs in Options.TLSConfig's RootCAs).
func Dial(ctx context.Context, opts Options) (*Client, error) {
	dialStart := time.Now()
	urls, err := brokerURLs(opts.URLs)
	if err != nil {
		return nil, err
	}
	httpURLs, err := apiURLs(opts.HTTPURL, opts.HTTPURLs, urls)
	if err != nil {
		return nil, err
	}
	if opts.Token == "" && opts.TokenSource == nil {
		return nil, fmt.Errorf("%w: Token or TokenSource is required", ErrBadOptions)
	}
	if opts.Device == "" {
		opts.Device = "go-" + randomHex(6)
	} else if wire.ValidNewDeviceID(opts.Device) != nil { // the server's rule
		return nil, fmt.Errorf("%w: device ID %q (%s)", ErrBadOptions, opts.Device, wire.NewDeviceIDRule)
	}
	if opts.HeartbeatInterval == 0 {
		opts.HeartbeatInterval = defaultHeartbeat
	}
	if opts.EchoWait <= 0 {
		opts.EchoWait = defaultEchoWait
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	hc := opts.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}

	c := &Client{
		opts:        opts,
		log:         logger.With("component", "edgechat-sdk"),
		hc:          hc,
		httpURLs:    httpURLs,
		nBrokers:    len(urls),
		queue:       newEventQueue(),
		seen:        newIDSet(dedupeCapacity),
		liveIDs:     map[string]uint64{},
		syncTrigger: make(chan struct{}, 1),
		initialSync: make(chan struct{}),
		syncDone:    make(chan struct{}),
		cursor:      opts.Cursor,
		dialStart:   dialStart,
		fatal:       make(chan error, 1),
		ready:       make(chan struct{}),
		down:        make(chan struct{}),
		watched:     map[string]struct{}{},
		pending:     map[string][]chan Message{},
		uploads:     map[*mediaWatch]struct{}{},
		mediaPoll:   defaultMediaPoll,

		dispatchDone: make(chan struct{}),
		closeDone:    make(chan struct{}),
	}
	tok, err := c.token(ctx)
	if err != nil {
		return nil, err
	}
	if c.userID, err = TokenSubject(tok); err != nil {
		return nil, err
	}
	c.clientID = c.userID + "/" + opts.Device
	c.log = c.log.With("client", c.clientID)
	c.ctx, c.cancel = context.WithCancel(context.Background())

	c.wg.Add(1)
	go c.dispatch()
	go c.syncLoop()

	cfg := autopaho.ClientConfig{
		ServerUrls:                    urls,
		TlsCfg:                        opts.TLSConfig,
		KeepAlive:                     keepAliveSeconds,
		CleanStartOnInitialConnection: true,
		// No broker session: what is missed while disconnected comes back
		// through /chat/sync, and Send retries on its own.
		SessionExpiryInterval: 0,
		ReconnectBackoff:      autopaho.NewExponentialBackoff(100*time.Millisecond, 10*time.Second, time.Second, 2),
		ConnectTimeout:        10 * time.Second,
		ConnectUsername:       c.userID,
		ConnectPacketBuilder:  c.buildConnect,
		AttemptConnection:     dialBroker,
		OnConnectionUp:        c.onConnectionUp,
		OnConnectionDown:      c.onConnectionDown,
		OnConnectError:        c.onConnectError,
		ClientConfig: paho.ClientConfig{
			ClientID:           c.clientID,
			OnPublishReceived:  []func(paho.PublishReceived) (bool, error){c.onPublish},
			OnServerDisconnect: c.onServerDisconnect,
			OnClientError:      func(err error) { c.log.Debug("mqtt client error", "err", err) },
		},
	}
	if c.cm, err = autopaho.NewConnection(c.ctx, cfg); err != nil {
		c.shutdown()
		return nil, fmt.Errorf("edgechat: %w", err)
	}

	fail := func(err error) (*Client, error) {
		_ = c.Close()
		return nil, err
	}
	c.mu.Lock()
	ready := c.ready
	c.mu.Unlock()
	select {
	case <-ready:
	case err := <-c.fatal:
		return fail(err)
	case <-ctx.Done():
		c.mu.Lock()
		last := c.lastConnectErr
		c.mu.Unlock()
		if last != nil {
			return fail(fmt.Errorf("edgechat: dial %s: %w (last attempt: %w)", urls[0].Redacted(), ctx.Err(), last))
		}
		return fail(fmt.Errorf("edgechat: dial %s: %w", urls[0].Redacted(), ctx.Err()))
	}
	select {
	case <-c.initialSync:
	case err := <-c.fatal: // the server refused Options.Cursor
		return fail(err)
	case <-ctx.Done():
		return fail(fmt.Errorf("edgechat: initial sync: %w", ctx.Err()))
	}
	return c, nil
}

// UserID is the user this client is logged in as.
func (c *Client) UserID() string { return c.userID }

// ClientID is the MQTT client ID, "{userID}/{device}".
func (c *Client) ClientID() string { return c.clientID }

// HTTPURL is the API base URL in use.
func (c *Client) HTTPURL() string { return c.httpURLs[int(c.httpCur.Load())%len(c.httpURLs)] }

// Connected reports whether the client is connected and subscribed now.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readyClosed
}

// Close disconnects and stops all callbacks: no callback starts after
// it returns. Calls waiting on the client (Send, Sync, API calls in
// flight) and calls made after it return errors wrapping ErrClosed.
// Called from a callback, it returns without waiting for that callback
// to end. It is safe to call more than once, also concurrently and from
// callbacks.
func (c *Client) Close() error {
	onDispatcher := c.dispatcher.Load() == goroutineID()
	c.mu.Lock()
	first := !c.closed
	c.closed = true
	c.readyClosed = false // Connected() is false from now on (autopaho tells no drop on Disconnect)
	c.mu.Unlock()
	switch {
	case first:
		// Cancel first: a reconnection's token call runs on c.ctx, and
		// the MQTT library does not stop before that call returns.
		// autopaho's context is a child of c.ctx, so this also starts its
		// shutdown (a DISCONNECT when connected), which Disconnect awaits.
		c.cancel()
		if c.cm != nil {
			dctx, cancel := context.WithTimeout(context.Background(), disconnectWait)
			_ = c.cm.Disconnect(dctx)
			cancel()
		}
		c.wg.Wait()
		close(c.closeDone)
	case onDispatcher:
		// The first Close may be waiting for this very callback.
		return nil
	default:
		<-c.closeDone
	}
	if !onDispatcher {
		<-c.dispatchDone
	}
	return nil
}

// disconnectWait bounds how long Close waits for the MQTT library to
// send its DISCONNECT and stop (a variable for the tests).
var disconnectWait = 5 * time.Second

// shutdown stops a client whose connection was never set up.
func (c *Client) shutdown() {
	c.cancel()
	c.wg.Wait()
	<-c.dispatchDone
}

// goroutineID is the runtime's ID of the calling goroutine, read from
// its stack header ("goroutine 42 [running]:"). Go offers no other way
// for Close to tell that it runs on the dispatcher, inside a callback.
func goroutineID() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b, _ = bytes.CutPrefix(b, []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i > 0 {
		if id, err := strconv.ParseUint(string(b[:i]), 10, 64); err == nil {
			return id
		}
	}
	return 0
}

func (c *Client) token(ctx context.Context) (string, error) {
	tok, _, err := c.tokenOf(ctx)
	return tok, err
}

// tokenOf is token, also returning the number of password changes begun
// before the token was asked for: a change begun since revokes it.
func (c *Client) tokenOf(ctx context.Context) (string, uint64, error) {
	c.sourceMu.Lock()
	source, gate, changes := c.source, c.sourceGate, c.pwChanges
	c.sourceMu.Unlock()
	if gate != nil {
		// A password change is under way: the server revokes the current
		// tokens when it commits, so wait for the new ones.
		select {
		case <-gate:
			return c.tokenOf(ctx)
		case <-ctx.Done():
			return "", changes, fmt.Errorf("edgechat: waiting for a password change: %w", ctx.Err())
		}
	}
	if source == nil {
		source = c.opts.TokenSource
	}
	if source == nil {
		return c.opts.Token, changes, nil
	}
	tok, err := source(ctx)
	if err != nil {
		if errors.Is(err, ErrUnauthorized) {
			c.signedOut(err) // the refresh was refused
		}
		return "", changes, fmt.Errorf("edgechat: token source: %w", err)
	}
	if tok == "" {
		return "", changes, fmt.Errorf("%w: token source returned an empty token", ErrBadToken)
	}
	return tok, changes, nil
}

// passwordChangedSince reports whether a password change began after
// the one numbered changes (tokenOf): the server may have revoked a
// token asked for before it.
func (c *Client) passwordChangedSince(changes uint64) bool {
	c.sourceMu.Lock()
	defer c.sourceMu.Unlock()
	return c.pwChanges != changes
}

// buildConnect puts a fresh token into every CONNECT: access tokens are
// short-lived and a reconnection may come hours after Dial.
func (c *Client) buildConnect(cp *paho.Connect, u *url.URL) (*paho.Connect, error) {
	c.mu.Lock()
	if noted := c.dropNoted; noted != nil {
		// The first attempt after a drop: autopaho makes it at once, and
		// tells the server's DISCONNECT (a takeover?) on a goroutine of
		// its own; give that a moment, or this attempt would take the ID
		// back from the client that took it.
		c.dropNoted = nil
		c.mu.Unlock()
		t := time.NewTimer(disconnectNoticeWait)
		select {
		case <-noted:
		case <-t.C:
		case <-c.ctx.Done():
		}
		t.Stop()
		c.mu.Lock()
	}
	if c.takenOver {
		c.mu.Unlock()
		return nil, errTakenOver
	}
	if wait := time.Until(c.resumeAt); wait > 0 {
		c.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-c.ctx.Done():
		}
		t.Stop()
		c.mu.Lock()
	}
	skip := c.skipURL != "" && c.skipURL == u.String() && time.Now().Before(c.skipUntil)
	if skip {
		c.skipURL = "" // once: should the other nodes not answer, it is tried again
	}
	c.dialing = u.String()
	c.mu.Unlock()
	if skip {
		return nil, fmt.Errorf("edgechat: passing over %s, which could not commit, for the other nodes", u.Redacted())
	}
	ctx, cancel := context.WithTimeout(c.ctx, tokenTimeout)
	defer cancel()
	tok, changes, err := c.tokenOf(ctx)
	if err != nil {
		return nil, err
	}
	c.connectChanges.Store(changes)
	cp.Password, cp.PasswordFlag = []byte(tok), true
	cp.Username, cp.UsernameFlag = c.userID, true
	cp.CleanStart = true
	return cp, nil
}

func (c *Client) onConnectError(err error) {
	c.log.Debug("connect attempt failed", "err", err)
	c.mu.Lock()
	c.lastConnectErr = err
	first := c.gen == 0
	c.mu.Unlock()
	var ce *autopaho.ConnackError
	if !errors.As(err, &ce) {
		if first && c.nBrokers == 1 && certificateError(err) {
			// Trying again changes nothing until someone changes the
			// certificate or this machine's trust: Dial fails fast, as
			// for a refused sign-in. With several brokers another one
			// may do; later drops keep retrying (a renewal may fix it).
			select {
			case c.fatal <- fmt.Errorf("edgechat: %w", err):
			default:
			}
		}
		return
	}
	switch ce.ReasonCode {
	case 0x84, 0x85, 0x86, 0x87, 0x8C: // protocol, client ID, credentials, authorization, auth method
		err := fmt.Errorf("%w: server refused the connection (reason 0x%02x %s)", ErrUnauthorized, ce.ReasonCode, ce.Reason)
		if first { // Dial fails fast; later refusals keep retrying (a token source may fix them)
			select {
			case c.fatal <- err:
			default:
			}
		} else if c.passwordChangedSince(c.connectChanges.Load()) {
			// The token was asked for before a password change, which
			// revoked it; the next attempt asks for the new one.
			c.log.Debug("connection refused with a token from before a password change; retrying", "err", err)
		} else if ce.ReasonCode == 0x86 || ce.ReasonCode == 0x87 {
			c.signedOut(err)
		}
	}
}

// certificateError reports whether err is the server's certificate
// failing verification: an unknown authority (self-signed, a private
// CA), a name it does not cover, an expired one.
func certificateError(err error) bool {
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	return errors.As(err, &cv) || errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &ci)
}

// A first takeover holds the next connection attempt back for
// takeoverPause; a second within takeoverWindow stops the client (see
// onServerDisconnect). Variables for the tests.
var (
	takeoverPause  = 2 * time.Second
	takeoverWindow = time.Minute
)

// disconnectNoticeWait bounds how long the first connection attempt
// after a drop waits for the server's DISCONNECT to be looked at (a
// drop without one waits it all).
const disconnectNoticeWait = 200 * time.Millisecond

// errTakenOver is what buildConnect answers autopaho once another
// client took this client ID: no connection is attempted.
var errTakenOver = errors.New("edgechat: another client connected with this client ID; not reconnecting")

// onServerDisconnect notes a DISCONNECT 0x8E (session taken over):
// another client connected with this client ID. This client has one
// connection at a time, and autopaho makes the next only once the last
// is down (its socket closed, so a takeover of it by this client's own
// next connection never reaches it): the taker is another client, or,
// once in a while, a registration of an earlier connection of this
// client that the cluster committed late (broker/takeover.go). So the
// first takeover holds the next attempt back for takeoverPause (the
// taker, if it runs, keeps the ID meanwhile) and a second one within
// takeoverWindow stops the client. autopaho calls this in a goroutine of
// its own as the connection drops, and connects again at once: the
// first attempt after a drop waits for this (see buildConnect).
func (c *Client) onServerDisconnect(d *paho.Disconnect) {
	c.mu.Lock()
	takeover := d != nil && d.ReasonCode == 0x8E && !c.closed && !c.takenOver
	now := time.Now()
	tell := takeover && !c.lastTakeover.IsZero() && now.Sub(c.lastTakeover) < takeoverWindow
	switch {
	case tell:
		c.takenOver = true
	case takeover:
		c.lastTakeover, c.resumeAt = now, now.Add(takeoverPause)
		c.log.Warn("another client connected with this client ID (the same user and Options.Device); connecting again in a moment", "client", c.clientID, "in", takeoverPause)
	}
	if c.dropNoted != nil {
		close(c.dropNoted) // the attempt waiting for it may go on
		c.dropNoted = nil
	}
	c.mu.Unlock()
	if !tell {
		return
	}
	c.log.Error("another client connected with this client ID (the same user and Options.Device); this one stops connecting", "client", c.clientID)
	c.queue.push(event{kind: evTakenOver})
}

// signedOut tells OnSignedOut, once, that the server refuses this
// client's credentials after it had connected.
func (c *Client) signedOut(err error) {
	c.mu.Lock()
	had, told := c.gen > 0, c.toldSignedOut
	if had {
		c.toldSignedOut = true
	}
	c.mu.Unlock()
	if had && !told {
		c.queue.push(event{kind: evSignedOut, err: err})
	}
}

// onConnectionUp runs on autopaho's loop and must not block: it records
// the new generation and leaves subscribing to a goroutine.
func (c *Client) onConnectionUp(cm *autopaho.ConnectionManager, _ *paho.Connack) {
	c.mu.Lock()
	c.gen++
	gen := c.gen
	down := make(chan struct{})
	c.down = down
	c.connURL = c.dialing
	closed := c.closed
	if !closed {
		c.wg.Add(1) // under mu, so never after Close's Wait began
	}
	c.mu.Unlock()
	if closed {
		return
	}
	c.log.Debug("connected", "gen", gen)
	go func() {
		defer c.wg.Done()
		c.afterConnect(cm, gen, down)
	}()
}

func (c *Client) onConnectionDown() bool {
	c.mu.Lock()
	close(c.down)
	c.dropNoted = make(chan struct{})
	if c.readyClosed {
		c.ready = make(chan struct{})
		c.readyClosed = false
	}
	wasConnected := c.connected
	c.connected = false
	closed := c.closed
	c.mu.Unlock()
	c.log.Debug("connection lost")
	if wasConnected {
		c.queue.push(event{kind: evConn, connected: false})
	}
	return !closed
}

// afterConnect subscribes, marks the client ready, starts the heartbeat
// and asks for a catch-up sync. Subscribing comes first so that every
// message committed after the sync's snapshot arrives live.
func (c *Client) afterConnect(cm *autopaho.ConnectionManager, gen int, down chan struct{}) {
	// ctx is the connection's: it ends when the connection drops (or the
	// client closes), not when this function returns, for the group
	// subscriptions that outlive it.
	ctx, cancel := context.WithCancel(c.ctx)
	go func() {
		defer cancel()
		select {
		case <-down:
		case <-ctx.Done():
		}
	}()
	c.mu.Lock()
	if c.gen == gen {
		c.connCtx, c.connCM = ctx, cm
	}
	subs := []paho.SubscribeOptions{{Topic: "user/" + c.userID + "/#", QoS: 1}}
	listed := map[string]bool{}
	for uid := range c.watched {
		subs = append(subs, paho.SubscribeOptions{Topic: "presence/" + uid, QoS: 1})
		listed[uid] = true
	}
	c.mu.Unlock()
	refused, unverified, err := subscribe(ctx, cm, subs)
	if err == nil && (slices.Contains(refused, subs[0].Topic) || slices.Contains(unverified, subs[0].Topic)) {
		err = fmt.Errorf("%w: subscription to %s refused", ErrUnauthorized, subs[0].Topic)
	}
	if err != nil {
		if ctx.Err() == nil {
			c.log.Warn("subscribe failed; reconnecting", "err", err)
			cm.TerminateConnectionForTest() // the only way autopaho offers to force a fresh connection
		}
		return
	}
	if len(unverified) > 0 {
		// The node could not check them now (it is catching up with its
		// cluster): still watched, subscribed again at the next connection.
		c.log.Warn("presence subscriptions not granted for now; tried again at the next connection", "topics", unverified)
	}
	if len(refused) > 0 {
		c.log.Warn("presence subscriptions refused; no longer watched", "topics", refused)
		c.mu.Lock()
		for _, t := range refused {
			delete(c.watched, strings.TrimPrefix(t, "presence/"))
		}
		c.mu.Unlock()
	}
	c.mu.Lock()
	if c.gen != gen || isClosed(down) {
		c.mu.Unlock()
		return
	}
	close(c.ready)
	c.readyClosed = true
	c.connected = true
	// Users watched while this connection subscribed (WatchPresence only
	// recorded them, not ready yet): subscribed now, on this connection;
	// those no longer watched (UnwatchPresence meanwhile), unsubscribed.
	var late, dropped []string
	for uid := range c.watched {
		if !listed[uid] {
			late = append(late, uid)
		}
	}
	for uid := range listed {
		if _, ok := c.watched[uid]; !ok && !slices.Contains(refused, "presence/"+uid) {
			dropped = append(dropped, "presence/"+uid)
		}
	}
	c.mu.Unlock()
	c.queue.push(event{kind: evConn, connected: true})
	for _, uid := range late {
		c.goOnConnection(func(ctx context.Context, _ *autopaho.ConnectionManager) {
			if err := c.WatchPresence(ctx, uid); err != nil && ctx.Err() == nil {
				c.log.Warn("presence subscription failed", "uid", uid, "err", err)
			}
		})
	}
	if len(dropped) > 0 {
		c.goOnConnection(func(ctx context.Context, cm *autopaho.ConnectionManager) {
			if _, err := cm.Unsubscribe(ctx, &paho.Unsubscribe{Topics: dropped}); err != nil && ctx.Err() == nil {
				c.log.Debug("presence unsubscription failed", "topics", dropped, "err", err)
			}
		})
	}
	c.requestSync()
	// Group topics after the user's own (which carry the membership
	// events): a group joined meanwhile is either listed or announced.
	c.goOnConnection(c.followMyGroups)
	if c.opts.HeartbeatInterval > 0 {
		c.heartbeat(ctx, cm)
	}
}

// subscribe sends one SUBSCRIBE and returns the topics the server refused
// and those it could not grant for now (0x83 from a node that cannot
// catch up with its cluster to check them, or 0x97 quota exceeded); err
// is for the request as a whole.
func subscribe(ctx context.Context, cm *autopaho.ConnectionManager, subs []paho.SubscribeOptions) (refused, unverified []string, err error) {
	sa, err := cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: subs})
	if sa == nil {
		return nil, nil, fmt.Errorf("edgechat: subscribe: %w", err)
	}
	// paho reports any refusal as an error; the reason codes say which.
	for i, rc := range sa.Reasons {
		switch {
		case rc < 0x80 || i >= len(subs):
		case rc == 0x83 || rc == 0x97: // cannot check now, quota: worth asking again
			unverified = append(unverified, subs[i].Topic)
		default:
			refused = append(refused, subs[i].Topic)
		}
	}
	return refused, unverified, nil
}

// heartbeat publishes presence heartbeats until the connection drops.
func (c *Client) heartbeat(ctx context.Context, cm *autopaho.ConnectionManager) {
	topic := "presence/" + c.userID + "/heartbeat"
	t := time.NewTicker(c.opts.HeartbeatInterval)
	defer t.Stop()
	for {
		if _, err := cm.Publish(ctx, &paho.Publish{Topic: topic, QoS: 0}); err != nil && ctx.Err() == nil {
			c.log.Debug("heartbeat failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// onPublish is paho's router callback: decode and queue, never block.
func (c *Client) onPublish(pr paho.PublishReceived) (bool, error) {
	p := pr.Packet
	parts := strings.Split(p.Topic, "/")
	switch {
	case len(parts) == 3 && parts[0] == "user" && parts[1] == c.userID:
		switch parts[2] {
		case "newMessage":
			var m Message
			if err := json.Unmarshal(p.Payload, &m); err != nil {
				c.log.Warn("undecodable message", "topic", p.Topic, "err", err)
				return true, nil
			}
			c.matchPending(m)
			c.queue.push(event{kind: evMessage, msg: m, epoch: c.syncsBegun.Load()})
		case "typing":
			var t struct {
				State string `json:"state"`
				From  string `json:"from"`
			}
			if json.Unmarshal(p.Payload, &t) == nil && t.From != "" {
				c.pushTyping(TypingNotice{From: t.From, State: t.State})
			}
		case "receipts":
			var r Receipt
			if err := json.Unmarshal(p.Payload, &r); err == nil {
				c.queue.push(event{kind: evReceipt, receipt: r})
			}
		case "events":
			c.noteMediaEvent(p.Payload)
			c.noteGroupEvent(p.Payload)
			c.queue.push(event{kind: evEvent, raw: append([]byte(nil), p.Payload...)})
			if rs, ok := readEvent(p.Payload); ok {
				c.queue.push(event{kind: evRead, read: rs})
			}
		}
	case len(parts) == 2 && parts[0] == "presence":
		if len(p.Payload) == 0 {
			return true, nil // a cleared retained message
		}
		var pres Presence
		if err := json.Unmarshal(p.Payload, &pres); err == nil {
			c.queue.push(event{kind: evPresence, uid: parts[1], presence: pres})
		}
	case len(parts) == 3 && parts[0] == "group" && parts[2] == "typing":
		var t struct {
			State string `json:"state"`
			From  string `json:"from"`
		}
		if json.Unmarshal(p.Payload, &t) == nil && t.From != "" && t.From != c.userID {
			c.pushTyping(TypingNotice{From: t.From, Group: parts[1], State: t.State})
		}
	case len(parts) == 3 && parts[0] == "group" && parts[2] == "newMessage":
		var m Message
		if err := json.Unmarshal(p.Payload, &m); err == nil {
			c.matchPending(m)
			c.queue.push(event{kind: evMessage, msg: m, epoch: c.syncsBegun.Load()})
		}
	}
	return true, nil
}

// pushTyping queues a typing notice; an empty state is "typing" (the
// server sends one always; older servers passed an empty payload on).
// Unknown states are dropped.
func (c *Client) pushTyping(t TypingNotice) {
	switch t.State {
	case "":
		t.State = TypingStarted
	case TypingStarted, TypingStopped:
	default:
		return
	}
	c.queue.push(event{kind: evTyping, typing: t})
}

// readEvent decodes a conversation.read event of user/{me}/events.
func readEvent(payload []byte) (ReadState, bool) {
	var ev struct {
		Type string    `json:"type"`
		Data ReadState `json:"data"`
	}
	if json.Unmarshal(payload, &ev) != nil || ev.Type != "conversation.read" || ev.Data.UpTo == "" || (ev.Data.Peer == "") == (ev.Data.Group == "") {
		return ReadState{}, false
	}
	return ev.Data, true
}

// matchPending hands the stored copy of one of my messages to the Send
// waiting for it. It runs where messages are queued, not on the
// dispatcher: a Send called from a callback blocks the dispatcher.
func (c *Client) matchPending(m Message) {
	if m.From != c.userID || m.CID == "" || m.ID == "" {
		return
	}
	c.mu.Lock()
	ws := slices.Clone(c.pending[m.CID]) // Send removes its own in place
	c.mu.Unlock()
	for _, w := range ws {
		select {
		case w <- m:
		default:
		}
	}
}

// dispatch runs the callbacks, one at a time, in queue order.
func (c *Client) dispatch() {
	defer close(c.dispatchDone)
	c.dispatcher.Store(goroutineID())
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.queue.notify:
		}
		for _, e := range c.queue.drain() {
			if c.ctx.Err() != nil {
				return
			}
			c.handle(e)
		}
	}
}

func (c *Client) handle(e event) {
	o := &c.opts
	switch e.kind {
	case evMessage:
		m := e.msg
		if e.fromSync {
			if _, ok := c.liveIDs[m.ID]; ok {
				return
			}
		}
		if m.ID != "" && !c.seen.Add(m.ID) {
			return
		}
		if !e.fromSync {
			if m.ID != "" {
				c.liveIDs[m.ID] = e.epoch
			}
			if c.liveSince.Add(1) >= cursorEvery {
				c.requestSync()
			}
		}
		if o.OnMessage != nil {
			o.OnMessage(m)
		}
	case evTyping:
		if o.OnTyping != nil && e.typing.Group == "" && e.typing.State == TypingStarted {
			o.OnTyping(e.typing.From)
		}
		if o.OnTypingNotice != nil {
			o.OnTypingNotice(e.typing)
		}
	case evRead:
		if o.OnRead != nil {
			o.OnRead(e.read)
		}
	case evReceipt:
		if o.OnReceipt != nil {
			o.OnReceipt(e.receipt)
		}
	case evPresence:
		if o.OnPresence != nil {
			o.OnPresence(e.uid, e.presence)
		}
	case evEvent:
		if o.OnEvent != nil {
			o.OnEvent(e.raw)
		}
	case evConn:
		if o.OnConnectionChange != nil {
			o.OnConnectionChange(e.connected)
		}
	case evSignedOut:
		if o.OnSignedOut != nil {
			o.OnSignedOut(e.err)
		}
	case evTakenOver:
		if o.OnTakenOver != nil {
			o.OnTakenOver()
		}
	case evSyncEnd:
		// Sync e.epoch has handed over all it found: its cursor is past
		// every message queued live before it started.
		for id, n := range c.liveIDs {
			if n < e.epoch {
				delete(c.liveIDs, id)
			}
		}
	case evBarrier:
		close(e.done)
	}
}

// flush waits until every event queued before the call was dispatched.
func (c *Client) flush(ctx context.Context) error {
	done := make(chan struct{})
	c.queue.push(event{kind: evBarrier, done: done})
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.ctx.Done():
		return ErrClosed
	}
}

func (c *Client) requestSync() {
	select {
	case c.syncTrigger <- struct{}{}:
	default: // a sync is already due; it will cover this request too
	}
}

// syncLoop runs catch-up syncs one at a time; a reconnection during a sync
// queues one more, so nothing committed while disconnected is missed.
func (c *Client) syncLoop() {
	defer c.wg.Done()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.syncTrigger:
		}
		c.mu.Lock()
		c.syncsStarted++
		n := c.syncsStarted
		c.syncsBegun.Store(n)
		c.mu.Unlock()
		delay := 200 * time.Millisecond
		for {
			err := c.syncOnce(c.ctx)
			if err == nil {
				c.queue.push(event{kind: evSyncEnd, epoch: n})
				c.mu.Lock()
				c.syncsDone++
				close(c.syncDone)
				c.syncDone = make(chan struct{})
				c.mu.Unlock()
				break
			}
			if c.ctx.Err() != nil {
				break
			}
			if errors.Is(err, ErrUnauthorized) {
				c.mu.Lock()
				c.refusedSync, c.refusal = n, err
				close(c.syncDone) // wakes Sync
				c.syncDone = make(chan struct{})
				c.mu.Unlock()
			}
			c.log.Warn("catch-up sync failed; retrying", "err", err, "in", delay)
			select {
			case <-c.ctx.Done():
				return
			case <-time.After(delay):
			}
			delay = min(delay*2, 10*time.Second)
		}
	}
}

// syncOnce pages through /chat/sync from the cursor. The first sync of a
// client starts from Options.Cursor when set (and delivers everything
// after it), else from the beginning with SyncFromStart; without either,
// it delivers only what was created since a minute before Dial (see
// Dial) and starts where GET /chat/sync/end says those messages start
// (from the beginning with a server older than that call).
func (c *Client) syncOnce(ctx context.Context) error {
	// What was seen live until now is behind this sync's snapshot.
	c.liveSince.Store(0)
	c.mu.Lock()
	cursor, initial := c.cursor, !c.synced
	c.mu.Unlock()
	resumed := initial && c.opts.Cursor != ""
	deliverAll := !initial || c.opts.SyncFromStart || resumed
	var after time.Time // when !deliverAll: deliver what was created after it
	if !deliverAll && cursor == "" {
		// Only the last minute is delivered: start where it starts
		// rather than page through the whole history to find its end.
		from, ok, err := c.fetchSyncEnd(ctx, c.dialStart.Add(-initialMargin))
		if err != nil {
			return err
		}
		if ok {
			cursor = from
		}
	}
	for {
		page, err := c.fetchSync(ctx, cursor, syncPageLimit)
		if resumed && cursor == c.opts.Cursor && errors.Is(err, ErrInvalidArgument) {
			// 400: a malformed cursor, refused however often asked.
			select {
			case c.fatal <- fmt.Errorf("%w: the server refused the saved sync cursor %q: %w", ErrBadOptions, cursor, err):
			default:
			}
		}
		if err != nil {
			return err
		}
		if after.IsZero() {
			after = c.dialStart
			if !page.date.IsZero() && page.date.Before(after) {
				after = page.date // the server's clock is behind ours
			}
			after = after.Add(-initialMargin)
		}
		for _, m := range page.Messages {
			c.matchPending(m)
			if deliverAll || m.Time.After(after) {
				c.queue.push(event{kind: evMessage, msg: m, fromSync: true})
			}
		}
		prev := cursor
		if page.Cursor != "" {
			cursor = page.Cursor
		}
		c.mu.Lock()
		c.cursor = cursor
		c.mu.Unlock()
		// A page may be empty and yet not the last (the server skipped
		// what I may no longer read): go on while the cursor moves.
		if !page.HasMore {
			break
		}
		if cursor == prev {
			c.log.Warn("sync answered hasMore without moving the cursor; stopping here", "cursor", cursor)
			break
		}
	}
	c.mu.Lock()
	c.synced = true
	c.mu.Unlock()
	if initial {
		close(c.initialSync)
	}
	return nil
}

// Cursor returns the current sync cursor, for an application that wants
// to persist it and resume from it later (Options.Cursor). It moves with
// every catch-up sync (after each reconnection, every 5,000 live
// messages, and Sync), not with each live message: a client started from
// it gets again what this one received live since. Call Sync first to
// have it cover everything delivered so far.
func (c *Client) Cursor() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cursor
}

// Sync catches up now: it syncs from the cursor to the end of the
// stream, as after a reconnection, and returns once that sync is done
// and every message it found has been handed to OnMessage. Cursor()
// then covers every message delivered before the call. It asks the
// server again while it cannot answer, until ctx ends; a refusal of the
// client's credentials (the session ended) returns an error wrapping
// ErrUnauthorized. Called from a callback, it returns once the sync is
// done, without waiting for the messages it found: they follow the
// callback.
func (c *Client) Sync(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	// A sync already running may have read its pages before this call:
	// wait for the next one to start, which requestSync makes sure of.
	target := c.syncsStarted + 1
	c.mu.Unlock()
	c.requestSync()
	for {
		c.mu.Lock()
		done, ch, refused, refusal := c.syncsDone, c.syncDone, c.refusedSync, c.refusal
		c.mu.Unlock()
		if done >= target {
			break
		}
		if refused >= target {
			return fmt.Errorf("edgechat: sync: %w", refusal)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("edgechat: sync: %w", ctx.Err())
		case <-c.ctx.Done():
			return ErrClosed
		}
	}
	if c.dispatcher.Load() == goroutineID() {
		return nil // the dispatcher would wait for itself
	}
	return c.flush(ctx)
}

// waitReady blocks until the client is connected and subscribed and
// returns the channel that is closed when that connection drops.
func (c *Client) waitReady(ctx context.Context) (chan struct{}, *autopaho.ConnectionManager, error) {
	for {
		c.mu.Lock()
		ready, down, closed, gen := c.ready, c.down, c.closed, c.gen
		c.mu.Unlock()
		if closed {
			return nil, nil, ErrClosed
		}
		select {
		case <-ready:
			c.mu.Lock()
			same := c.gen == gen && c.down == down
			c.mu.Unlock()
			if same {
				return down, c.cm, nil
			}
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-c.ctx.Done():
			return nil, nil, ErrClosed
		}
	}
}

// NewCID returns a fresh client message ID.
func NewCID() string { return "c-" + randomHex(12) }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
