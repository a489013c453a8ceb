// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2022 mochi-mqtt, mochi-co
// SPDX-FileContributor: mochi-co

// Package mqtt provides a high performance, fully compliant MQTT v5 broker server with v3.1.1 backward compatibility.
package mqtt

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/mochi-mqtt/server/v2/system"

	"log/slog"
)

const (
	Version                       = "2.7.9" // the current server version.
	defaultSysTopicInterval int64 = 1       // the interval between $SYS topic publishes
	LocalListener                 = "local"
	InlineClientId                = "inline"
)

var (
	// Deprecated: Use NewDefaultServerCapabilities to avoid data race issue.
	DefaultServerCapabilities = NewDefaultServerCapabilities()

	ErrListenerIDExists       = errors.New("listener id already exists")                               // a listener with the same id already exists
	ErrConnectionClosed       = errors.New("connection not open")                                      // connection is closed
	ErrInlineClientNotEnabled = errors.New("please set Options.InlineClient=true to use this feature") // inline client is not enabled by default
	ErrOptionsUnreadable      = errors.New("unable to read options from bytes")
)

// Capabilities indicates the capabilities and features provided by the server.
type Capabilities struct {
	MaximumClients               int64           `yaml:"maximum_clients" json:"maximum_clients"`                                 // maximum number of connected clients
	MaximumMessageExpiryInterval int64           `yaml:"maximum_message_expiry_interval" json:"maximum_message_expiry_interval"` // maximum message expiry if message expiry is 0 or over
	MaximumClientWritesPending   int32           `yaml:"maximum_client_writes_pending" json:"maximum_client_writes_pending"`     // maximum number of pending message writes for a client
	MaximumSessionExpiryInterval uint32          `yaml:"maximum_session_expiry_interval" json:"maximum_session_expiry_interval"` // maximum number of seconds to keep disconnected sessions
	MaximumPacketSize            uint32          `yaml:"maximum_packet_size" json:"maximum_packet_size"`                         // maximum packet size, no limit if 0
	maximumPacketID              uint32          // unexported, used for testing only
	ReceiveMaximum               uint16          `yaml:"receive_maximum" json:"receive_maximum"`                   // maximum number of concurrent qos messages per client
	MaximumInflight              uint16          `yaml:"maximum_inflight" json:"maximum_inflight"`                 // maximum number of qos > 0 messages can be stored, 0(=8192)-65535
	TopicAliasMaximum            uint16          `yaml:"topic_alias_maximum" json:"topic_alias_maximum"`           // maximum topic alias value
	SharedSubAvailable           byte            `yaml:"shared_sub_available" json:"shared_sub_available"`         // support of shared subscriptions
	MinimumProtocolVersion       byte            `yaml:"minimum_protocol_version" json:"minimum_protocol_version"` // minimum supported mqtt version
	Compatibilities              Compatibilities `yaml:"compatibilities" json:"compatibilities"`                   // version compatibilities the server provides
	MaximumQos                   byte            `yaml:"maximum_qos" json:"maximum_qos"`                           // maximum qos value available to clients
	RetainAvailable              byte            `yaml:"retain_available" json:"retain_available"`                 // support of retain messages
	WildcardSubAvailable         byte            `yaml:"wildcard_sub_available" json:"wildcard_sub_available"`     // support of wildcard subscriptions
	SubIDAvailable               byte            `yaml:"sub_id_available" json:"sub_id_available"`                 // support of subscription identifiers
}

// NewDefaultServerCapabilities defines the default features and capabilities provided by the server.
func NewDefaultServerCapabilities() *Capabilities {
	return &Capabilities{
		MaximumClients:               math.MaxInt64,  // maximum number of connected clients
		MaximumMessageExpiryInterval: 60 * 60 * 24,   // maximum message expiry if message expiry is 0 or over
		MaximumClientWritesPending:   1024 * 8,       // maximum number of pending message writes for a client
		MaximumSessionExpiryInterval: math.MaxUint32, // maximum number of seconds to keep disconnected sessions
		MaximumPacketSize:            0,              // no maximum packet size
		maximumPacketID:              math.MaxUint16,
		ReceiveMaximum:               1024,           // maximum number of concurrent qos messages per client
		MaximumInflight:              1024 * 8,       // maximum number of qos > 0 messages can be stored
		TopicAliasMaximum:            math.MaxUint16, // maximum topic alias value
		SharedSubAvailable:           1,              // shared subscriptions are available
		MinimumProtocolVersion:       3,              // minimum supported mqtt version (3.0.0)
		MaximumQos:                   2,              // maximum qos value available to clients
		RetainAvailable:              1,              // retain messages is available
		WildcardSubAvailable:         1,              // wildcard subscriptions are available
		SubIDAvailable:               1,              // subscription identifiers are available
	}
}

// Compatibilities provides flags for using compatibility modes.
type Compatibilities struct {
	ObscureNotAuthorized       bool `yaml:"obscure_not_authorized" json:"obscure_not_authorized"`                 // return unspecified errors instead of not authorized
	PassiveClientDisconnect    bool `yaml:"passive_client_disconnect" json:"passive_client_disconnect"`           // don't disconnect the client forcefully after sending disconnect packet (paho - spec violation)
	AlwaysReturnResponseInfo   bool `yaml:"always_return_response_info" json:"always_return_response_info"`       // always return response info (useful for testing)
	RestoreSysInfoOnRestart    bool `yaml:"restore_sys_info_on_restart" json:"restore_sys_info_on_restart"`       // restore system info from store as if server never stopped
	NoInheritedPropertiesOnAck bool `yaml:"no_inherited_properties_on_ack" json:"no_inherited_properties_on_ack"` // don't allow inherited user properties on ack (paho - spec violation)
}

// Options contains configurable options for the server.
type Options struct {
	// Listeners specifies any listeners which should be dynamically added on serve. Used when setting listeners by config.
	Listeners []listeners.Config `yaml:"listeners" json:"listeners"`

	// Hooks specifies any hooks which should be dynamically added on serve. Used when setting hooks by config.
	Hooks []HookLoadConfig `yaml:"hooks" json:"hooks"`

	// Capabilities defines the server features and behaviour. If you only wish to modify
	// several of these values, set them explicitly - e.g.
	// 	server.Options.Capabilities.MaximumClientWritesPending = 16 * 1024
	Capabilities *Capabilities `yaml:"capabilities" json:"capabilities"`

	// ClientNetWriteBufferSize specifies the size of the client *bufio.Writer write buffer.
	ClientNetWriteBufferSize int `yaml:"client_net_write_buffer_size" json:"client_net_write_buffer_size"`

	// ClientNetReadBufferSize specifies the size of the client *bufio.Reader read buffer.
	ClientNetReadBufferSize int `yaml:"client_net_read_buffer_size" json:"client_net_read_buffer_size"`

	// Logger specifies a custom configured implementation of log/slog to override
	// the servers default logger configuration. If you wish to change the log level,
	// of the default logger, you can do so by setting:
	// server := mqtt.New(nil)
	// level := new(slog.LevelVar)
	// server.Slog = slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
	// 	Level: level,
	// }))
	// level.Set(slog.LevelDebug)
	Logger *slog.Logger `yaml:"-" json:"-"`

	// SysTopicResendInterval specifies the interval between $SYS topic updates in seconds.
	SysTopicResendInterval int64 `yaml:"sys_topic_resend_interval" json:"sys_topic_resend_interval"`

	// ClientDirectWrites lets the goroutine that publishes a message write it to a
	// subscriber's socket itself when nothing is queued for that subscriber,
	// instead of waking the subscriber's write loop: one goroutine switch less per
	// delivery. The write never blocks: what the socket does not take at once is
	// left to the write loop, so a slow subscriber still only fills its own queue.
	// Plain TCP and Unix socket connections only; hooks' OnPacketEncode then runs
	// on the publisher's goroutine, with the client's lock held.
	ClientDirectWrites bool `yaml:"client_direct_writes" json:"client_direct_writes"`

	// ClientRawSyscalls makes the reads of plain TCP and Unix socket
	// connections, and direct writes (ClientDirectWrites), with
	// syscall.RawSyscall: the sockets are non-blocking, so the calls never
	// block and need not tell the scheduler. A server that goes idle between
	// messages otherwise wakes the runtime's monitor thread (sysmon) at
	// nearly every message (see clients_raw_unix.go): on one core that
	// costs more context switches than the message itself. Waiting for
	// data still goes through the runtime's poller, with the deadlines.
	ClientRawSyscalls bool `yaml:"client_raw_syscalls" json:"client_raw_syscalls"`

	// ReadWaiter, if set, waits for connected clients' next packets without a
	// goroutine per client (see ReadWaiter): a client that has sent nothing for
	// a while then holds neither a goroutine nor a read buffer. Connections it
	// does not support are read by a goroutine as usual.
	ReadWaiter ReadWaiter `yaml:"-" json:"-"`

	// Enable Inline client to allow direct subscribing and publishing from the parent codebase,
	// with negligible performance difference (disabled by default to prevent confusion in statistics).
	InlineClient bool `yaml:"inline_client" json:"inline_client"`
}

// Server is an MQTT broker server. It should be created with server.New()
// in order to ensure all the internal fields are correctly populated.
type Server struct {
	Options      *Options             // configurable server options
	Listeners    *listeners.Listeners // listeners are network interfaces which listen for new connections
	Clients      *Clients             // clients known to the broker
	Topics       *TopicsIndex         // an index of topic filter subscriptions and retained messages
	Info         *system.Info         // values about the server commonly known as $SYS topics
	loop         *loop                // loop contains tickers for the system event loop
	done         chan bool            // indicate that the server is ending
	Log          *slog.Logger         // minimal no-alloc logger
	hooks        *Hooks               // hooks contains hooks for extra functionality such as auth and persistent storage
	inlineClient *Client              // inlineClient is a special client used for inline subscriptions and inline Publish
	readers      sync.Pool            // read buffers of clients waiting through Options.ReadWaiter
	handovers    clientIDLocks        // one handshake at a time per client ID takes a session over (edgechat patch 55)
}

// clientIDLocks are mutexes by client ID, each kept while it is held or
// waited for.
type clientIDLocks struct {
	mu sync.Mutex
	m  map[string]*clientIDLock
}

type clientIDLock struct {
	sync.Mutex
	users int // holders and waiters
}

// lock takes id's mutex and returns its release.
func (l *clientIDLocks) lock(id string) (unlock func()) {
	l.mu.Lock()
	if l.m == nil {
		l.m = make(map[string]*clientIDLock)
	}
	e := l.m[id]
	if e == nil {
		e = &clientIDLock{}
		l.m[id] = e
	}
	e.users++
	l.mu.Unlock()
	e.Lock()
	return func() {
		e.Unlock()
		l.mu.Lock()
		if e.users--; e.users == 0 {
			delete(l.m, id)
		}
		l.mu.Unlock()
	}
}

// loop contains interval tickers for the system events loop.
type loop struct {
	sysTopics      *time.Ticker     // interval ticker for sending updating $SYS topics
	clientExpiry   *time.Ticker     // interval ticker for cleaning expired clients
	inflightExpiry *time.Ticker     // interval ticker for cleaning up expired inflight messages
	retainedExpiry *time.Ticker     // interval ticker for cleaning retained messages
	willDelaySend  *time.Ticker     // interval ticker for sending Will Messages with a delay
	willDelayed    *packets.Packets // activate LWT packets which will be sent after a delay
}

// ops contains server values which can be propagated to other structs.
type ops struct {
	options *Options     // a pointer to the server options and capabilities, for referencing in clients
	info    *system.Info // pointers to server system info
	hooks   *Hooks       // pointer to the server hooks
	log     *slog.Logger // a structured logger for the client
	readers *sync.Pool   // the server's pool of read buffers (Options.ReadWaiter)
	// sendHeld is Server.sendHeld, for a client's write loop that gave
	// back the send quota of a delivery too large to send (patch 33).
	sendHeld func(*Client)
}

