// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co
// SPDX-FileContributor: mochi-co

package mqtt

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/xid"

	"github.com/mochi-mqtt/server/v2/packets"
)

const (
	defaultKeepalive             uint16 = 10 // the default connection keepalive value in seconds.
	defaultClientProtocolVersion byte   = 4  // the default mqtt protocol version of connecting clients (if somehow unspecified).
	minimumKeepalive             uint16 = 5  // the minimum recommended keepalive - values under with display a warning.
)

var (
	ErrMinimumKeepalive = errors.New("client keepalive is below minimum recommended value and may exhibit connection instability")
)

// ReadFn is the function signature for the function used for reading and processing new packets.
type ReadFn func(*Client, packets.Packet) error

// Clients contains a map of the clients known by the broker.
type Clients struct {
	internal map[string]*Client // clients known by the broker, keyed on client id.
	sync.RWMutex
}

// NewClients returns an instance of Clients.
func NewClients() *Clients {
	return &Clients{
		internal: make(map[string]*Client),
	}
}

// Add adds a new client to the clients map, keyed on client id.
func (cl *Clients) Add(val *Client) {
	cl.Lock()
	defer cl.Unlock()
	cl.internal[val.ID] = val
}

// GetAll returns all the clients.
func (cl *Clients) GetAll() map[string]*Client {
	cl.RLock()
	defer cl.RUnlock()
	m := map[string]*Client{}
	for k, v := range cl.internal {
		m[k] = v
	}
	return m
}

// disconnected returns the clients whose connection has ended (sessions
// kept until they expire), keyed on client id. The once-a-second expiry
// check uses it rather than GetAll: a copy of the whole map every second is
// garbage in proportion to the clients connected, most of them idle.
func (cl *Clients) disconnected() map[string]*Client {
	cl.RLock()
	defer cl.RUnlock()
	var m map[string]*Client
	for k, v := range cl.internal {
		if v.StopTime() != 0 {
			if m == nil {
				m = map[string]*Client{}
			}
			m[k] = v
		}
	}
	return m
}

// withInflight returns the clients with inflight messages, for the
// once-a-second inflight expiry check (see disconnected).
func (cl *Clients) withInflight() []*Client {
	cl.RLock()
	defer cl.RUnlock()
	var out []*Client
	for _, v := range cl.internal {
		if v.State.Inflight.Len() > 0 {
			out = append(out, v)
		}
	}
	return out
}

// Get returns the value of a client if it exists.
func (cl *Clients) Get(id string) (*Client, bool) {
	cl.RLock()
	defer cl.RUnlock()
	val, ok := cl.internal[id]
	return val, ok
}

// Len returns the length of the clients map.
func (cl *Clients) Len() int {
	cl.RLock()
	defer cl.RUnlock()
	val := len(cl.internal)
	return val
}

// Delete removes a client from the internal map.
func (cl *Clients) Delete(id string) {
	cl.Lock()
	defer cl.Unlock()
	delete(cl.internal, id)
}

// deleteClient removes c, and not a newer client that took its ID.
func (cl *Clients) deleteClient(c *Client) {
	cl.Lock()
	defer cl.Unlock()
	if cl.internal[c.ID] == c {
		delete(cl.internal, c.ID)
	}
}

// GetByListener returns clients matching a listener id.
func (cl *Clients) GetByListener(id string) []*Client {
	cl.RLock()
	defer cl.RUnlock()
	clients := make([]*Client, 0, len(cl.internal)) // not cl.Len(): it takes the read lock again
	for _, client := range cl.internal {
		if client.Net.Listener == id && !client.Closed() {
			clients = append(clients, client)
		}
	}
	return clients
}

// Client contains information about a client known by the broker.
type Client struct {
	Properties   ClientProperties // client properties
	State        ClientState      // the operational state of the client.
	Net          ClientConnection // network connection state of the client
	ID           string           // the client id.
	ops          *ops             // ops provides a reference to server ops.
	sync.RWMutex                  // mutex

	// HookData is for hooks: state of their own for this client (this
	// connection), so that the hook calls made for every packet and every
	// delivery need no map keyed by client. The server never reads or
	// writes it, nor carries it over to a client that takes the session
	// over; hooks that share a server must agree on what goes in it.
	HookData atomic.Value

	// packetIDs serializes NextPacketID (edgechat patch 33): it took the
	// client's write lock, which a write loop holds through a blocking
	// write to a socket that does not drain, so one subscriber that
	// stopped reading held up every QoS>0 publisher to it (and their
	// other subscribers) for up to 1.5 x keepalive.
	packetIDs sync.Mutex
	// heldOut serializes sendHeld (edgechat patch 33): a released
	// message is written or queued under it, so two goroutines releasing
	// held messages cannot write them in reverse order.
	heldOut sync.Mutex
}

// ClientConnection contains the connection transport and metadata for the client.
type ClientConnection struct {
	Conn     net.Conn      // the net.Conn used to establish the connection
	bconn    *bufio.Reader // a buffered net.Conn for reading packets
	outbuf   *bytes.Buffer // a buffer for writing packets
	Remote   string        // the remote address of the client
	Listener string        // listener id of the client
	Inline   bool          // if true, the client is the built-in 'inline' embedded client

	raw     syscall.RawConn // the socket, for direct writes (Options.ClientDirectWrites); nil if not a plain socket
	rawRead io.Reader       // the socket, read with raw system calls (Options.ClientRawSyscalls); nil if not a plain socket
}