// New returns a new instance of mochi mqtt broker. Optional parameters
// can be specified to override some default settings (see Options).
func New(opts *Options) *Server {
	if opts == nil {
		opts = new(Options)
	}

	opts.ensureDefaults()

	s := &Server{
		done:      make(chan bool),
		Clients:   NewClients(),
		Topics:    NewTopicsIndex(),
		Listeners: listeners.New(),
		loop: &loop{
			sysTopics:      time.NewTicker(time.Second * time.Duration(opts.SysTopicResendInterval)),
			clientExpiry:   time.NewTicker(time.Second),
			inflightExpiry: time.NewTicker(time.Second),
			retainedExpiry: time.NewTicker(time.Second),
			willDelaySend:  time.NewTicker(time.Second),
			willDelayed:    packets.NewPackets(),
		},
		Options: opts,
		Info: &system.Info{
			Version: Version,
			Started: time.Now().Unix(),
		},
		Log: opts.Logger,
		hooks: &Hooks{
			Log: opts.Logger,
		},
	}

	if s.Options.InlineClient {
		s.inlineClient = s.NewClient(nil, LocalListener, InlineClientId, true)
		s.Clients.Add(s.inlineClient)
	}

	return s
}

// ensureDefaults ensures that the server starts with sane default values, if none are provided.
func (o *Options) ensureDefaults() {
	if o.Capabilities == nil {
		o.Capabilities = NewDefaultServerCapabilities()
	}

	o.Capabilities.maximumPacketID = math.MaxUint16 // spec maximum is 65535

	if o.Capabilities.MaximumInflight == 0 {
		o.Capabilities.MaximumInflight = 1024 * 8
	}

	if o.SysTopicResendInterval == 0 {
		o.SysTopicResendInterval = defaultSysTopicInterval
	}

	if o.ClientNetWriteBufferSize == 0 {
		o.ClientNetWriteBufferSize = 1024 * 2
	}

	if o.ClientNetReadBufferSize == 0 {
		o.ClientNetReadBufferSize = 1024 * 2
	}

	if o.Logger == nil {
		log := slog.New(slog.NewTextHandler(os.Stdout, nil))
		o.Logger = log
	}
}

// NewClient returns a new Client instance, populated with all the required values and
// references to be used with the server. If you are using this client to directly publish
// messages from the embedding application, set the inline flag to true to bypass ACL and
// topic validation checks.
func (s *Server) NewClient(c net.Conn, listener string, id string, inline bool) *Client {
	cl := newClient(c, &ops{ // [MQTT-3.1.2-6] implicit
		options:  s.Options,
		info:     s.Info,
		hooks:    s.hooks,
		log:      s.Log,
		readers:  &s.readers,
		sendHeld: s.sendHeld,
	})

	cl.ID = id
	cl.Net.Listener = listener

	if inline { // inline clients bypass acl and some validity checks.
		cl.Net.Inline = true
		// By default, we don't want to restrict developer publishes,
		// but if you do, reset this after creating inline client.
		cl.State.Inflight.ResetReceiveQuota(math.MaxInt32)
	}

	return cl
}

// AddHook attaches a new Hook to the server. Ideally, this should be called
// before the server is started with s.Serve().
func (s *Server) AddHook(hook Hook, config any) error {
	nl := s.Log.With("hook", hook.ID())
	hook.SetOpts(nl, &HookOptions{
		Capabilities: s.Options.Capabilities,
	})

	s.Log.Info("added hook", "hook", hook.ID())
	return s.hooks.Add(hook, config)
}

// AddHooksFromConfig adds hooks to the server which were specified in the hooks config (usually from a config file).
// New built-in hooks should be added to this list.
func (s *Server) AddHooksFromConfig(hooks []HookLoadConfig) error {
	for _, h := range hooks {
		if err := s.AddHook(h.Hook, h.Config); err != nil {
			return err
		}
	}
	return nil
}

// AddListener adds a new network listener to the server, for receiving incoming client connections.
func (s *Server) AddListener(l listeners.Listener) error {
	if _, ok := s.Listeners.Get(l.ID()); ok {
		return ErrListenerIDExists
	}

	nl := s.Log.With(slog.String("listener", l.ID()))
	err := l.Init(nl)
	if err != nil {
		return err
	}

	s.Listeners.Add(l)

	s.Log.Info("attached listener", "id", l.ID(), "protocol", l.Protocol(), "address", l.Address())
	return nil
}

// AddListenersFromConfig adds listeners to the server which were specified in the listeners config (usually from a config file).
// New built-in listeners should be added to this list.
func (s *Server) AddListenersFromConfig(configs []listeners.Config) error {
	for _, conf := range configs {
		var l listeners.Listener
		switch strings.ToLower(conf.Type) {
		case listeners.TypeTCP:
			l = listeners.NewTCP(conf)
		case listeners.TypeWS:
			l = listeners.NewWebsocket(conf)
		case listeners.TypeUnix:
			l = listeners.NewUnixSock(conf)
		case listeners.TypeHealthCheck:
			l = listeners.NewHTTPHealthCheck(conf)
		case listeners.TypeSysInfo:
			l = listeners.NewHTTPStats(conf, s.Info)
		case listeners.TypeMock:
			l = listeners.NewMockListener(conf.ID, conf.Address)
		default:
			s.Log.Error("listener type unavailable by config", "listener", conf.Type)
			continue
		}
		if err := s.AddListener(l); err != nil {
			return err
		}
	}
	return nil
}

// Serve starts the event loops responsible for establishing client connections
// on all attached listeners, publishing the system topics, and starting all hooks.
func (s *Server) Serve() error {
	s.Log.Info("mochi mqtt starting", "version", Version)
	defer s.Log.Info("mochi mqtt server started")

	if len(s.Options.Listeners) > 0 {
		err := s.AddListenersFromConfig(s.Options.Listeners)
		if err != nil {
			return err
		}
	}

	if len(s.Options.Hooks) > 0 {
		err := s.AddHooksFromConfig(s.Options.Hooks)
		if err != nil {
			return err
		}
	}

	if s.hooks.Provides(
		StoredClients,
		StoredInflightMessages,
		StoredRetainedMessages,
		StoredSubscriptions,
		StoredSysInfo,
	) {
		err := s.readStore()
		if err != nil {
			return err
		}
	}

	go s.eventLoop()                            // spin up event loop for issuing $SYS values and closing server.
	s.Listeners.ServeAll(s.EstablishConnection) // start listening on all listeners.
	s.publishSysTopics()                        // begin publishing $SYS system values.
	s.hooks.OnStarted()

	return nil
}

// eventLoop loops forever, running various server housekeeping methods at different intervals.
func (s *Server) eventLoop() {
	s.Log.Debug("system event loop started")
	defer s.Log.Debug("system event loop halted")

	for {
		select {
		case <-s.done:
			s.loop.sysTopics.Stop()
			return
		case <-s.loop.sysTopics.C:
			s.publishSysTopics()
		case <-s.loop.clientExpiry.C:
			s.clearExpiredClients(time.Now().Unix())
		case <-s.loop.retainedExpiry.C:
			s.clearExpiredRetainedMessages(time.Now().Unix())
		case <-s.loop.willDelaySend.C:
			s.sendDelayedLWT(time.Now().Unix())
		case <-s.loop.inflightExpiry.C:
			s.clearExpiredInflights(time.Now().Unix())
		}
	}
}

// EstablishConnection establishes a new client when a listener accepts a new connection.
// It returns when the client disconnects, or, with Options.ReadWaiter set, as soon as
// the client waits for its next packet through the ReadWaiter (nil): its packets are
// then read on goroutines started as they arrive, and the connection is closed when
// the client ends.
func (s *Server) EstablishConnection(listener string, c net.Conn) error {
	cl := s.NewClient(c, listener, "", false)
	return s.attachClient(cl, listener)
}

// attachClient validates an incoming client connection and if viable, attaches the client
// to the server, performs session housekeeping, and reads incoming packets.
func (s *Server) attachClient(cl *Client, listener string) error {
	if !s.Listeners.AddClient() { // the server is closing
		cl.Stop(packets.ErrServerShuttingDown)
		return packets.ErrServerShuttingDown
	}

	connected, err := s.handshake(cl, listener)
	if err != nil {
		if connected {
			// Accepted (OnConnect and the authentication hooks passed, the
			// client is in the client map), then lost before its CONNACK
			// or its resent messages were written: it ends as any
			// connection does, its hooks told (edgechat patch 41). It
			// ended with no OnDisconnect, and hooks kept its state.
			s.clientDisconnected(cl, listener, err)
		}
		s.detachClient(cl, connected)
		return err
	}

	if s.Options.ReadWaiter != nil {
		return s.readWaiting(cl, listener, connected)
	}

	err = cl.Read(s.receivePacket)
	s.clientDisconnected(cl, listener, err)
	s.detachClient(cl, connected)
	return err
}

// detachClient is the end of attachClient: the client's connection is
// closed and it is no longer counted.
func (s *Server) detachClient(cl *Client, connected bool) {
	if connected {
		atomic.AddInt64(&s.Info.ClientsConnected, -1)
	}
	cl.Stop(nil)
	s.Listeners.ClientsWg.Done()
}

// clientDisconnected ends the session of a client whose Read loop has
// returned with err (nil for a DISCONNECT). It is not part of attachClient,
// whose frame stays on the stack for the life of the connection: see
// readAndHandle.
//
//go:noinline
func (s *Server) clientDisconnected(cl *Client, listener string, err error) {
	var code packets.Code
	if err != nil && errors.As(err, &code) && code.Code >= packets.ErrUnspecifiedError.Code &&
		cl.Properties.ProtocolVersion == 5 && !cl.Closed() {
		// The read loop refused a packet (too large, malformed): the
		// client is told why before the connection closes, as for a
		// packet refused once read (receivePacket) (edgechat patch 54).
		_ = s.DisconnectClient(cl, code)
	}
	if err != nil {
		s.sendLWT(cl)
		cl.Stop(err)
	} else {
		cl.Properties.Will = Will{} // [MQTT-3.14.4-3] [MQTT-3.1.2-10]
	}
	s.Log.Debug("client disconnected", "error", err, "client", cl.ID, "remote", cl.Net.Remote, "listener", listener)

	expire := (cl.Properties.ProtocolVersion == 5 && cl.Properties.Props.SessionExpiryInterval == 0) || (cl.Properties.ProtocolVersion < 5 && cl.Properties.Clean)
	s.hooks.OnDisconnect(cl, err, expire)

	// A takeover (inheritClientSession) may be under way on another
	// goroutine: it holds sessionEnd while it disconnects this client and
	// marks it taken over, so the session ends either wholly before the
	// takeover looks at it or not at all. Without it, this client could
	// pass the check, and its unsubscribes and its removal from the client
	// map then land after the new client subscribed and was added: the new
	// client lost its subscriptions or its map entry, and received nothing.
	cl.State.sessionEnd.Lock()
	defer cl.State.sessionEnd.Unlock()
	if expire && !cl.IsTakenOver() {
		cl.ClearInflights()
		s.UnsubscribeClient(cl)
		s.Clients.deleteClient(cl) // [MQTT-4.1.0-2] ![MQTT-3.1.2-23]
	}
}

// handshake runs connectClient on a short-lived goroutine of its own and
// waits for it. The handshake can use a deep stack (the hooks authenticate
// the client, restore its session, ...), and a goroutine's stack only
// shrinks back, by halves, at garbage collections; the connection's own
// goroutine, which then idles in Read for the life of the connection, keeps
// the small stack it started with.
//
//go:noinline
func (s *Server) handshake(cl *Client, listener string) (connected bool, err error) {
	type result struct {
		connected bool
		err       error
	}
	done := make(chan result, 1)
	go func() {
		connected, err := s.connectClient(cl, listener)
		done <- result{connected, err}
	}()
	r := <-done
	return r.connected, r.err
}