// ClientProperties contains the properties which define the client behaviour.
type ClientProperties struct {
	Props           packets.Properties
	Will            Will
	Username        []byte
	ProtocolVersion byte
	Clean           bool
}

// Will contains the last will and testament details for a client connection.
type Will struct {
	Payload           []byte                 // -
	User              []packets.UserProperty // -
	TopicName         string                 // -
	Flag              uint32                 // 0,1
	WillDelayInterval uint32                 // -
	Qos               byte                   // -
	Retain            bool                   // -

	// The will's other MQTT 5 properties, published with it as with
	// any publish (MQTT 5 3.1.3.2; edgechat patch 58).
	MessageExpiryInterval uint32 // seconds from its publication; 0: none
	ContentType           string
	ResponseTopic         string
	CorrelationData       []byte
	PayloadFormat         byte
	PayloadFormatFlag     bool
}

// ClientState tracks the state of the client.
type ClientState struct {
	TopicAliases    TopicAliases                         // a map of topic aliases
	stopCause       atomic.Value                         // reason for stopping
	Inflight        *Inflight                            // a map of in-flight qos messages
	Subscriptions   *Subscriptions                       // a map of the subscription filters a client maintains
	disconnected    int64                                // the time the client disconnected in unix time, for calculating expiry
	outbound        atomic.Pointer[chan *packets.Packet] // queue for pending outbound packets, made on first use (outboundQueue)
	endOnce         sync.Once                            // only end once
	isTakenOver     atomic.Bool                          // used to identify orphaned clients
	sessionEnd      sync.Mutex                           // orders the end of an expiring session, and QoS>0 deliveries, against a takeover of it
	successor       *Client                              // the client that took this session over (under sessionEnd)
	sessionLost     atomic.Bool                          // a delivery was dropped from it: not resumed (LoseSession)
	storeFullDrops  atomic.Int64                         // deliveries dropped from its full store since it last had room (storeFull)
	sessionEnded    atomic.Bool                          // its session ended, its inflight messages discarded (SessionEnded)
	handshaking     atomic.Bool                          // CONNACK not sent yet: QoS>0 deliveries are stored, sent after it
	waitMu          sync.Mutex                           // orders a hand-off to the ReadWaiter against Stop's Cancel
	waitStopped     bool                                 // Stop has cancelled the waits: hand off none (under waitMu)
	packetID        uint32                               // the current highest packetID
	open            context.Context                      // indicate that the client is open for packet exchange
	cancelOpen      context.CancelFunc                   // cancel function for open context
	outboundQty     int32                                // number of messages currently in the outbound queue
	Keepalive       uint16                               // the number of seconds the connection can wait
	ServerKeepalive bool                                 // keepalive was set by the server
}

// newClient returns a new instance of Client. This is almost exclusively used by Server
// for creating new clients, but it lives here because it's not dependent.
func newClient(c net.Conn, o *ops) *Client {
	ctx, cancel := context.WithCancel(context.Background())
	cl := &Client{
		State: ClientState{
			Inflight:      NewInflights(),
			Subscriptions: NewSubscriptions(),
			TopicAliases:  NewTopicAliases(o.options.Capabilities.TopicAliasMaximum),
			open:          ctx,
			cancelOpen:    cancel,
			Keepalive:     defaultKeepalive,
		},
		Properties: ClientProperties{
			ProtocolVersion: defaultClientProtocolVersion, // default protocol version
		},
		ops: o,
	}

	if c != nil {
		cl.Net = ClientConnection{
			Conn:   c,
			Remote: c.RemoteAddr().String(),
		}
		if o.options.ClientDirectWrites {
			cl.Net.raw = rawConn(c)
		}
		if o.options.ClientRawSyscalls {
			cl.Net.rawRead = newRawReader(c, cl.Net.raw)
		}
		cl.Net.bconn = cl.getReader() // pooled if clients wait with a ReadWaiter
	}

	return cl
}

// WriteLoop writes the pending outbound messages to the client connection,
// and returns once the queue is empty or the client is closed.
//
// It runs only while there is something to write: the server starts it when
// a packet is queued for a client whose queue was empty (outboundQty goes
// from 0 to 1, see enqueueOutbound), and it returns when its last packet is
// written (outboundQty back to 0). An idle client therefore holds no writer
// goroutine and no writer stack, which is most of what an idle connection
// costs. outboundQty counts packets queued (sent on the channel before they
// are counted) and not yet written, so at most one writer runs at a time and
// a writer never waits on an empty queue.
func (cl *Client) WriteLoop() {
	for {
		select {
		case pk := <-cl.outboundQueue():
			if pk == flushQueued {
				cl.Lock()
				err := cl.flushOutbuf()
				cl.Unlock()
				if err != nil {
					cl.ops.log.Debug("failed publishing packet", "error", err, "client", cl.ID)
				}
			} else if err := cl.WritePacket(*pk); err != nil {
				// TODO : Figure out what to do with error
				cl.ops.log.Debug("failed publishing packet", "error", err, "client", cl.ID, "packet", pk)
				cl.discardUnsendable(*pk, err)
				if cl.ops.sendHeld != nil && pk.FixedHeader.Qos > 0 {
					cl.ops.sendHeld(cl)
				}
			}
			if atomic.AddInt32(&cl.State.outboundQty, -1) == 0 {
				return
			}
		case <-cl.State.open.Done():
			return
		}
	}
}

// enqueueOutbound queues pk for the client's writer, starting a writer if
// none is running. It reports false when the queue is full.
func (cl *Client) enqueueOutbound(pk *packets.Packet) bool {
	select {
	case cl.outboundQueue() <- pk:
	default:
		return false
	}
	if atomic.AddInt32(&cl.State.outboundQty, 1) == 1 {
		go cl.WriteLoop()
	}
	return true
}

// outboundQueue returns the client's queue of outbound packets, making it
// on first use: a queue holds MaximumClientWritesPending pointers (1 KiB by
// default), and most clients of a server holding many connections are idle
// and never have anything queued (acknowledgements are written directly).
func (cl *Client) outboundQueue() chan *packets.Packet {
	if q := cl.State.outbound.Load(); q != nil {
		return *q
	}
	q := make(chan *packets.Packet, cl.ops.options.Capabilities.MaximumClientWritesPending)
	if cl.State.outbound.CompareAndSwap(nil, &q) {
		return q
	}
	return *cl.State.outbound.Load()
}

// outboundLen is the number of packets in the outbound queue.
func (cl *Client) outboundLen() int {
	if q := cl.State.outbound.Load(); q != nil {
		return len(*q)
	}
	return 0
}

// ParseConnect parses the connect parameters and properties for a client.
func (cl *Client) ParseConnect(lid string, pk packets.Packet) {
	cl.Net.Listener = lid

	cl.Properties.ProtocolVersion = pk.ProtocolVersion
	// A copy: the packet's fields are slices of the whole CONNECT packet
	// (with the password, often a token of hundreds of bytes), which the
	// client would otherwise keep for the life of the connection.
	cl.Properties.Username = append([]byte(nil), pk.Connect.Username...)
	cl.Properties.Clean = pk.Connect.Clean
	cl.Properties.Props = pk.Properties.Copy(false)
	ownStrings(&cl.Properties.Props) // Copy's strings are the packet's (edgechat patch 57)

	if cl.Properties.Props.ReceiveMaximum > cl.ops.options.Capabilities.MaximumInflight { // 3.3.4 Non-normative
		cl.Properties.Props.ReceiveMaximum = cl.ops.options.Capabilities.MaximumInflight
	}

	if pk.Connect.Keepalive <= minimumKeepalive {
		cl.ops.log.Warn(
			ErrMinimumKeepalive.Error(),
			"client", cl.ID,
			"keepalive", pk.Connect.Keepalive,
			"recommended", minimumKeepalive,
		)
	}

	cl.State.Keepalive = pk.Connect.Keepalive                                              // [MQTT-3.2.2-22]
	cl.State.Inflight.ResetReceiveQuota(int32(cl.ops.options.Capabilities.ReceiveMaximum)) // server receive max per client
	cl.State.Inflight.ResetSendQuota(int32(cl.Properties.Props.ReceiveMaximum))            // client receive max
	cl.State.TopicAliases.Outbound = NewOutboundTopicAliases(cl.Properties.Props.TopicAliasMaximum)

	// A copy, like the user name: the decoded identifier shares the
	// CONNECT packet's memory.
	cl.ID = strings.Clone(pk.Connect.ClientIdentifier)
	if cl.ID == "" {
		cl.ID = xid.New().String() // [MQTT-3.1.3-6] [MQTT-3.1.3-7]
		cl.Properties.Props.AssignedClientID = cl.ID
	}

	if pk.Connect.WillFlag {
		cl.Properties.Will = Will{
			Qos:               pk.Connect.WillQos,
			Retain:            pk.Connect.WillRetain,
			Payload:           bytes.Clone(pk.Connect.WillPayload), // copies, like the rest (edgechat patch 57)
			TopicName:         strings.Clone(pk.Connect.WillTopic),
			WillDelayInterval: pk.Connect.WillProperties.WillDelayInterval,
			User:              ownUserProperties(pk.Connect.WillProperties.User),

			MessageExpiryInterval: pk.Connect.WillProperties.MessageExpiryInterval,
			ContentType:           strings.Clone(pk.Connect.WillProperties.ContentType),
			ResponseTopic:         strings.Clone(pk.Connect.WillProperties.ResponseTopic),
			CorrelationData:       bytes.Clone(pk.Connect.WillProperties.CorrelationData),
			PayloadFormat:         pk.Connect.WillProperties.PayloadFormat,
			PayloadFormatFlag:     pk.Connect.WillProperties.PayloadFormatFlag,
		}
		if pk.Properties.SessionExpiryIntervalFlag &&
			pk.Properties.SessionExpiryInterval < pk.Connect.WillProperties.WillDelayInterval {
			cl.Properties.Will.WillDelayInterval = pk.Properties.SessionExpiryInterval
		}
		if pk.Connect.WillFlag {
			cl.Properties.Will.Flag = 1 // atomic for checking
		}
	}
}