// connectClient reads and validates the client's connection packet,
// authenticates it, establishes its session and acknowledges it. connected
// reports whether the client was counted in Info.ClientsConnected (the
// caller uncounts it when the client leaves).
//
//go:noinline
func (s *Server) connectClient(cl *Client, listener string) (connected bool, err error) {
	pk, err := s.readConnectionPacket(cl)
	if err != nil {
		return false, fmt.Errorf("read connection: %w", err)
	}

	cl.ParseConnect(listener, pk)
	if atomic.LoadInt64(&s.Info.ClientsConnected) >= s.Options.Capabilities.MaximumClients {
		if cl.Properties.ProtocolVersion < 5 {
			s.SendConnack(cl, packets.ErrServerUnavailable, false, nil)
		} else {
			s.SendConnack(cl, packets.ErrServerBusy, false, nil)
		}

		return false, packets.ErrServerBusy
	}

	code := s.validateConnect(cl, pk) // [MQTT-3.1.4-1] [MQTT-3.1.4-2]
	if code != packets.CodeSuccess {
		if err := s.SendConnack(cl, code, false, nil); err != nil {
			return false, fmt.Errorf("invalid connection send ack: %w", err)
		}
		return false, code // [MQTT-3.2.2-7] [MQTT-3.1.4-6]
	}

	err = s.hooks.OnConnect(cl, pk)
	if err != nil {
		return false, err
	}

	cl.refreshDeadline(cl.State.Keepalive)
	if !s.hooks.OnConnectAuthenticate(cl, pk) { // [MQTT-3.1.4-2]
		err := s.SendConnack(cl, packets.ErrBadUsernameOrPassword, false, nil)
		if err != nil {
			return false, fmt.Errorf("invalid connection send ack: %w", err)
		}

		return false, packets.ErrBadUsernameOrPassword
	}

	atomic.AddInt64(&s.Info.ClientsConnected, 1)

	s.hooks.OnSessionEstablish(cl, pk)

	// Until its CONNACK is sent, a QoS>0 message delivered to the client
	// (found in the client map, or handed on by the session it takes
	// over) is stored in its inflight messages and sent with them below,
	// never written before the CONNACK.
	cl.State.handshaking.Store(true)
	// Taking the session over, entering the client map and the CONNACK
	// are one step per client ID (edgechat patch 55): two handshakes of one ID at once
	// both found no client to take over, both entered the map, the
	// second replacing the first, and the first stayed connected,
	// receiving nothing, until its end unsubscribed the filters the two
	// share from the client that remained.
	// Held until the CONNACK is written, so that a handshake taking this
	// one's session over writes its DISCONNECT after it, never first.
	unlock := s.handovers.lock(cl.ID)
	sessionPresent := s.inheritClientSession(pk, cl)
	s.Clients.Add(cl) // [MQTT-4.1.0-1]

	err = s.SendConnack(cl, code, sessionPresent, nil) // [MQTT-3.1.4-5] [MQTT-3.2.0-1] [MQTT-3.2.0-2] &[MQTT-3.14.0-1]
	unlock()
	if err != nil {
		return true, fmt.Errorf("ack connection packet: %w", err)
	}

	if pk.Connect.Clean || !sessionPresent {
		// A clean start ended the session whose will waited for its
		// delay [MQTT-3.1.2-4]: the will goes now (edgechat patch 44).
		// So does the will of a session not resumed without one (a lost
		// session, or one that ended meanwhile): only a connection to
		// the same session cancels it [MQTT-3.1.3-9] (edgechat patch 49).
		s.publishEndedSessionWill(cl.ID)
	} else {
		s.loop.willDelayed.Delete(cl.ID) // [MQTT-3.1.3-9]
	}

	// The session's inflight messages and those delivered meanwhile, taken
	// under sessionEnd as deliveries store theirs: each is either taken
	// here or sees the handshake over and is sent by its publisher. The
	// writes happen after the lock (a slow socket must not hold up
	// publishers).
	// Those held back by the send quota stay held and go out as
	// acknowledgements free it (sendHeld); those sent before take their
	// quota again, as the client has not acknowledged them.
	//
	// The handshake ends only once they are written (edgechat patch 33):
	// until then a delivery is stored, not written, so none overtakes a
	// message resent here (it ended before the resend, and a delivery
	// made meanwhile went out first). Each round resends what was stored
	// since the last one; the round that finds nothing new under the lock
	// ends the handshake.
	resent := map[inflightKey]bool{}
	for first := true; ; first = false {
		cl.State.sessionEnd.Lock()
		pending := cl.State.Inflight.GetAll(false)
		if first {
			cl.State.Inflight.RecountSendQuota()
		}
		sent := pending[:0]
		for _, p := range pending {
			if p.Expiry >= 0 && !resent[keyOf(p)] {
				sent = append(sent, p)
			}
		}
		if len(sent) == 0 {
			cl.State.handshaking.Store(false)
			cl.State.sessionEnd.Unlock()
			break
		}
		cl.State.sessionEnd.Unlock()
		for _, p := range sent {
			resent[keyOf(p)] = true
		}
		if err := cl.resendInflight(sent); err != nil {
			return true, fmt.Errorf("resend inflight: %w", err)
		}
	}
	s.sendHeld(cl)

	s.hooks.OnSessionEstablished(cl, pk)

	return true, nil
}

// readConnectionPacket reads the first incoming header for a connection, and if
// acceptable, returns the valid connection packet.
func (s *Server) readConnectionPacket(cl *Client) (pk packets.Packet, err error) {
	fh := new(packets.FixedHeader)
	err = cl.ReadFixedHeader(fh)
	if err != nil {
		return
	}

	if fh.Type != packets.Connect {
		return pk, packets.ErrProtocolViolationRequireFirstConnect // [MQTT-3.1.0-1]
	}

	pk, err = cl.ReadPacket(fh)
	if err != nil {
		return
	}

	return
}

// receivePacket processes an incoming packet for a client, and issues a disconnect to the client
// if an error has occurred (if mqtt v5).
func (s *Server) receivePacket(cl *Client, pk packets.Packet) error {
	err := s.processPacket(cl, pk)
	if err != nil {
		if code, ok := err.(packets.Code); ok &&
			cl.Properties.ProtocolVersion == 5 &&
			code.Code >= packets.ErrUnspecifiedError.Code {
			_ = s.DisconnectClient(cl, code)
		}

		s.Log.Warn("error processing packet", "error", err, "client", cl.ID, "listener", cl.Net.Listener, "pk", pk)

		return err
	}

	return nil
}

// validateConnect validates that a connect packet is compliant.
func (s *Server) validateConnect(cl *Client, pk packets.Packet) packets.Code {
	code := pk.ConnectValidate() // [MQTT-3.1.4-1] [MQTT-3.1.4-2]
	if code != packets.CodeSuccess {
		return code
	}

	if cl.Properties.ProtocolVersion < 5 && !pk.Connect.Clean && pk.Connect.ClientIdentifier == "" {
		return packets.ErrClientIdentifierNotValid // 3.1.1: 2, identifier rejected [MQTT-3.1.3-8] (edgechat patch 43)
	}

	if cl.Properties.ProtocolVersion < s.Options.Capabilities.MinimumProtocolVersion {
		return packets.ErrUnsupportedProtocolVersion // [MQTT-3.1.2-2]
	} else if cl.Properties.Will.Qos > s.Options.Capabilities.MaximumQos {
		return packets.ErrQosNotSupported // [MQTT-3.2.2-12]
	} else if cl.Properties.Will.Retain && s.Options.Capabilities.RetainAvailable == 0x00 {
		return packets.ErrRetainNotSupported // [MQTT-3.2.2-13]
	}

	return code
}

// inheritClientSession inherits the state of an existing client sharing the same
// connection ID. If clean is true, the state of any previously existing client
// session is abandoned.
func (s *Server) inheritClientSession(pk packets.Packet, cl *Client) bool {
	if existing, ok := s.Clients.Get(cl.ID); ok {
		existing.State.sessionEnd.Lock() // see clientDisconnected
		defer existing.State.sessionEnd.Unlock()
		if current, ok := s.Clients.Get(cl.ID); !ok || current != existing {
			return false // its session ended (expired) while we waited: nothing to inherit
		}
		_ = s.DisconnectClient(existing, packets.ErrSessionTakenOver) // [MQTT-3.1.4-3]
		// A session that lost a delivery (LoseSession, edgechat patch 45)
		// is not resumed either: the client starts anew, told so.
		if pk.Connect.Clean || existing.State.sessionLost.Load() ||
			(existing.Properties.Clean && existing.Properties.ProtocolVersion < 5) { // [MQTT-3.1.2-4] [MQTT-3.1.4-4]
			s.UnsubscribeClient(existing)
			existing.ClearInflights()
			existing.State.isTakenOver.Store(true) // only set isTakenOver after unsubscribe has occurred
			return false                           // [MQTT-3.2.2-3]
		}

		existing.State.isTakenOver.Store(true)
		// QoS>0 deliveries to the old client from here on go to the new
		// one (publishToClientVia): a publisher that looked the old
		// client up before the new one replaced it in the client map
		// would otherwise store its message where nothing sends it.
		existing.State.successor = cl
		if existing.State.Inflight.Len() > 0 {
			cl.State.Inflight = existing.State.Inflight.Clone() // [MQTT-3.1.2-5]
			// Topic aliases were the old connection's [MQTT-3.3.2-7]
			// (edgechat patch 36).
			cl.State.Inflight.forgetTopicAliases()
			if cl.State.Inflight.maximumReceiveQuota == 0 && cl.ops.options.Capabilities.ReceiveMaximum != 0 {
				cl.State.Inflight.ResetReceiveQuota(int32(cl.ops.options.Capabilities.ReceiveMaximum)) // server receive max per client
				cl.State.Inflight.ResetSendQuota(int32(cl.Properties.Props.ReceiveMaximum))            // client receive max
			}
		}

		for _, sub := range existing.State.Subscriptions.GetAll() {
			existed := !s.Topics.Subscribe(cl.ID, sub) // [MQTT-3.8.4-3]
			if !existed {
				atomic.AddInt64(&s.Info.Subscriptions, 1)
			}
			cl.State.Subscriptions.Add(sub.Filter, sub)
		}

		// Clean the state of the existing client to prevent sequential take-overs
		// from increasing memory usage by inflights + subs * client-id.
		// Its inflight messages are the new client's now: handed over,
		// not dropped (edgechat patch 48).
		s.UnsubscribeClient(existing)
		existing.handInflightsOver()

		s.Log.Debug("session taken over", "client", cl.ID, "old_remote", existing.Net.Remote, "new_remote", cl.Net.Remote)

		return true // [MQTT-3.2.2-3]
	}

	if atomic.LoadInt64(&s.Info.ClientsConnected) > atomic.LoadInt64(&s.Info.ClientsMaximum) {
		atomic.AddInt64(&s.Info.ClientsMaximum, 1)
	}

	return false // [MQTT-3.2.2-2]
}

// SendConnack returns a Connack packet to a client.
func (s *Server) SendConnack(cl *Client, reason packets.Code, present bool, properties *packets.Properties) error {
	if properties == nil {
		properties = &packets.Properties{
			ReceiveMaximum: s.Options.Capabilities.ReceiveMaximum,
		}
	}

	properties.ReceiveMaximum = s.Options.Capabilities.ReceiveMaximum // 3.2.2.3.3 Receive Maximum
	if cl.State.ServerKeepalive {                                     // You can set this dynamically using the OnConnect hook.
		properties.ServerKeepAlive = cl.State.Keepalive // [MQTT-3.1.2-21]
		properties.ServerKeepAliveFlag = true
	}

	if reason.Code >= packets.ErrUnspecifiedError.Code {
		if cl.Properties.ProtocolVersion < 5 {
			if v3reason, ok := packets.V5CodesToV3[reason]; ok { // NB v3 3.2.2.3 Connack return codes
				reason = v3reason
			}
		}

		properties.ReasonString = reason.Reason
		ack := packets.Packet{
			FixedHeader: packets.FixedHeader{
				Type: packets.Connack,
			},
			SessionPresent: false,       // [MQTT-3.2.2-6]
			ReasonCode:     reason.Code, // [MQTT-3.2.2-8]
			Properties:     *properties,
		}
		return cl.WritePacket(ack)
	}

	if s.Options.Capabilities.MaximumQos < 2 {
		properties.MaximumQos = s.Options.Capabilities.MaximumQos // [MQTT-3.2.2-9]
		properties.MaximumQosFlag = true
	}

	if cl.Properties.Props.AssignedClientID != "" {
		properties.AssignedClientID = cl.Properties.Props.AssignedClientID // [MQTT-3.1.3-7] [MQTT-3.2.2-16]
	}

	if cl.Properties.Props.SessionExpiryInterval > s.Options.Capabilities.MaximumSessionExpiryInterval {
		properties.SessionExpiryInterval = s.Options.Capabilities.MaximumSessionExpiryInterval
		properties.SessionExpiryIntervalFlag = true
		cl.Properties.Props.SessionExpiryInterval = properties.SessionExpiryInterval
		cl.Properties.Props.SessionExpiryIntervalFlag = true
	}

	ack := packets.Packet{
		FixedHeader: packets.FixedHeader{
			Type: packets.Connack,
		},
		SessionPresent: present,
		ReasonCode:     reason.Code, // [MQTT-3.2.2-8]
		Properties:     *properties,
	}
	return cl.WritePacket(ack)
}