// ownStrings gives the strings of p, a CONNECT's properties the client
// keeps, memory of their own (edgechat patch 57): decoded, they share the
// packet's buffer, which they would keep whole, the password with it, for
// the life of the connection. The user properties and the
// authentication method and data are not kept: the hooks had them with
// the CONNECT (OnConnect, OnConnectAuthenticate), the server reads them
// no more, and a client could fill the packet with them (64 KiB in
// edgechat, where a connection costs some 5 KB).
func ownStrings(p *packets.Properties) {
	p.ContentType = strings.Clone(p.ContentType)
	p.ResponseTopic = strings.Clone(p.ResponseTopic)
	p.AssignedClientID = strings.Clone(p.AssignedClientID)
	p.ResponseInfo = strings.Clone(p.ResponseInfo)
	p.ServerReference = strings.Clone(p.ServerReference)
	p.ReasonString = strings.Clone(p.ReasonString)
	p.User, p.AuthenticationMethod, p.AuthenticationData = nil, "", nil
}

// ownUserProperties is a copy of user properties with strings of their
// own (see ownStrings).
func ownUserProperties(user []packets.UserProperty) []packets.UserProperty {
	if len(user) == 0 {
		return user
	}
	own := make([]packets.UserProperty, len(user))
	for i, u := range user {
		own[i] = packets.UserProperty{Key: strings.Clone(u.Key), Val: strings.Clone(u.Val)}
	}
	return own
}

// refreshDeadline refreshes the read/write deadline for the net.Conn connection.
func (cl *Client) refreshDeadline(keepalive uint16) {
	if cl.Net.Conn != nil {
		_ = cl.Net.Conn.SetDeadline(keepaliveDeadline(keepalive)) // [MQTT-3.1.2-22]
	}
}

// keepaliveDeadline is the deadline for a client's next packet, from
// now: one and a half times its keepalive. Computed as a duration, not
// in uint16, which wrapped above 43,690 s (edgechat patch 60).
func keepaliveDeadline(keepalive uint16) time.Time {
	var expiry time.Time // nil time can be used to disable deadline if keepalive = 0
	if keepalive > 0 {
		expiry = time.Now().Add(time.Duration(keepalive) * 1500 * time.Millisecond) // [MQTT-3.1.2-22]
	}
	return expiry
}

// NextPacketID returns the next available (unused) packet id for the client.
// If no unused packet ids are available, an error is returned and the client
// should be disconnected.
func (cl *Client) NextPacketID() (i uint32, err error) {
	cl.packetIDs.Lock()
	defer cl.packetIDs.Unlock()

	i = atomic.LoadUint32(&cl.State.packetID)
	started := i
	overflowed := false
	for {
		if overflowed && i == started {
			return 0, packets.ErrQuotaExceeded
		}

		if i >= cl.ops.options.Capabilities.maximumPacketID {
			overflowed = true
			i = 0
			continue
		}

		i++

		if _, ok := cl.State.Inflight.Get(uint16(i)); !ok {
			atomic.StoreUint32(&cl.State.packetID, i)
			return i, nil
		}
	}
}

// ResendInflightMessages attempts to resend any pending inflight messages to connected clients.
func (cl *Client) ResendInflightMessages(force bool) error {
	if cl.State.Inflight.Len() == 0 {
		return nil
	}
	return cl.resendInflight(cl.State.Inflight.GetAll(false))
}

// resendInflight sends inflight messages again (ResendInflightMessages).
func (cl *Client) resendInflight(pending []packets.Packet) error {
	for _, tk := range pending {
		// A PUBLISH goes with the DUP flag its stored copy has: set once
		// it was sent (edgechat patch 46), so that one the session queued
		// while the client was away goes out the first time without it
		// [MQTT-3.3.1-1] [MQTT-3.3.1-3].
		first := tk.FixedHeader.Type == packets.Publish && !tk.FixedHeader.Dup

		cl.ops.hooks.OnQosPublish(cl, tk, tk.Created, 0)
		err := cl.WritePacket(tk)
		if err != nil && cl.discardUnsendable(tk, err) {
			// Too large for the new connection: discarded as a first
			// send is (edgechat patch 52). Failing the resend ended
			// the connection after its CONNACK, and every resumption
			// of the session after it.
			continue
		}
		if err != nil {
			return err
		}
		if first {
			cl.State.Inflight.markSent(keyOf(tk))
		}

		if tk.FixedHeader.Type == packets.Puback || tk.FixedHeader.Type == packets.Pubcomp {
			if ok := cl.State.Inflight.DeletePacket(tk); ok {
				cl.ops.hooks.OnQosComplete(cl, tk)
				atomic.AddInt64(&cl.ops.info.Inflight, -1)
			}
		}
	}

	return nil
}

// storeFull counts a delivery dropped because the session's store is
// full, and logs the first of an episode (edgechat patch 47): a client
// that acknowledges too slowly, or a session left offline, has every
// delivery to it dropped until its store has room; one WARN line each
// was a log flood that any one slow client could cause. The drops are
// still counted each (InflightDropped, OnPublishDropped).
func (cl *Client) storeFull() {
	if cl.State.storeFullDrops.Add(1) == 1 {
		cl.ops.log.Warn("client store quota reached: deliveries to it are dropped, and logged again with their count once its store has room",
			"client", cl.ID, "listener", cl.Net.Listener)
	}
}

// storeHasRoom ends an episode of storeFull, logging how many deliveries
// it dropped: the store has room again, or the session ends.
func (cl *Client) storeHasRoom() {
	if cl.State.storeFullDrops.Load() == 0 {
		return
	}
	if n := cl.State.storeFullDrops.Swap(0); n > 0 {
		cl.ops.log.Warn("client store quota no longer reached", "client", cl.ID, "listener", cl.Net.Listener, "dropped", n)
	}
}

// ClearInflights deletes all inflight messages for the client, e.g. for a disconnected user with a clean session.
// The session ends with them: the hooks told of each (OnQosDropped) see
// SessionEnded (edgechat patch 48).
func (cl *Client) ClearInflights() {
	cl.storeHasRoom()
	cl.State.sessionEnded.Store(true)
	for _, tk := range cl.State.Inflight.GetAll(false) {
		if ok := cl.State.Inflight.DeletePacket(tk); ok {
			cl.ops.hooks.OnQosDropped(cl, tk)
			atomic.AddInt64(&cl.ops.info.Inflight, -1)
		}
	}
}

// SessionEnded reports that the client's session has ended and its
// inflight messages were discarded with it (ClearInflights: a clean
// start, a session that expired or was ended): OnQosDropped for such a
// message tells of a delivery lost with its session, not of one that
// expired (edgechat patch 48).
func (cl *Client) SessionEnded() bool {
	return cl.State.sessionEnded.Load()
}

// handInflightsOver empties the inflight messages of a client whose
// session a new client inherited with a copy of them (edgechat patch
// 48): they are still in flight, the new client's, so neither dropped
// (no OnQosDropped, which counted each as dropped and had a storage
// hook delete the new client's copies, stored under the same client
// ID) nor uncounted from Info.Inflight.
func (cl *Client) handInflightsOver() {
	cl.storeHasRoom()
	for _, tk := range cl.State.Inflight.GetAll(false) {
		cl.State.Inflight.DeletePacket(tk)
	}
}

// ClearExpiredInflights deletes any inflight messages which have expired.
func (cl *Client) ClearExpiredInflights(now, maximumExpiry int64) []uint16 {
	deleted := []uint16{}
	for _, tk := range cl.State.Inflight.GetAll(false) {
		expired := tk.ProtocolVersion == 5 && tk.Expiry > 0 && tk.Expiry < now // [MQTT-3.3.2-5]

		// If the maximum message expiry interval is set (greater than 0), and the message
		// retention period exceeds the maximum expiry, the message will be forcibly removed.
		enforced := maximumExpiry > 0 && now-tk.Created > maximumExpiry

		if expired || enforced {
			if ok := cl.State.Inflight.DeletePacket(tk); ok {
				if tk.Expiry >= 0 && keyOf(tk)&clientChosen == 0 {
					// Sent and never to be acknowledged now: its quota
					// is free (clearExpiredInflights sends held ones).
					cl.State.Inflight.IncreaseSendQuota()
				}
				cl.ops.hooks.OnQosDropped(cl, tk)
				atomic.AddInt64(&cl.ops.info.Inflight, -1)
				deleted = append(deleted, tk.PacketID)
			}
		}
	}

	return deleted
}

// Read reads incoming packets from the connected client and transforms them into
// packets to be handled by the packetHandler.
func (cl *Client) Read(packetHandler ReadFn) error {
	var err error

	for {
		if cl.Closed() {
			return cl.endedBy()
		}

		cl.refreshDeadline(cl.State.Keepalive)
		fh := new(packets.FixedHeader)
		waiting := time.Now()
		err = cl.ReadFixedHeader(fh)
		if err != nil {
			return err
		}

		if time.Since(waiting) >= idleHandoff {
			err = cl.readAndHandleAside(fh, packetHandler)
		} else {
			err = cl.readAndHandle(fh, packetHandler)
		}
		if err != nil {
			return err
		}
	}
}

// idleHandoff is how long a client must have sent nothing for its next
// packet to be processed on a goroutine of its own (readAndHandleAside).
const idleHandoff = time.Second

// readAndHandleAside is readAndHandle on a short-lived goroutine, waited
// for. Processing a packet goes deep (packets are passed by value through
// the handlers and hooks: a PINGREQ and its PINGRESP take the stack to
// 16 KiB), and a goroutine's stack only shrinks back, by halves, at garbage
// collections. A client that is idle most of the time (a keepalive ping
// now and then) thus keeps its small stack; a busy client's packets are
// processed in place, at no extra cost.
//
//go:noinline
func (cl *Client) readAndHandleAside(fh *packets.FixedHeader, packetHandler ReadFn) error {
	done := make(chan error, 1)
	go func() {
		done <- cl.readAndHandle(fh, packetHandler)
	}()
	return <-done
}

// readAndHandle reads the rest of a packet and processes it. It is kept out
// of Read so that the packet (hundreds of bytes) lives in this frame, which
// is gone while Read waits for the next packet: an idle client's goroutine
// then uses little stack, and the garbage collector can shrink that stack.
//
//go:noinline
func (cl *Client) readAndHandle(fh *packets.FixedHeader, packetHandler ReadFn) error {
	pk, err := cl.ReadPacket(fh)
	if err != nil {
		return err
	}

	return packetHandler(cl, pk) // Process inbound packet.
}

// readWaiter is the server's Options.ReadWaiter, if any.
func (cl *Client) readWaiter() ReadWaiter {
	if cl.ops == nil || cl.ops.options == nil {
		return nil
	}
	return cl.ops.options.ReadWaiter
}