// processPacket processes an inbound packet for a client. Since the method is
// typically called as a goroutine, errors are primarily for test checking purposes.
func (s *Server) processPacket(cl *Client, pk packets.Packet) error {
	var err error

	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = s.processConnect(cl, pk)
	case packets.Disconnect:
		err = s.processDisconnect(cl, pk)
	case packets.Pingreq:
		err = s.processPingreq(cl, pk)
	case packets.Publish:
		code := pk.PublishValidate(s.Options.Capabilities.TopicAliasMaximum)
		if code != packets.CodeSuccess {
			return code
		}
		err = s.processPublish(cl, pk)
	case packets.Puback:
		err = s.processPuback(cl, pk)
	case packets.Pubrec:
		err = s.processPubrec(cl, pk)
	case packets.Pubrel:
		err = s.processPubrel(cl, pk)
	case packets.Pubcomp:
		err = s.processPubcomp(cl, pk)
	case packets.Subscribe:
		code := pk.SubscribeValidate()
		if code != packets.CodeSuccess {
			return code
		}
		err = s.processSubscribe(cl, pk)
	case packets.Unsubscribe:
		code := pk.UnsubscribeValidate()
		if code != packets.CodeSuccess {
			return code
		}
		err = s.processUnsubscribe(cl, pk)
	case packets.Auth:
		code := pk.AuthValidate()
		if code != packets.CodeSuccess {
			return code
		}
		err = s.processAuth(cl, pk)
	default:
		return fmt.Errorf("no valid packet available; %v", pk.FixedHeader.Type)
	}

	if s.hooks.Provides(OnPacketProcessed) { // else no copy of the packet through the call
		s.hooks.OnPacketProcessed(cl, pk, err)
	}
	if err != nil {
		return err
	}

	s.sendHeld(cl) // an acknowledgement may have freed send quota

	return nil
}

// sendHeld sends the messages held back by the client's Receive Maximum
// while it has send quota, oldest first. Whoever frees send quota or
// holds a message back calls it afterwards, so a held message never
// waits while quota is free: the last of them to look sees either no
// held message or no quota. A released message stays inflight as an
// ordinary one until its PUBACK/PUBCOMP gives the quota back.
//
// A released message goes out in order with the deliveries before it
// (edgechat patch 33): written at once only when nothing is queued or
// being written for the client, else queued behind them, and released
// and written under the client's heldOut, so that two goroutines
// releasing cannot write theirs in reverse. It was written through
// WritePacket, which put it ahead of deliveries still in the queue, and
// which blocked its caller (a publisher, the client's read loop) on a
// socket that does not drain.
func (s *Server) sendHeld(cl *Client) {
	inflight := cl.State.Inflight
	cl.heldOut.Lock()
	defer cl.heldOut.Unlock()
	for inflight.Held() > 0 {
		if !inflight.TakeSendQuota() {
			return
		}
		next, ok := inflight.ReleaseHeld()
		if !ok { // another goroutine released it: look again
			inflight.IncreaseSendQuota()
			continue
		}
		s.writeReleased(cl, next)
	}
}

// writeReleased writes a message released from the held ones (sendHeld)
// the way publishToClientVia writes a delivery. A client whose queue is
// full loses it as it would lose a delivery (counted, its quota given
// back); a closed one keeps it inflight, resent when the session
// resumes.
func (s *Server) writeReleased(cl *Client, pk packets.Packet) {
	if cl.Net.Conn == nil || cl.Closed() {
		return
	}
	if cl.writeDirect(pk, nil) {
		return
	}
	queued := pk
	if !cl.enqueueOutbound(&queued) {
		atomic.AddInt64(&s.Info.MessagesDropped, 1)
		cl.ops.hooks.OnPublishDropped(cl, pk)
		if cl.State.Inflight.Delete(pk.PacketID) {
			atomic.AddInt64(&s.Info.Inflight, -1)
		}
		cl.State.Inflight.IncreaseSendQuota()
	}
}

// processConnect processes a Connect packet. The packet cannot be used to establish
// a new connection on an existing connection. See EstablishConnection instead.
func (s *Server) processConnect(cl *Client, _ packets.Packet) error {
	s.sendLWT(cl)
	return packets.ErrProtocolViolationSecondConnect // [MQTT-3.1.0-2]
}

// processPingreq processes a Pingreq packet.
func (s *Server) processPingreq(cl *Client, _ packets.Packet) error {
	return cl.WritePacket(packets.Packet{
		FixedHeader: packets.FixedHeader{
			Type: packets.Pingresp, // [MQTT-3.12.4-1]
		},
	})
}

// Publish publishes a publish packet into the broker as if it were sent from the specified client.
// This is a convenience function which wraps InjectPacket. As such, this method can publish packets
// to any topic (including $SYS) and bypass ACL checks. The qos byte is used for limiting the
// outbound qos (mqtt v5) rather than issuing to the broker (we assume qos 2 complete).
func (s *Server) Publish(topic string, payload []byte, retain bool, qos byte) error {
	if !s.Options.InlineClient {
		return ErrInlineClientNotEnabled
	}

	return s.InjectPacket(s.inlineClient, packets.Packet{
		FixedHeader: packets.FixedHeader{
			Type:   packets.Publish,
			Qos:    qos,
			Retain: retain,
		},
		TopicName: topic,
		Payload:   payload,
		PacketID:  uint16(qos), // we never process the inbound qos, but we need a packet id for validity checks.
	})
}

// Subscribe adds an inline subscription for the specified topic filter and subscription identifier
// with the provided handler function.
func (s *Server) Subscribe(filter string, subscriptionId int, handler InlineSubFn) error {
	if !s.Options.InlineClient {
		return ErrInlineClientNotEnabled
	}

	if handler == nil {
		return packets.ErrInlineSubscriptionHandlerInvalid
	}

	if !IsValidFilter(filter, false) {
		return packets.ErrTopicFilterInvalid
	}

	subscription := packets.Subscription{
		Identifier: subscriptionId,
		Filter:     filter,
	}

	pk := s.hooks.OnSubscribe(s.inlineClient, packets.Packet{ // subscribe like a normal client.
		Origin:      s.inlineClient.ID,
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe},
		Filters:     packets.Subscriptions{subscription},
	})

	inlineSubscription := InlineSubscription{
		Subscription: subscription,
		Handler:      handler,
	}

	s.Topics.InlineSubscribe(inlineSubscription)
	s.hooks.OnSubscribed(s.inlineClient, pk, []byte{packets.CodeSuccess.Code})

	// Handling retained messages.
	for _, pkv := range s.Topics.Messages(filter) { // [MQTT-3.8.4-4]
		handler(s.inlineClient, inlineSubscription.Subscription, pkv)
	}
	return nil
}

// Unsubscribe removes an inline subscription for the specified subscription and topic filter.
// It allows you to unsubscribe a specific subscription from the internal subscription
// associated with the given topic filter.
func (s *Server) Unsubscribe(filter string, subscriptionId int) error {
	if !s.Options.InlineClient {
		return ErrInlineClientNotEnabled
	}

	if !IsValidFilter(filter, false) {
		return packets.ErrTopicFilterInvalid
	}

	pk := s.hooks.OnUnsubscribe(s.inlineClient, packets.Packet{
		Origin:      s.inlineClient.ID,
		FixedHeader: packets.FixedHeader{Type: packets.Unsubscribe},
		Filters: packets.Subscriptions{
			{
				Identifier: subscriptionId,
				Filter:     filter,
			},
		},
	})

	s.Topics.InlineUnsubscribe(subscriptionId, filter)
	s.hooks.OnUnsubscribed(s.inlineClient, pk)
	return nil
}

// InjectPacket injects a packet into the broker as if it were sent from the specified client.
// InlineClients using this method can publish packets to any topic (including $SYS) and bypass ACL checks.
func (s *Server) InjectPacket(cl *Client, pk packets.Packet) error {
	pk.ProtocolVersion = cl.Properties.ProtocolVersion

	err := s.processPacket(cl, pk)
	if err != nil {
		return err
	}

	atomic.AddInt64(&cl.ops.info.PacketsReceived, 1)
	if pk.FixedHeader.Type == packets.Publish {
		atomic.AddInt64(&cl.ops.info.MessagesReceived, 1)
	}

	return nil
}

// processPublish processes a Publish packet.
func (s *Server) processPublish(cl *Client, pk packets.Packet) error {
	// Receive Maximum counts QoS 1 and 2 publishes only ([MQTT-3.3.4-9]).
	if pk.FixedHeader.Qos > 0 && atomic.LoadInt32(&cl.State.Inflight.receiveQuota) == 0 {
		return s.DisconnectClient(cl, packets.ErrReceiveMaximum) // ~[MQTT-3.3.4-7] ~[MQTT-3.3.4-8]
	}

	// The alias is set (or resolved) before the checks: a refused
	// publish that names a topic with an alias still sets it, as the
	// client did on its side [MQTT-3.3.2-12], and the checks see the
	// topic an alias-only publish goes to (edgechat patch 51).
	if pk.Properties.TopicAliasFlag && pk.Properties.TopicAlias > 0 { // [MQTT-3.3.2-11]
		pk.TopicName = cl.State.TopicAliases.Inbound.Set(pk.Properties.TopicAlias, pk.TopicName)
	}

	// A topic no client may publish to ($SYS) is refused as the ACL
	// refuses (edgechat patch 53): dropped without an answer, a QoS>0
	// publish was never acknowledged, and the client waited for good.
	if !cl.Net.Inline && (!IsValidFilter(pk.TopicName, true) || !s.hooks.OnACLCheck(cl, pk.TopicName, true)) {
		if pk.FixedHeader.Qos == 0 {
			return nil
		}

		if cl.Properties.ProtocolVersion != 5 {
			return s.DisconnectClient(cl, packets.ErrNotAuthorized)
		}

		ackType := packets.Puback
		if pk.FixedHeader.Qos == 2 {
			ackType = packets.Pubrec
		}

		// The hooks may say why (edgechat patch 61).
		code := packets.ErrNotAuthorized
		if reason := s.hooks.ACLRefusalReason(cl, pk.TopicName); reason != "" {
			code.Reason = reason
		}
		ack := s.buildAck(pk.PacketID, ackType, 0, pk.Properties, code)
		return cl.WritePacket(ack)
	}

	pk.Origin = cl.ID
	pk.Created = time.Now().Unix()

	if expiry := minimum(s.Options.Capabilities.MaximumMessageExpiryInterval,
		int64(pk.Properties.MessageExpiryInterval)); expiry > 0 {
		pk.Expiry = pk.Created + expiry
	}

	// A QoS 0 publish has no packet ID [MQTT-2.2.1-2] (PublishValidate),
	// and no inflight message has ID 0: nothing to look up.
	if !cl.Net.Inline && pk.FixedHeader.Qos > 0 {
		if pki, ok := cl.State.Inflight.GetInbound(pk.PacketID); ok {
			if pki.FixedHeader.Type == packets.Pubrec { // [MQTT-4.3.3-10]
				// Awaiting its PUBREL: a resend (DUP) of that publish, as
				// after a reconnection that lost the PUBREC, is
				// acknowledged again and not delivered again; another
				// publish with the identifier is refused.
				code := packets.ErrPacketIdentifierInUse
				if pk.FixedHeader.Dup {
					code = packets.CodeSuccess
				}
				ack := s.buildAck(pk.PacketID, packets.Pubrec, 0, pk.Properties, code)
				return cl.WritePacket(ack)
			}
			if ok := cl.State.Inflight.DeleteInbound(pk.PacketID); ok { // [MQTT-4.3.2-5]
				atomic.AddInt64(&s.Info.Inflight, -1)
			}
		}
	}

	if pk.FixedHeader.Qos > s.Options.Capabilities.MaximumQos {
		pk.FixedHeader.Qos = s.Options.Capabilities.MaximumQos // [MQTT-3.2.2-9] Reduce qos based on server max qos capability
	}

	pkx, err := s.hooks.OnPublish(cl, pk)
	if err == nil {
		pk = pkx
	} else if errors.Is(err, packets.ErrRejectPacket) {
		return nil
	} else if errors.Is(err, packets.CodeSuccessIgnore) {
		pk.Ignore = true
	} else if cl.Properties.ProtocolVersion == 5 && pk.FixedHeader.Qos > 0 && errors.As(err, new(packets.Code)) {
		err = cl.WritePacket(s.buildAck(pk.PacketID, packets.Puback, 0, pk.Properties, err.(packets.Code)))
		if err != nil {
			return err
		}
		return nil
	}

	if pk.FixedHeader.Retain { // [MQTT-3.3.1-5] ![MQTT-3.3.1-8]
		s.retainMessage(cl, pk)
	}

	// If it's inlineClient, it can't handle PUBREC and PUBREL.
	// When it publishes a package with a qos > 0, the server treats
	// the package as qos=0, and the client receives it as qos=1 or 2.
	if pk.FixedHeader.Qos == 0 || cl.Net.Inline {
		s.publishToSubscribers(pk)
		s.hooks.OnPublished(cl, pk)
		return nil
	}

	cl.State.Inflight.DecreaseReceiveQuota()
	ack := s.buildAck(pk.PacketID, packets.Puback, 0, pk.Properties, packets.QosCodes[pk.FixedHeader.Qos]) // [MQTT-4.3.2-4]
	if pk.FixedHeader.Qos == 2 {
		ack = s.buildAck(pk.PacketID, packets.Pubrec, 0, pk.Properties, packets.CodeSuccess) // [MQTT-3.3.4-1] [MQTT-4.3.3-8]
	}

	// The acknowledgement waits in the session (a PUBREC until the
	// client's PUBREL) without the publish's properties (edgechat patch
	// 57): the exchange needs its packet identifier only, and their
	// strings share the publish's buffer, which they kept whole (a user
	// property can fill it) for as long as the client withheld its PUBREL.
	kept := ack
	kept.Properties = packets.Properties{}
	if ok := cl.State.Inflight.Set(kept); ok {
		atomic.AddInt64(&s.Info.Inflight, 1)
		s.hooks.OnQosPublish(cl, kept, kept.Created, 0)
	}

	err = cl.WritePacket(ack)
	if err != nil {
		return err
	}

	if pk.FixedHeader.Qos == 1 {
		if ok := cl.State.Inflight.DeleteInbound(ack.PacketID); ok {
			atomic.AddInt64(&s.Info.Inflight, -1)
		}
		cl.State.Inflight.IncreaseReceiveQuota()
		s.hooks.OnQosComplete(cl, ack)
	}

	s.publishToSubscribers(pk)
	s.hooks.OnPublished(cl, pk)

	return nil
}