// Stop instructs the client to shut down all processing goroutines and disconnect.
func (cl *Client) Stop(err error) {
	cl.State.endOnce.Do(func() {

		if cl.Net.Conn != nil {
			if w := cl.readWaiter(); w != nil {
				// Before Close: a waiting client resumes and ends. Under
				// waitMu, so that a hand-off under way is either
				// registered already (and cancelled here) or not made:
				// one registered after this Cancel would wait on a
				// closed socket, which the kernel drops from its event
				// set, and the client would never end.
				cl.State.waitMu.Lock()
				cl.State.waitStopped = true
				w.Cancel(cl.Net.Conn)
				cl.State.waitMu.Unlock()
			}
			_ = cl.Net.Conn.Close() // omit close error
		}

		if err != nil {
			cl.State.stopCause.Store(err)
		}

		if cl.State.cancelOpen != nil {
			cl.State.cancelOpen()
		}

		atomic.StoreInt64(&cl.State.disconnected, time.Now().Unix())
	})
}

// endedBy is what a read loop that finds the client stopped returns:
// nil after the client's own DISCONNECT (processDisconnect stops it with
// CodeDisconnect), which discards its will [MQTT-3.1.2-10]; otherwise
// the cause the server stopped it with (a takeover, a hook's
// DisconnectClient), so that the connection ends as one closed by the
// server and its will is published [MQTT-3.1.2-8] (edgechat patch 50).
// Before, any stop found between two packets ended the connection as a
// DISCONNECT would, and the will was dropped.
func (cl *Client) endedBy() error {
	cause := cl.StopCause()
	if cause == nil || errors.Is(cause, packets.CodeDisconnect) {
		return nil
	}
	return cause
}

// StopCause returns the reason the client connection was stopped, if any.
func (cl *Client) StopCause() error {
	if cl.State.stopCause.Load() == nil {
		return nil
	}
	return cl.State.stopCause.Load().(error)
}

// StopTime returns the the time the client disconnected in unix time, else zero.
func (cl *Client) StopTime() int64 {
	return atomic.LoadInt64(&cl.State.disconnected)
}

// Closed returns true if client connection is closed.
func (cl *Client) Closed() bool {
	return cl.State.open == nil || cl.State.open.Err() != nil
}

func (cl *Client) IsTakenOver() bool {
	return cl.State.isTakenOver.Load()
}

// Successor returns the client that took cl's session over and inherited
// it, its inflight messages with it (edgechat patch 63), or nil: none
// did, or one discarded the session (a clean start, a lost session). It
// takes sessionEnd, which a takeover holds from the DISCONNECT it sends
// cl until the session is the new client's, so a hook told of cl's end
// (OnDisconnect, which the takeover's DISCONNECT can bring about while
// the takeover is still under way) learns for sure whether the messages
// cl was sent and did not acknowledge moved on to a live connection.
func (cl *Client) Successor() *Client {
	cl.State.sessionEnd.Lock()
	defer cl.State.sessionEnd.Unlock()
	return cl.State.successor
}

// LoseSession marks the client's session as no longer whole (edgechat
// patch 45): a QoS>0 message the session should hold was dropped (its
// store full). The next connection of the client identifier does not
// resume it, as if it asked for a clean start: session present 0, so
// that the client knows to subscribe again and to recover what it may
// have missed. Called from OnPublishDropped, which runs under the
// session's lock for such a drop, a takeover either inherits the session
// before the drop or sees the mark; the caller ends an offline session
// (EndSession) to free what it holds.
func (cl *Client) LoseSession() bool {
	return cl.State.sessionLost.CompareAndSwap(false, true)
}

// ReadFixedHeader reads in the values of the next packet's fixed header.
func (cl *Client) ReadFixedHeader(fh *packets.FixedHeader) error {
	if cl.Net.bconn == nil {
		return ErrConnectionClosed
	}

	b, err := cl.Net.bconn.ReadByte()
	if err != nil {
		return err
	}

	err = fh.Decode(b)
	if err != nil {
		return err
	}

	var bu int
	fh.Remaining, bu, err = packets.DecodeLength(cl.Net.bconn)
	if err != nil {
		return err
	}

	if cl.ops.options.Capabilities.MaximumPacketSize > 0 && uint32(fh.Remaining+1) > cl.ops.options.Capabilities.MaximumPacketSize {
		return packets.ErrPacketTooLarge // [MQTT-3.2.2-15]
	}

	atomic.AddInt64(&cl.ops.info.BytesReceived, int64(bu+1))
	return nil
}