// retainMessage adds a message to a topic, and if a persistent store is provided,
// adds the message to the store to be reloaded if necessary.
func (s *Server) retainMessage(cl *Client, pk packets.Packet) {
	if s.Options.Capabilities.RetainAvailable == 0 || pk.Ignore {
		return
	}

	out := pk.Copy(false)
	r := s.Topics.RetainMessage(out)
	s.hooks.OnRetainMessage(cl, pk, r)
	atomic.StoreInt64(&s.Info.Retained, int64(s.Topics.Retained.Len()))
}

// publishToSubscribers publishes a publish packet to all subscribers with matching topic filters.
func (s *Server) publishToSubscribers(pk packets.Packet) {
	if pk.Ignore {
		return
	}

	if pk.Created == 0 {
		pk.Created = time.Now().Unix()
	}

	if pk.Expiry == 0 {
		if expiry := minimum(s.Options.Capabilities.MaximumMessageExpiryInterval,
			int64(pk.Properties.MessageExpiryInterval)); expiry > 0 {
			pk.Expiry = pk.Created + expiry
		}
	}

	subscribers := s.Topics.subscribersOf(pk.TopicName)
	reuse := len(subscribers.Shared) == 0 // else hooks are handed it, and may keep it
	if len(subscribers.Shared) > 0 {
		// Hooks and the selection write to these.
		if subscribers.SharedSelected == nil {
			subscribers.SharedSelected = map[string]packets.Subscription{}
		}
		if subscribers.Subscriptions == nil {
			subscribers.Subscriptions = map[string]packets.Subscription{}
		}
		subscribers = s.hooks.OnSelectSubscribers(subscribers, pk)
		if len(subscribers.SharedSelected) == 0 {
			subscribers.SelectShared()
		}
		subscribers.MergeSharedSelected()
	}

	for _, inlineSubscription := range subscribers.InlineSubscriptions {
		inlineSubscription.Handler(s.inlineClient, inlineSubscription.Subscription, pk)
	}

	var f *fanout
	if s.Options.ClientDirectWrites && len(subscribers.Subscriptions) > 0 {
		f = new(fanout)
	}
	for id, subs := range subscribers.Subscriptions {
		if cl, ok := s.Clients.Get(id); ok {
			_, err := s.publishToClientVia(cl, subs, pk, f)
			if err != nil {
				s.Log.Debug("failed publishing packet", "error", err, "client", cl.ID, "packet", pk)
			}
		}
	}
	if reuse {
		s.Topics.releaseSubscribers(subscribers)
	}
}

func (s *Server) publishToClient(cl *Client, sub packets.Subscription, pk packets.Packet) (packets.Packet, error) {
	return s.publishToClientVia(cl, sub, pk, nil)
}

// publishToClientVia is publishToClient with what the deliveries of one
// publish share (nil: nothing), see fanout.
func (s *Server) publishToClientVia(cl *Client, sub packets.Subscription, pk packets.Packet, f *fanout) (packets.Packet, error) {
	if sub.NoLocal && pk.Origin == cl.ID {
		return pk, nil // [MQTT-3.8.3-3]
	}

	var out packets.Packet
	shallow := f != nil && min(pk.FixedHeader.Qos, sub.Qos) == 0
	if shallow {
		out = publishCopy(&pk) // copied below if it is queued
	} else {
		out = pk.Copy(false)
	}
	if !s.hooks.OnACLCheck(cl, pk.TopicName, false) {
		return out, packets.ErrNotAuthorized
	}
	if !sub.FwdRetainedFlag && ((cl.Properties.ProtocolVersion == 5 && !sub.RetainAsPublished) || cl.Properties.ProtocolVersion < 5) { // ![MQTT-3.3.1-13] [v3 MQTT-3.3.1-9]
		out.FixedHeader.Retain = false // [MQTT-3.3.1-12]
	}

	if len(sub.Identifiers) > 0 { // [MQTT-3.3.4-3]
		// Only identifiers that are set: 0 (a filter subscribed without
		// one) is never encoded, and a publish to subscribers without any
		// then allocates nothing here.
		var ids []int
		for _, id := range sub.Identifiers {
			if id > 0 {
				ids = append(ids, id) // [MQTT-3.3.4-4] ![MQTT-3.3.4-5]
			}
		}
		if len(ids) > 0 {
			sort.Ints(ids)
			out.Properties.SubscriptionIdentifier = ids
		}
	}

	if out.FixedHeader.Qos > sub.Qos {
		out.FixedHeader.Qos = sub.Qos
	}

	if out.FixedHeader.Qos > s.Options.Capabilities.MaximumQos {
		out.FixedHeader.Qos = s.Options.Capabilities.MaximumQos // [MQTT-3.2.2-9]
	}

	if cl.Properties.Props.TopicAliasMaximum > 0 {
		var aliasExists bool
		out.Properties.TopicAlias, aliasExists = cl.State.TopicAliases.Outbound.Use(pk.TopicName)
		if out.Properties.TopicAlias > 0 {
			out.Properties.TopicAliasFlag = true
			if aliasExists {
				out.TopicName = ""
			}
		}
	}

	stored := false // stored as inflight, to be sent after the CONNACK
	if out.FixedHeader.Qos > 0 {
		// Under sessionEnd, ordered against a takeover of the session
		// (which moves the inflight messages to the new client) and the
		// end of the client's handshake (which sends them).
		cl.State.sessionEnd.Lock()
		if next := cl.State.successor; next != nil {
			cl.State.sessionEnd.Unlock()
			return s.publishToClientVia(next, sub, pk, f) // the session moved on
		}
		var done bool
		var err error
		out, done, err = s.storeInflight(cl, pk, out)
		if err != nil {
			// Dropped: the session's store is full (edgechat patch 45:
			// mochi only logged it, so the subscriber never learnt of
			// it). Told under sessionEnd, so that the hook may mark the
			// session lost (LoseSession) before a takeover inherits it.
			atomic.AddInt64(&s.Info.MessagesDropped, 1)
			cl.ops.hooks.OnPublishDropped(cl, pk)
		}
		stored = cl.State.handshaking.Load()
		cl.State.sessionEnd.Unlock()
		if done && err == nil && !stored {
			// Held back: an acknowledgement that freed quota after
			// storeInflight took none looked for held messages before
			// this one was.
			s.sendHeld(cl)
		}
		if done || stored {
			return out, err
		}
	}

	if cl.Net.Conn == nil || cl.Closed() {
		return out, packets.CodeDisconnect
	}

	if out.FixedHeader.Qos == 0 && cl.State.handshaking.Load() {
		// Nothing before the CONNACK [MQTT-3.2.0-1] (edgechat patch 33:
		// a session taken over or resumed is in the client map before
		// its CONNACK is written); a QoS>0 delivery waits above, a QoS 0
		// one is dropped, as at most once allows.
		atomic.AddInt64(&s.Info.MessagesDropped, 1)
		cl.ops.hooks.OnPublishDropped(cl, pk)
		return out, nil
	}

	if cl.writeDirect(out, f) {
		if out.FixedHeader.Qos > 0 && cl.State.Inflight.Held() > 0 {
			s.sendHeld(cl) // it was too large to send: its quota is free again
		}
		return out, nil
	}

	queued := out // a copy: out itself stays on the stack when written directly
	if shallow {
		queued = out.Copy(true) // its own payload and properties, as it waits in the queue
	}
	if !cl.enqueueOutbound(&queued) {
		atomic.AddInt64(&s.Info.MessagesDropped, 1)
		cl.ops.hooks.OnPublishDropped(cl, pk)
		if out.FixedHeader.Qos > 0 {
			cl.State.Inflight.Delete(out.PacketID) // packet was dropped due to irregular circumstances, so rollback inflight.
			cl.State.Inflight.IncreaseSendQuota()
			s.sendHeld(cl)
		}
		return out, packets.ErrPendingClientWritesExceeded
	}

	return out, nil
}

// storeInflight gives a QoS>0 delivery its packet ID and stores it among
// the client's inflight messages (publishToClientVia, under sessionEnd).
// done reports that the delivery ends here: refused (err), or held back
// by the client's Receive Maximum until an acknowledgement frees a slot.
func (s *Server) storeInflight(cl *Client, pk, out packets.Packet) (packets.Packet, bool, error) {
	if cl.State.Inflight.Len() >= int(s.Options.Capabilities.MaximumInflight) {
		// add hook?
		atomic.AddInt64(&s.Info.InflightDropped, 1)
		cl.storeFull() // logged once per episode (edgechat patch 47)
		return out, true, packets.ErrQuotaExceeded
	}
	cl.storeHasRoom()

	i, err := cl.NextPacketID() // [MQTT-4.3.2-1] [MQTT-4.3.3-1]
	if err != nil {
		s.hooks.OnPacketIDExhausted(cl, pk)
		atomic.AddInt64(&s.Info.InflightDropped, 1)
		s.Log.Warn("packet ids exhausted", "error", err, "client", cl.ID, "listener", cl.Net.Listener)
		return out, true, packets.ErrQuotaExceeded
	}

	out.PacketID = uint16(i) // [MQTT-2.2.1-4]

	// Held back while earlier ones are (in order) or no send quota is
	// left; the quota is taken in one step with the decision. During a
	// handshake nothing goes out yet: held, the handshake's end sends it
	// within the quota it recounts.
	inflight := cl.State.Inflight
	held := atomic.LoadInt32(&inflight.maximumSendQuota) > 0 &&
		(cl.State.handshaking.Load() || inflight.Held() > 0 || !inflight.TakeSendQuota())
	if held {
		out.Expiry = -1
	}
	// The stored copy names its topic (edgechat patch 36): out may carry
	// only its alias, and a copy sent again later (released from the held
	// ones, resent to a later connection of the session, which drops the
	// alias: forgetTopicAliases) must say its topic itself.
	stored := out
	stored.TopicName = pk.TopicName
	// The stored copy's DUP says whether it has been sent (edgechat patch
	// 46): one written now goes out again as a re-delivery [MQTT-3.3.1-1];
	// one held back, or stored for a client away or in its handshake,
	// goes out the first time without (ReleaseHeld, resendInflight).
	stored.FixedHeader.Dup = !held && !cl.State.handshaking.Load() && cl.Net.Conn != nil && !cl.Closed()
	if ok := inflight.Set(stored); ok { // [MQTT-4.3.2-3] [MQTT-4.3.3-3]
		atomic.AddInt64(&s.Info.Inflight, 1)
		s.hooks.OnQosPublish(cl, out, out.Created, 0)
	}
	if held {
		return out, true, nil
	}
	return out, false, nil
}

func (s *Server) publishRetainedToClient(cl *Client, sub packets.Subscription, existed bool) {
	if IsSharedFilter(sub.Filter) {
		return // 4.8.2 Non-normative - Shared Subscriptions - No Retained Messages are sent to the Session when it first subscribes.
	}

	if sub.RetainHandling == 1 && existed || sub.RetainHandling == 2 { // [MQTT-3.3.1-10] [MQTT-3.3.1-11]
		return
	}

	sub.FwdRetainedFlag = true
	if sub.Identifier > 0 && len(sub.Identifiers) == 0 {
		// Sent as the result of this subscription: with its identifier,
		// as publishToClient sends a live message's (edgechat patch 59).
		sub.Identifiers = map[string]int{sub.Filter: sub.Identifier} // [MQTT-3.3.4-3]
	}
	for _, pkv := range s.Topics.Messages(sub.Filter) { // [MQTT-3.8.4-4]
		s.publishRetainedCopy(cl, sub, pkv)
	}
}

// maxRetainedRecopies bounds how many times publishRetainedCopy sends a
// topic's retained message again because it changed meanwhile.
const maxRetainedRecopies = 4

// publishRetainedCopy sends a retained message to a client that has just
// subscribed, then makes sure that the copy did not leave the client with
// an older message than the topic holds (edgechat patch 32). The
// subscription is in place before the retained messages are read, so a
// publish to the topic between the read and the copy's write is delivered
// to the client live, before the older copy: a client watching a status
// (a user's presence) would keep the stale one until the next change.
// The topic's message is retained before its live delivery, so a changed
// retained message after the write means that: the current one is sent
// in turn. A client may get a message twice; it never ends on an older
// one, unless the topic changes faster than copies are written (bounded
// by maxRetainedRecopies) or was cleared meanwhile (its empty publish was
// delivered live; the copy is not taken back).
func (s *Server) publishRetainedCopy(cl *Client, sub packets.Subscription, pk packets.Packet) {
	for range maxRetainedRecopies + 1 {
		if _, err := s.publishToClient(cl, sub, pk); err != nil {
			s.Log.Debug("failed to publish retained message", "error", err, "client", cl.ID, "listener", cl.Net.Listener, "packet", pk)
			return
		}
		s.hooks.OnRetainPublished(cl, pk)
		cur, ok := s.Topics.Retained.Get(pk.TopicName)
		if !ok || cur.Created == pk.Created && bytes.Equal(cur.Payload, pk.Payload) {
			return
		}
		pk = cur
	}
}

// buildAck builds a standardised ack message for Puback, Pubrec, Pubrel, Pubcomp packets.
func (s *Server) buildAck(packetID uint16, pkt, qos byte, properties packets.Properties, reason packets.Code) packets.Packet {
	if s.Options.Capabilities.Compatibilities.NoInheritedPropertiesOnAck {
		properties = packets.Properties{}
	}
	if reason.Code >= packets.ErrUnspecifiedError.Code {
		properties.ReasonString = reason.Reason
	}

	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{
			Type: pkt,
			Qos:  qos,
		},
		PacketID:   packetID,    // [MQTT-2.2.1-5]
		ReasonCode: reason.Code, // [MQTT-3.4.2-1]
		Properties: properties,
		Created:    time.Now().Unix(),
		Expiry:     time.Now().Unix() + s.Options.Capabilities.MaximumMessageExpiryInterval,
	}

	return pk
}

// processPuback processes a Puback packet, denoting completion of a QOS 1 packet sent from the server.
func (s *Server) processPuback(cl *Client, pk packets.Packet) error {
	if _, ok := cl.State.Inflight.Get(pk.PacketID); !ok {
		return nil // omit, but would be packets.ErrPacketIdentifierNotFound
	}

	if ok := cl.State.Inflight.Delete(pk.PacketID); ok { // [MQTT-4.3.2-5]
		cl.State.Inflight.IncreaseSendQuota()
		atomic.AddInt64(&s.Info.Inflight, -1)
		s.hooks.OnQosComplete(cl, pk)
	}

	return nil
}

// processPubrec processes a Pubrec packet, denoting receipt of a QOS 2 packet sent from the server.
func (s *Server) processPubrec(cl *Client, pk packets.Packet) error {
	if _, ok := cl.State.Inflight.Get(pk.PacketID); !ok { // [MQTT-4.3.3-7] [MQTT-4.3.3-13]
		return cl.WritePacket(s.buildAck(pk.PacketID, packets.Pubrel, 1, pk.Properties, packets.ErrPacketIdentifierNotFound))
	}

	if pk.ReasonCode >= packets.ErrUnspecifiedError.Code || !pk.ReasonCodeValid() { // [MQTT-4.3.3-4]
		if ok := cl.State.Inflight.Delete(pk.PacketID); ok {
			atomic.AddInt64(&s.Info.Inflight, -1)
			cl.State.Inflight.IncreaseSendQuota() // the exchange ended: its quota is free
		}
		cl.ops.hooks.OnQosDropped(cl, pk)
		return nil // as per MQTT5 Section 4.13.2 paragraph 2
	}

	// The exchange is the server's: it holds a send quota until the
	// PUBCOMP, and none of the client's receive quota (which counts the
	// client's publishes; taking it here disconnected a client that
	// published while the server's QoS 2 deliveries awaited PUBCOMP).
	ack := s.buildAck(pk.PacketID, packets.Pubrel, 1, pk.Properties, packets.CodeSuccess) // [MQTT-4.3.3-4] ![MQTT-4.3.3-6]
	cl.State.Inflight.Set(ack)                                                            // [MQTT-4.3.3-5]
	return cl.WritePacket(ack)
}

// processPubrel processes a Pubrel packet, denoting completion of a QOS 2 packet sent from the client.
func (s *Server) processPubrel(cl *Client, pk packets.Packet) error {
	if _, ok := cl.State.Inflight.GetInbound(pk.PacketID); !ok { // [MQTT-4.3.3-7] [MQTT-4.3.3-13]
		return cl.WritePacket(s.buildAck(pk.PacketID, packets.Pubcomp, 0, pk.Properties, packets.ErrPacketIdentifierNotFound))
	}

	if pk.ReasonCode >= packets.ErrUnspecifiedError.Code || !pk.ReasonCodeValid() { // [MQTT-4.3.3-9]
		if ok := cl.State.Inflight.DeleteInbound(pk.PacketID); ok {
			atomic.AddInt64(&s.Info.Inflight, -1)
			cl.State.Inflight.IncreaseReceiveQuota() // the exchange ended: its quota is free
		}
		cl.ops.hooks.OnQosDropped(cl, pk)
		return nil
	}

	ack := s.buildAck(pk.PacketID, packets.Pubcomp, 0, pk.Properties, packets.CodeSuccess) // [MQTT-4.3.3-11]
	cl.State.Inflight.Set(ack)

	err := cl.WritePacket(ack)
	if err != nil {
		return err
	}

	// The client's exchange ends: its receive quota is free. (It held no
	// send quota: giving one back here let the server exceed the
	// client's Receive Maximum.)
	cl.State.Inflight.IncreaseReceiveQuota()                    // +1 RECV QUOTA
	if ok := cl.State.Inflight.DeleteInbound(pk.PacketID); ok { // [MQTT-4.3.3-12]
		atomic.AddInt64(&s.Info.Inflight, -1)
		s.hooks.OnQosComplete(cl, pk)
	}

	return nil
}

// processPubcomp processes a Pubcomp packet, denoting completion of a QOS 2 packet sent from the server.
func (s *Server) processPubcomp(cl *Client, pk packets.Packet) error {
	// regardless of whether the pubcomp is a success or failure, we end the qos flow, delete inflight, and restore the send quota
	// (of an exchange that was inflight: a stray PUBCOMP gives none).
	if ok := cl.State.Inflight.Delete(pk.PacketID); ok {
		cl.State.Inflight.IncreaseSendQuota() // +1 SENT QUOTA
		atomic.AddInt64(&s.Info.Inflight, -1)
		s.hooks.OnQosComplete(cl, pk)
	}

	return nil
}

// clientIDInUse reports whether a packet identifier of the client's own
// (a SUBSCRIBE's, an UNSUBSCRIBE's) is in use by another exchange the
// client started: an inbound QoS 2 publish awaiting its PUBREL (stored
// as the PUBREC sent). The inflight messages the server sent (PUBLISH,
// PUBREL) number from the server's own identifiers: "the Client and
// Server assign Packet Identifiers independently of each other" (MQTT 5
// 2.2.1), so a reconnecting client whose queued messages the server
// resends may well subscribe with the same numbers.
func clientIDInUse(cl *Client, id uint16) bool {
	p, ok := cl.State.Inflight.GetInbound(id)
	return ok && p.FixedHeader.Type == packets.Pubrec
}

// processSubscribe processes a Subscribe packet.
func (s *Server) processSubscribe(cl *Client, pk packets.Packet) error {
	pk = s.hooks.OnSubscribe(cl, pk)
	code := packets.CodeSuccess
	if clientIDInUse(cl, pk.PacketID) {
		code = packets.ErrPacketIdentifierInUse
	}

	filterExisted := make([]bool, len(pk.Filters))
	reasonCodes := make([]byte, len(pk.Filters))
	for i, sub := range pk.Filters {
		if code != packets.CodeSuccess {
			reasonCodes[i] = code.Code // NB 3.9.3 Non-normative 0x91
			continue
		} else if !IsValidFilter(sub.Filter, false) {
			reasonCodes[i] = packets.ErrTopicFilterInvalid.Code
		} else if sub.NoLocal && IsSharedFilter(sub.Filter) {
			reasonCodes[i] = packets.ErrProtocolViolationInvalidSharedNoLocal.Code // [MQTT-3.8.3-4]
		} else if !s.hooks.OnACLCheck(cl, sub.Filter, false) {
			reasonCodes[i] = packets.ErrNotAuthorized.Code
			if s.Options.Capabilities.Compatibilities.ObscureNotAuthorized {
				reasonCodes[i] = packets.ErrUnspecifiedError.Code
			}
		} else {
			isNew := s.Topics.Subscribe(cl.ID, sub) // [MQTT-3.8.4-3]
			if isNew {
				atomic.AddInt64(&s.Info.Subscriptions, 1)
			}
			cl.State.Subscriptions.Add(sub.Filter, sub) // [MQTT-3.2.2-10]

			if sub.Qos > s.Options.Capabilities.MaximumQos {
				sub.Qos = s.Options.Capabilities.MaximumQos // [MQTT-3.2.2-9]
			}

			filterExisted[i] = !isNew
			reasonCodes[i] = sub.Qos // [MQTT-3.9.3-1] [MQTT-3.8.4-7]
		}

		if reasonCodes[i] > packets.CodeGrantedQos2.Code && cl.Properties.ProtocolVersion < 5 { // MQTT3
			reasonCodes[i] = packets.ErrUnspecifiedError.Code
		}
	}

	ack := packets.Packet{ // [MQTT-3.8.4-1] [MQTT-3.8.4-5]
		FixedHeader: packets.FixedHeader{
			Type: packets.Suback,
		},
		PacketID:    pk.PacketID, // [MQTT-2.2.1-6] [MQTT-3.8.4-2]
		ReasonCodes: reasonCodes, // [MQTT-3.8.4-6]
		Properties: packets.Properties{
			User: pk.Properties.User,
		},
	}

	if code.Code >= packets.ErrUnspecifiedError.Code {
		ack.Properties.ReasonString = code.Reason
	}

	s.hooks.OnSubscribed(cl, pk, reasonCodes)
	err := cl.WritePacket(ack)
	if err != nil {
		return err
	}

	for i, sub := range pk.Filters { // [MQTT-3.3.1-9]
		if reasonCodes[i] >= packets.ErrUnspecifiedError.Code {
			continue
		}

		s.publishRetainedToClient(cl, sub, filterExisted[i])
	}

	return nil
}