// ReadPacket reads the remaining buffer into an MQTT packet.
func (cl *Client) ReadPacket(fh *packets.FixedHeader) (pk packets.Packet, err error) {
	atomic.AddInt64(&cl.ops.info.PacketsReceived, 1)

	pk.ProtocolVersion = cl.Properties.ProtocolVersion // inherit client protocol version for decoding
	pk.FixedHeader = *fh
	p := make([]byte, pk.FixedHeader.Remaining)
	n, err := io.ReadFull(cl.Net.bconn, p)
	if err != nil {
		return pk, err
	}

	atomic.AddInt64(&cl.ops.info.BytesReceived, int64(n))

	// p is this packet's own buffer (made above, read into once), so the
	// decoded values can share it: no second copy of every packet. (A copy
	// would be needed if p were reused for the next packet; it is not.)
	px := p
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectDecode(px)
	case packets.Disconnect:
		err = pk.DisconnectDecode(px)
	case packets.Connack:
		err = pk.ConnackDecode(px)
	case packets.Publish:
		err = pk.PublishDecode(px)
		if err == nil {
			atomic.AddInt64(&cl.ops.info.MessagesReceived, 1)
		}
	case packets.Puback:
		err = pk.PubackDecode(px)
	case packets.Pubrec:
		err = pk.PubrecDecode(px)
	case packets.Pubrel:
		err = pk.PubrelDecode(px)
	case packets.Pubcomp:
		err = pk.PubcompDecode(px)
	case packets.Subscribe:
		err = pk.SubscribeDecode(px)
	case packets.Suback:
		err = pk.SubackDecode(px)
	case packets.Unsubscribe:
		err = pk.UnsubscribeDecode(px)
	case packets.Unsuback:
		err = pk.UnsubackDecode(px)
	case packets.Pingreq:
	case packets.Pingresp:
	case packets.Auth:
		err = pk.AuthDecode(px)
	default:
		err = fmt.Errorf("invalid packet type; %v", pk.FixedHeader.Type)
	}

	if err != nil {
		return pk, err
	}

	if cl.ops.hooks.Provides(OnPacketRead) { // else no copy of the packet through the call
		pk, err = cl.ops.hooks.OnPacketRead(cl, pk)
	}
	return
}

// WritePacket encodes and writes a packet to the client.
func (cl *Client) WritePacket(pk packets.Packet) error {
	if cl.Closed() {
		return ErrConnectionClosed
	}

	if cl.Net.Conn == nil {
		return nil
	}

	pk, buf, err := cl.encodePacket(pk)
	if err != nil {
		return err
	}
	return cl.writeEncoded(pk, buf)
}

// finalWriteWait bounds DisconnectClient's final write: the connection
// closes next, and a client that does not read must not hold the caller
// (a takeover's new connection, the server's shutdown) for its write
// deadline.
const finalWriteWait = 2 * time.Second

// writeFinal writes pk, the last packet of a connection the server closes
// next (edgechat patch 34): after the pending output (outbuf), ahead of the
// queued packets, which go with the connection. WritePacket would append
// it to outbuf while packets are queued, for the write loop to flush
// later, and the connection closed before it did: the DISCONNECT's reason
// never reached the client. It waits at most wait for the socket: a
// write in progress is cut short by the same deadline, so that the lock
// it holds is released.
func (cl *Client) writeFinal(pk packets.Packet, wait time.Duration) error {
	if cl.Closed() {
		return ErrConnectionClosed
	}
	if cl.Net.Conn == nil {
		return nil
	}
	pk, buf, err := cl.encodePacket(pk)
	if err != nil {
		return err
	}
	b := buf.Bytes()
	_ = cl.Net.Conn.SetWriteDeadline(time.Now().Add(wait))
	cl.Lock()
	err = cl.flushOutbuf()
	var n int64
	if err == nil {
		n, err = buf.WriteTo(cl.Net.Conn)
	}
	cl.Unlock()
	if err != nil {
		return err
	}
	cl.packetSent(pk, n, b)
	return nil
}

// flushFinal writes what is already buffered for the client, within wait,
// before its connection is closed without a DISCONNECT (an MQTT 3.1.1
// client: edgechat patch 62).
func (cl *Client) flushFinal(wait time.Duration) error {
	if cl.Closed() {
		return ErrConnectionClosed
	}
	if cl.Net.Conn == nil {
		return nil
	}
	_ = cl.Net.Conn.SetWriteDeadline(time.Now().Add(wait))
	cl.Lock()
	err := cl.flushOutbuf()
	cl.Unlock()
	return err
}

// encodePacket prepares pk for this client (protocol version, size limit,
// problem and response information, remaining expiry), runs the
// OnPacketEncode hooks and encodes it.
func (cl *Client) encodePacket(pk packets.Packet) (packets.Packet, *bytes.Buffer, error) {
	pk = cl.prepareEncode(pk)
	buf, err := encodePrepared(pk)
	return pk, buf, err
}

// prepareEncode sets what the encoding of pk depends on for this client
// (expiry, protocol version, mods) and runs the OnPacketEncode hooks.
func (cl *Client) prepareEncode(pk packets.Packet) packets.Packet {
	if pk.Expiry > 0 {
		expiry := pk.Expiry - time.Now().Unix()
		if expiry < 1 {
			expiry = 1
		}
		pk.Properties.MessageExpiryInterval = uint32(expiry) // [MQTT-3.3.2-6]
	}

	pk.ProtocolVersion = cl.Properties.ProtocolVersion
	if pk.Mods.MaxSize == 0 { // NB we use this statement to embed client packet sizes in tests
		pk.Mods.MaxSize = cl.Properties.Props.MaximumPacketSize
	}

	if cl.Properties.Props.RequestProblemInfoFlag && cl.Properties.Props.RequestProblemInfo == 0x0 {
		pk.Mods.DisallowProblemInfo = true // [MQTT-3.1.2-29] strict, no problem info on any packet if set
	}

	if pk.FixedHeader.Type != packets.Connack || cl.Properties.Props.RequestResponseInfo == 0x1 || cl.ops.options.Capabilities.Compatibilities.AlwaysReturnResponseInfo {
		pk.Mods.AllowResponseInfo = true // [MQTT-3.1.2-28] we need to know which properties we can encode
	}

	return cl.ops.hooks.OnPacketEncode(cl, pk)
}