// processUnsubscribe processes an unsubscribe packet.
func (s *Server) processUnsubscribe(cl *Client, pk packets.Packet) error {
	code := packets.CodeSuccess
	if clientIDInUse(cl, pk.PacketID) {
		code = packets.ErrPacketIdentifierInUse
	}

	pk = s.hooks.OnUnsubscribe(cl, pk)
	reasonCodes := make([]byte, len(pk.Filters))
	for i, sub := range pk.Filters { // [MQTT-3.10.4-6] [MQTT-3.11.3-1]
		if code != packets.CodeSuccess {
			reasonCodes[i] = code.Code // NB 3.11.3 Non-normative 0x91
			continue
		}

		if q := s.Topics.Unsubscribe(sub.Filter, cl.ID); q {
			atomic.AddInt64(&s.Info.Subscriptions, -1)
			reasonCodes[i] = packets.CodeSuccess.Code
		} else {
			reasonCodes[i] = packets.CodeNoSubscriptionExisted.Code
		}

		cl.State.Subscriptions.Delete(sub.Filter) // [MQTT-3.10.4-2] [MQTT-3.10.4-2] ~[MQTT-3.10.4-3]
	}

	ack := packets.Packet{ // [MQTT-3.10.4-4]
		FixedHeader: packets.FixedHeader{
			Type: packets.Unsuback,
		},
		PacketID:    pk.PacketID, // [MQTT-2.2.1-6]  [MQTT-3.10.4-5]
		ReasonCodes: reasonCodes, // [MQTT-3.11.3-2]
		Properties: packets.Properties{
			User: pk.Properties.User,
		},
	}

	if code.Code >= packets.ErrUnspecifiedError.Code {
		ack.Properties.ReasonString = code.Reason
	}

	s.hooks.OnUnsubscribed(cl, pk)
	return cl.WritePacket(ack)
}

// UnsubscribeClient unsubscribes a client from all of their subscriptions.
func (s *Server) UnsubscribeClient(cl *Client) {
	i := 0
	filterMap := cl.State.Subscriptions.GetAll()
	filters := make([]packets.Subscription, len(filterMap))
	for k := range filterMap {
		cl.State.Subscriptions.Delete(k)
	}

	if cl.IsTakenOver() {
		return
	}

	for k, v := range filterMap {
		if s.Topics.Unsubscribe(k, cl.ID) {
			atomic.AddInt64(&s.Info.Subscriptions, -1)
		}
		filters[i] = v
		i++
	}
	s.hooks.OnUnsubscribed(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Unsubscribe}, Filters: filters})
}

// processAuth processes an Auth packet.
func (s *Server) processAuth(cl *Client, pk packets.Packet) error {
	_, err := s.hooks.OnAuthPacket(cl, pk)
	if err != nil {
		return err
	}

	return nil
}

// processDisconnect processes a Disconnect packet.
func (s *Server) processDisconnect(cl *Client, pk packets.Packet) error {
	if pk.Properties.SessionExpiryIntervalFlag {
		if pk.Properties.SessionExpiryInterval > 0 && cl.Properties.Props.SessionExpiryInterval == 0 {
			return packets.ErrProtocolViolationZeroNonZeroExpiry
		}

		// Within the server's maximum, as at CONNECT (edgechat patch 40).
		cl.Properties.Props.SessionExpiryInterval = min(pk.Properties.SessionExpiryInterval,
			s.Options.Capabilities.MaximumSessionExpiryInterval)
		cl.Properties.Props.SessionExpiryIntervalFlag = true
	}

	if pk.ReasonCode == packets.CodeDisconnectWillMessage.Code { // [MQTT-3.1.2.5] Non-normative comment
		return packets.CodeDisconnectWillMessage
	}

	s.loop.willDelayed.Delete(cl.ID) // [MQTT-3.1.3-9] [MQTT-3.1.2-8]
	cl.Stop(packets.CodeDisconnect)  // [MQTT-3.14.4-2]

	return nil
}

// DisconnectClient sends a Disconnect packet to a client and then closes the client connection.
func (s *Server) DisconnectClient(cl *Client, code packets.Code) error {
	return s.DisconnectClientWithin(cl, code, finalWriteWait)
}

// DisconnectClientWithin is DisconnectClient giving the client up to wait
// to take what was written to it before the DISCONNECT (edgechat patch
// 34): a slow client that is still reading then gets the reason code.
func (s *Server) DisconnectClientWithin(cl *Client, code packets.Code, wait time.Duration) error {
	out := packets.Packet{
		FixedHeader: packets.FixedHeader{
			Type: packets.Disconnect,
		},
		ReasonCode: code.Code,
		Properties: packets.Properties{},
	}

	if code.Code >= packets.ErrUnspecifiedError.Code {
		out.Properties.ReasonString = code.Reason //  // [MQTT-3.14.2-1]
	}

	// We already have a code we are using to disconnect the client, so we are not
	// interested if the write packet fails due to a closed connection (as we are closing it).
	var err error
	if cl.Properties.ProtocolVersion < 5 {
		// edgechat patch 62: MQTT 3.1.1 has no server DISCONNECT (3.14:
		// the final packet sent from the client to the server), and a
		// 3.1.1 client takes one as a protocol violation. The server
		// closes the connection, after what was already written to it.
		if !s.Options.Capabilities.Compatibilities.PassiveClientDisconnect {
			err = cl.flushFinal(wait)
		}
	} else if s.Options.Capabilities.Compatibilities.PassiveClientDisconnect {
		err = cl.WritePacket(out) // the connection stays open: in order, as any packet
	} else {
		err = cl.writeFinal(out, wait) // edgechat patch 34: now, not behind the queue
	}
	if !s.Options.Capabilities.Compatibilities.PassiveClientDisconnect {
		cl.Stop(code)
		if code.Code >= packets.ErrUnspecifiedError.Code {
			return code
		}
	}

	return err
}

// publishSysTopics publishes the current values to the server $SYS topics.
// Due to the int to string conversions this method is not as cheap as
// some of the others so the publishing interval should be set appropriately.
func (s *Server) publishSysTopics() {
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{
			Type:   packets.Publish,
			Retain: true,
		},
		Created: time.Now().Unix(),
	}

	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	atomic.StoreInt64(&s.Info.MemoryAlloc, int64(m.HeapInuse))
	atomic.StoreInt64(&s.Info.Threads, int64(runtime.NumGoroutine()))
	atomic.StoreInt64(&s.Info.Time, time.Now().Unix())
	atomic.StoreInt64(&s.Info.Uptime, time.Now().Unix()-atomic.LoadInt64(&s.Info.Started))
	atomic.StoreInt64(&s.Info.ClientsTotal, int64(s.Clients.Len()))
	atomic.StoreInt64(&s.Info.ClientsDisconnected, atomic.LoadInt64(&s.Info.ClientsTotal)-atomic.LoadInt64(&s.Info.ClientsConnected))

	info := s.Info.Clone()
	topics := map[string]string{
		SysPrefix + "/broker/version":              s.Info.Version,
		SysPrefix + "/broker/time":                 Int64toa(info.Time),
		SysPrefix + "/broker/uptime":               Int64toa(info.Uptime),
		SysPrefix + "/broker/started":              Int64toa(info.Started),
		SysPrefix + "/broker/load/bytes/received":  Int64toa(info.BytesReceived),
		SysPrefix + "/broker/load/bytes/sent":      Int64toa(info.BytesSent),
		SysPrefix + "/broker/clients/connected":    Int64toa(info.ClientsConnected),
		SysPrefix + "/broker/clients/disconnected": Int64toa(info.ClientsDisconnected),
		SysPrefix + "/broker/clients/maximum":      Int64toa(info.ClientsMaximum),
		SysPrefix + "/broker/clients/total":        Int64toa(info.ClientsTotal),
		SysPrefix + "/broker/packets/received":     Int64toa(info.PacketsReceived),
		SysPrefix + "/broker/packets/sent":         Int64toa(info.PacketsSent),
		SysPrefix + "/broker/messages/received":    Int64toa(info.MessagesReceived),
		SysPrefix + "/broker/messages/sent":        Int64toa(info.MessagesSent),
		SysPrefix + "/broker/messages/dropped":     Int64toa(info.MessagesDropped),
		SysPrefix + "/broker/messages/inflight":    Int64toa(info.Inflight),
		SysPrefix + "/broker/retained":             Int64toa(info.Retained),
		SysPrefix + "/broker/subscriptions":        Int64toa(info.Subscriptions),
		SysPrefix + "/broker/system/memory":        Int64toa(info.MemoryAlloc),
		SysPrefix + "/broker/system/threads":       Int64toa(info.Threads),
	}

	for topic, payload := range topics {
		pk.TopicName = topic
		pk.Payload = []byte(payload)
		s.Topics.RetainMessage(pk.Copy(false))
		s.publishToSubscribers(pk)
	}

	s.hooks.OnSysInfoTick(info)
}

// Close attempts to gracefully shut down the server, all listeners, clients, and stores.
func (s *Server) Close() error {
	close(s.done)
	s.Log.Info("gracefully stopping server")
	s.Listeners.CloseAll(s.closeListenerClients)
	s.hooks.OnStopped()
	s.hooks.Stop()

	s.Log.Info("mochi mqtt server stopped")
	return nil
}

// closeListenerClients closes all clients on the specified listener.
func (s *Server) closeListenerClients(listener string) {
	clients := s.Clients.GetByListener(listener)
	for _, cl := range clients {
		_ = s.DisconnectClient(cl, packets.ErrServerShuttingDown)
	}
}

// sendLWT issues an LWT message to a topic when a client disconnects.
func (s *Server) sendLWT(cl *Client) {
	if atomic.LoadUint32(&cl.Properties.Will.Flag) == 0 {
		return
	}

	modifiedLWT := s.hooks.OnWill(cl, cl.Properties.Will)

	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{
			Type:   packets.Publish,
			Retain: modifiedLWT.Retain, // [MQTT-3.1.2-14] [MQTT-3.1.2-15]
			Qos:    modifiedLWT.Qos,
		},
		TopicName: modifiedLWT.TopicName,
		Payload:   modifiedLWT.Payload,
		Properties: packets.Properties{
			User:                  modifiedLWT.User,
			MessageExpiryInterval: modifiedLWT.MessageExpiryInterval,
			ContentType:           modifiedLWT.ContentType,
			ResponseTopic:         modifiedLWT.ResponseTopic,
			CorrelationData:       modifiedLWT.CorrelationData,
			PayloadFormat:         modifiedLWT.PayloadFormat,
			PayloadFormatFlag:     modifiedLWT.PayloadFormatFlag,
		},
		Origin:  cl.ID,
		Created: time.Now().Unix(),
		// The retained copy expires as a v5 publish does
		// (clearExpiredRetainedMessages; edgechat patch 58).
		ProtocolVersion: cl.Properties.ProtocolVersion,
	}

	// The will waits for its delay or the end of the session, whichever
	// comes first (MQTT 5 3.1.3.2.2; edgechat patch 42): no longer than
	// the session's expiry as it stands now (0 when the client set none,
	// capped by the server, changed by a DISCONNECT).
	delay := cl.Properties.Will.WillDelayInterval
	if cl.Properties.ProtocolVersion == 5 && cl.Properties.Props.SessionExpiryInterval < delay {
		delay = cl.Properties.Props.SessionExpiryInterval
	}
	if delay > 0 {
		pk.Connect.WillProperties.WillDelayInterval = delay
		pk.Expiry = time.Now().Unix() + int64(pk.Connect.WillProperties.WillDelayInterval)
		// A new connection that took the session over has cancelled the
		// will at its CONNACK [MQTT-3.1.3-9]; this connection's end may
		// come after that (its reader runs on its own goroutine), and
		// must not schedule it again (edgechat patch 39). The takeover
		// records its successor under sessionEnd.
		cl.State.sessionEnd.Lock()
		resumed := cl.State.successor != nil
		// Taken over by a clean start: the session ended, so the will
		// goes now (edgechat patch 44).
		ended := !resumed && cl.IsTakenOver()
		if !resumed && !ended {
			s.loop.willDelayed.Add(cl.ID, pk)
		}
		cl.State.sessionEnd.Unlock()
		if !ended {
			return
		}
	}

	pk = s.willPublishedNow(pk)
	if pk.FixedHeader.Retain {
		s.retainMessage(cl, pk)
	}

	s.publishToSubscribers(pk)                      // [MQTT-3.1.2-8]
	atomic.StoreUint32(&cl.Properties.Will.Flag, 0) // [MQTT-3.1.2-10]
	s.hooks.OnWillSent(cl, pk)
}

// readStore reads in any data from the persistent datastore (if applicable).
func (s *Server) readStore() error {
	if s.hooks.Provides(StoredClients) {
		clients, err := s.hooks.StoredClients()
		if err != nil {
			return fmt.Errorf("failed to load clients; %w", err)
		}
		s.loadClients(clients)
		s.Log.Debug("loaded clients from store", "len", len(clients))
	}

	if s.hooks.Provides(StoredSubscriptions) {
		subs, err := s.hooks.StoredSubscriptions()
		if err != nil {
			return fmt.Errorf("load subscriptions; %w", err)
		}
		s.loadSubscriptions(subs)
		s.Log.Debug("loaded subscriptions from store", "len", len(subs))
	}

	if s.hooks.Provides(StoredInflightMessages) {
		inflight, err := s.hooks.StoredInflightMessages()
		if err != nil {
			return fmt.Errorf("load inflight; %w", err)
		}
		s.loadInflight(inflight)
		s.Log.Debug("loaded inflights from store", "len", len(inflight))
	}

	if s.hooks.Provides(StoredRetainedMessages) {
		retained, err := s.hooks.StoredRetainedMessages()
		if err != nil {
			return fmt.Errorf("load retained; %w", err)
		}
		s.loadRetained(retained)
		s.Log.Debug("loaded retained messages from store", "len", len(retained))
	}

	if s.hooks.Provides(StoredSysInfo) {
		sysInfo, err := s.hooks.StoredSysInfo()
		if err != nil {
			return fmt.Errorf("load server info; %w", err)
		}
		s.loadServerInfo(sysInfo.Info)
		s.Log.Debug("loaded $SYS info from store")
	}

	return nil
}

// loadServerInfo restores server info from the datastore.
func (s *Server) loadServerInfo(v system.Info) {
	if s.Options.Capabilities.Compatibilities.RestoreSysInfoOnRestart {
		atomic.StoreInt64(&s.Info.BytesReceived, v.BytesReceived)
		atomic.StoreInt64(&s.Info.BytesSent, v.BytesSent)
		atomic.StoreInt64(&s.Info.ClientsMaximum, v.ClientsMaximum)
		atomic.StoreInt64(&s.Info.ClientsTotal, v.ClientsTotal)
		atomic.StoreInt64(&s.Info.ClientsDisconnected, v.ClientsDisconnected)
		atomic.StoreInt64(&s.Info.MessagesReceived, v.MessagesReceived)
		atomic.StoreInt64(&s.Info.MessagesSent, v.MessagesSent)
		atomic.StoreInt64(&s.Info.MessagesDropped, v.MessagesDropped)
		atomic.StoreInt64(&s.Info.PacketsReceived, v.PacketsReceived)
		atomic.StoreInt64(&s.Info.PacketsSent, v.PacketsSent)
		atomic.StoreInt64(&s.Info.InflightDropped, v.InflightDropped)
	}
	atomic.StoreInt64(&s.Info.Retained, v.Retained)
	atomic.StoreInt64(&s.Info.Inflight, v.Inflight)
	atomic.StoreInt64(&s.Info.Subscriptions, v.Subscriptions)
}

// loadSubscriptions restores subscriptions from the datastore.
func (s *Server) loadSubscriptions(v []storage.Subscription) {
	for _, sub := range v {
		sb := packets.Subscription{
			Filter:            sub.Filter,
			RetainHandling:    sub.RetainHandling,
			Qos:               sub.Qos,
			RetainAsPublished: sub.RetainAsPublished,
			NoLocal:           sub.NoLocal,
			Identifier:        sub.Identifier,
		}
		if s.Topics.Subscribe(sub.Client, sb) {
			if cl, ok := s.Clients.Get(sub.Client); ok {
				cl.State.Subscriptions.Add(sub.Filter, sb)
			}
		}
	}
}

// loadClients restores clients from the datastore.
func (s *Server) loadClients(v []storage.Client) {
	for _, c := range v {
		cl := s.NewClient(nil, c.Listener, c.ID, false)
		cl.Properties.Username = c.Username
		cl.Properties.Clean = c.Clean
		cl.Properties.ProtocolVersion = c.ProtocolVersion
		cl.Properties.Props = packets.Properties{
			SessionExpiryInterval:     c.Properties.SessionExpiryInterval,
			SessionExpiryIntervalFlag: c.Properties.SessionExpiryIntervalFlag,
			AuthenticationMethod:      c.Properties.AuthenticationMethod,
			AuthenticationData:        c.Properties.AuthenticationData,
			RequestProblemInfoFlag:    c.Properties.RequestProblemInfoFlag,
			RequestProblemInfo:        c.Properties.RequestProblemInfo,
			RequestResponseInfo:       c.Properties.RequestResponseInfo,
			ReceiveMaximum:            c.Properties.ReceiveMaximum,
			TopicAliasMaximum:         c.Properties.TopicAliasMaximum,
			User:                      c.Properties.User,
			MaximumPacketSize:         c.Properties.MaximumPacketSize,
		}
		cl.Properties.Will = Will(c.Will)

		// cancel the context, update cl.State such as disconnected time and stopCause.
		cl.Stop(packets.ErrServerShuttingDown)

		expire := (cl.Properties.ProtocolVersion == 5 && cl.Properties.Props.SessionExpiryInterval == 0) || (cl.Properties.ProtocolVersion < 5 && cl.Properties.Clean)
		s.hooks.OnDisconnect(cl, packets.ErrServerShuttingDown, expire)
		if expire {
			cl.ClearInflights()
			s.UnsubscribeClient(cl)
		} else {
			s.Clients.Add(cl)
		}
	}
}

// loadInflight restores inflight messages from the datastore.
func (s *Server) loadInflight(v []storage.Message) {
	for _, msg := range v {
		if client, ok := s.Clients.Get(msg.Client); ok {
			client.State.Inflight.Set(msg.ToPacket())
		}
	}
}

// loadRetained restores retained messages from the datastore.
func (s *Server) loadRetained(v []storage.Message) {
	for _, msg := range v {
		s.Topics.RetainMessage(msg.ToPacket())
	}
}

// clearExpiredClients deletes all clients which have been disconnected for longer
// than their given expiry intervals.
func (s *Server) clearExpiredClients(dt int64) {
	for _, client := range s.Clients.disconnected() {
		disconnected := client.StopTime()
		if disconnected == 0 {
			continue
		}

		expire := s.Options.Capabilities.MaximumSessionExpiryInterval
		if client.Properties.ProtocolVersion == 5 && client.Properties.Props.SessionExpiryIntervalFlag {
			expire = client.Properties.Props.SessionExpiryInterval
		}

		if disconnected+int64(expire) < dt && s.EndSession(client) { // [MQTT-4.1.0-2]
			s.hooks.OnClientExpired(client)
		}
	}
}

// EndSession ends the session of a client whose connection has ended
// (edgechat patch 37): its subscriptions, its inflight messages and its
// place in the client map. mochi's session expiry only took the client
// out of the map, and its subscriptions stayed in the topic index under
// its client identifier, for the next session of that identifier to
// receive. It holds sessionEnd, as a takeover does, and reports false
// when the client's session is no longer its to end (taken over, or
// another client holds the identifier): a new connection either inherits
// the session wholly before this or finds none.
//
// A will that waits for its delay goes when the session ends, if that
// comes first (MQTT 5 3.1.3.2.2; edgechat patch 49): published at once,
// after the session's lock (its subscribers' deliveries take theirs).
func (s *Server) EndSession(cl *Client) bool {
	cl.State.sessionEnd.Lock()
	if cur, ok := s.Clients.Get(cl.ID); !ok || cur != cl || cl.IsTakenOver() {
		cl.State.sessionEnd.Unlock()
		return false
	}
	s.UnsubscribeClient(cl)
	cl.ClearInflights()
	s.Clients.deleteClient(cl)
	cl.State.sessionEnd.Unlock()
	s.publishEndedSessionWill(cl.ID)
	return true
}

// clearExpiredRetainedMessage deletes retained messages from topics if they have expired.
func (s *Server) clearExpiredRetainedMessages(now int64) {
	// IDs, not GetAll: this runs every second, and a copy of every
	// retained message each time is garbage for nothing when none expires.
	maximumExpiry := s.Options.Capabilities.MaximumMessageExpiryInterval
	expired := s.Topics.Retained.IDs(func(pk packets.Packet) bool {
		expired := pk.ProtocolVersion == 5 && pk.Expiry > 0 && pk.Expiry < now // [MQTT-3.3.2-5]

		// If the maximum message expiry interval is set (greater than 0), and the message
		// retention period exceeds the maximum expiry, the message will be forcibly removed.
		enforced := maximumExpiry > 0 && now-pk.Created > maximumExpiry

		return expired || enforced
	})
	for _, filter := range expired {
		s.Topics.Retained.Delete(filter)
		s.hooks.OnRetainedExpired(filter)
	}
}

// clearExpiredInflights deletes any inflight messages which have expired.
func (s *Server) clearExpiredInflights(now int64) {
	for _, client := range s.Clients.withInflight() {
		// ClearExpiredInflights has told the hooks of each (OnQosDropped,
		// with the message): a second call here, with its packet ID only,
		// counted each twice (edgechat patch 48).
		if deleted := client.ClearExpiredInflights(now, s.Options.Capabilities.MaximumMessageExpiryInterval); len(deleted) > 0 {
			s.sendHeld(client)
		}
	}
}

// publishEndedSessionWill publishes at once the delayed will of the
// session of client id that a clean start has just ended (edgechat patch
// 44). The client in the map is the new one: its own will is left alone,
// and the hooks get a stand-in with the ID only.
//
// Taken from the delayed wills in one step (edgechat patch 49): an
// EndSession and the CONNACK of a new connection of the ID, or the
// delay's end, may publish it concurrently; once only.
func (s *Server) publishEndedSessionWill(id string) {
	pk, ok := s.loop.willDelayed.Take(id)
	if !ok {
		return
	}
	pk = s.willPublishedNow(pk)
	holder := &Client{ID: id}
	if pk.FixedHeader.Retain {
		s.retainMessage(holder, pk)
	}
	s.publishToSubscribers(pk)
	s.hooks.OnWillSent(holder, pk)
}

// willPublishedNow readies a will for its publication now (edgechat
// patch 58): its time is now, and its expiry the Message Expiry Interval
// its client gave it, counted from now, as processPublish sets a
// publish's. A delayed will kept the end of its delay in Expiry, which
// otherwise went out as a Message Expiry Interval of 1 s (the time
// left), live and retained; and a retained will got no expiry at all,
// since publishToSubscribers sets it only after the copy is retained.
func (s *Server) willPublishedNow(pk packets.Packet) packets.Packet {
	pk.Connect.WillProperties.WillDelayInterval = 0
	pk.Created = time.Now().Unix()
	pk.Expiry = 0
	if expiry := minimum(s.Options.Capabilities.MaximumMessageExpiryInterval,
		int64(pk.Properties.MessageExpiryInterval)); expiry > 0 {
		pk.Expiry = pk.Created + expiry
	}
	return pk
}

// sendDelayedLWT sends any LWT messages which have reached their issue time.
func (s *Server) sendDelayedLWT(dt int64) {
	for id, pk := range s.loop.willDelayed.GetAll() {
		if dt > pk.Expiry {
			taken, ok := s.loop.willDelayed.Take(id)
			if !ok {
				continue // published meanwhile (publishEndedSessionWill) or cancelled
			}
			if taken.Expiry != pk.Expiry {
				s.loop.willDelayed.Add(id, taken) // a later connection's will, scheduled meanwhile
				continue
			}
			pk = s.willPublishedNow(pk)
			s.publishToSubscribers(pk) // [MQTT-3.1.2-8]
			// Retained, and its hooks told, also when the session expired
			// first (the two sweeps run in either order; edgechat patch
			// 42): they then get a stand-in client with its ID only.
			cl, ok := s.Clients.Get(id)
			holder := cl
			if !ok {
				holder = &Client{ID: id}
			}
			if pk.FixedHeader.Retain {
				s.retainMessage(holder, pk)
			}
			if ok {
				cl.Properties.Will = Will{} // [MQTT-3.1.2-10]
			}
			s.hooks.OnWillSent(holder, pk)
		}
	}
}

// Int64toa converts an int64 to a string.
func Int64toa(v int64) string {
	return strconv.FormatInt(v, 10)
}

// minimum differs from built-in min, it returns minimum of the non-zero value a and b.
// If both a and b are zero value, it reutrns 0.
func minimum(a, b int64) (m int64) {
	if a != 0 {
		m = a
		if b != 0 && b < a {
			m = b
		}
		return
	}

	if b != 0 {
		m = b
	}
	return
}