// encodePrepared encodes a packet that encodePacket has prepared for its
// client (properties, mods, OnPacketEncode).
func encodePrepared(pk packets.Packet) (*bytes.Buffer, error) {
	buf := new(bytes.Buffer)
	if pk.FixedHeader.Type == packets.Publish {
		buf.Grow(publishSizeHint(&pk)) // one allocation instead of a few as it grows
	}
	if err := encodePreparedTo(buf, pk); err != nil {
		return nil, err
	}
	return buf, nil
}

// encodePreparedTo appends the encoding of a prepared packet to buf; on
// an error buf is left as it was.
func encodePreparedTo(buf *bytes.Buffer, pk packets.Packet) error {
	var err error
	start := buf.Len()
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(buf)
	case packets.Connack:
		err = pk.ConnackEncode(buf)
	case packets.Publish:
		err = pk.PublishEncode(buf)
	case packets.Puback:
		err = pk.PubackEncode(buf)
	case packets.Pubrec:
		err = pk.PubrecEncode(buf)
	case packets.Pubrel:
		err = pk.PubrelEncode(buf)
	case packets.Pubcomp:
		err = pk.PubcompEncode(buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(buf)
	case packets.Suback:
		err = pk.SubackEncode(buf)
	case packets.Unsubscribe:
		err = pk.UnsubscribeEncode(buf)
	case packets.Unsuback:
		err = pk.UnsubackEncode(buf)
	case packets.Pingreq:
		err = pk.PingreqEncode(buf)
	case packets.Pingresp:
		err = pk.PingrespEncode(buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(buf)
	case packets.Auth:
		err = pk.AuthEncode(buf)
	default:
		err = fmt.Errorf("%w: %v", packets.ErrNoValidPacketAvailable, pk.FixedHeader.Type)
	}
	if err == nil && pk.Mods.MaxSize > 0 && uint32(buf.Len()-start) > pk.Mods.MaxSize {
		err = packets.ErrPacketTooLarge // [MQTT-3.1.2-24] [MQTT-3.1.2-25]
	}
	if err != nil {
		buf.Truncate(start)
	}
	return err
}

// writeEncoded writes an encoded packet to the connection, or appends it
// to the pending output when more packets are queued.
func (cl *Client) writeEncoded(pk packets.Packet, buf *bytes.Buffer) (err error) {
	n, err := cl.writeBuffer(buf)
	if err != nil {
		return err
	}
	cl.packetSent(pk, n, buf.Bytes())
	return nil
}

// writeBuffer writes encoded packets to the connection, or appends them
// to the pending output when more packets are queued.
func (cl *Client) writeBuffer(buf *bytes.Buffer) (n int64, err error) {
	cl.Lock()
	defer cl.Unlock()
	if cl.outboundLen() == 0 {
		if cl.Net.outbuf == nil {
			return buf.WriteTo(cl.Net.Conn)
		}

		// first write to buffer, then flush buffer
		n, _ := cl.Net.outbuf.Write(buf.Bytes()) // will always be successful
		err = cl.flushOutbuf()
		return int64(n), err
	}

	// there are more writes in the queue
	if cl.Net.outbuf == nil {
		if buf.Len() >= cl.ops.options.ClientNetWriteBufferSize {
			return buf.WriteTo(cl.Net.Conn)
		}
		cl.Net.outbuf = new(bytes.Buffer)
	}

	wn, _ := cl.Net.outbuf.Write(buf.Bytes()) // will always be successful
	if cl.Net.outbuf.Len() < cl.ops.options.ClientNetWriteBufferSize {
		return int64(wn), nil
	}

	err = cl.flushOutbuf()
	return int64(wn), err
}

// packetSent counts a packet of n bytes written and runs the
// OnPacketSent hooks.
func (cl *Client) packetSent(pk packets.Packet, n int64, b []byte) {
	atomic.AddInt64(&cl.ops.info.BytesSent, n)
	atomic.AddInt64(&cl.ops.info.PacketsSent, 1)
	if pk.FixedHeader.Type == packets.Publish {
		atomic.AddInt64(&cl.ops.info.MessagesSent, 1)
		cl.aliasSent(&pk)
	}

	cl.ops.hooks.OnPacketSent(cl, pk, b)
}

// aliasSent records that pk, written to the connection, named its topic
// with an outbound alias: later deliveries may use the alias alone
// (OutboundTopicAliases.Use, edgechat patch 38).
func (cl *Client) aliasSent(pk *packets.Packet) {
	if pk.Properties.TopicAlias > 0 && pk.TopicName != "" {
		cl.State.TopicAliases.Outbound.Sent(pk.TopicName)
	}
}

func (cl *Client) flushOutbuf() (err error) {
	if cl.Net.outbuf == nil {
		return
	}

	_, err = cl.Net.outbuf.WriteTo(cl.Net.Conn)
	if err == nil {
		cl.Net.outbuf = nil
	}
	return
}
