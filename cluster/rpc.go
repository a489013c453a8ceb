package cluster

import (
	"bufio"
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"net"
	"net/rpc"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgechat/edgechat/internal/wire"
)

// Node-to-node RPC: Go's net/rpc with the gob codec over the cluster
// port (see transport.go). One connection per peer is pooled and shared
// by concurrent calls (net/rpc matches replies by sequence number).
//
// Other packages add services with RegisterRPC and call them with Call:
//
//	type Forward struct{ ... }
//	func (f *Forward) Deliver(req *DeliverReq, resp *DeliverResp) error
//	n.RegisterRPC("Forward", &Forward{...})
//	err := n.Call(ctx, peerAddr, "Forward.Deliver", &req, &resp)
//
// Handler errors reach the caller as text only (rpc.ServerError); put any
// error kind the caller must act on into the reply struct.

// DefaultRPCTimeout is the deadline of a Call whose ctx has none.
const DefaultRPCTimeout = 5 * time.Second

// clusterService is the name of the node's own RPC service.
const clusterService = "Cluster"

// ErrPeerUnreachable means a call could not be completed with the peer
// (dial failed, connection lost, deadline passed). When the request was
// already sent it may have been executed.
var ErrPeerUnreachable = fmt.Errorf("cluster: peer unreachable: %w", wire.ErrUnavailable)

// errNotSent marks a call that failed before its request left (the dial
// failed), so that it is safe to send again elsewhere.
var errNotSent = errors.New("request not sent")

// RegisterRPC publishes the exported methods of handler, which have the
// net/rpc shape func (t *T) Method(req *Req, resp *Resp) error, as
// "name.Method" on this node's cluster port. Req and Resp must be
// gob-encodable. Register before peers call; the name "Cluster" is
// reserved.
func (n *Raft) RegisterRPC(name string, handler any) error {
	if name == clusterService {
		return fmt.Errorf("cluster: RPC service name %q is reserved", name)
	}
	if err := n.rpcSrv.RegisterName(name, handler); err != nil {
		return fmt.Errorf("cluster: register RPC %s: %w", name, err)
	}
	return nil
}

// Call invokes method ("Service.Method") on the node at peerAddr (its
// advertised cluster address) and decodes the answer into resp. The call
// ends at ctx's deadline, or DefaultRPCTimeout when ctx has none. Errors
// are ErrPeerUnreachable (wrapping wire.ErrUnavailable) for transport
// failures, or the handler's error as an rpc.ServerError.
func (n *Raft) Call(ctx context.Context, peerAddr, method string, req, resp any) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultRPCTimeout)
		defer cancel()
	}
	return n.peers.call(ctx, peerAddr, method, req, resp)
}

// peerPool keeps one RPC client per peer address.
type peerPool struct {
	mu      sync.Mutex
	clients map[string]*peerClient
	closed  bool
}

type peerClient struct {
	c     *rpc.Client
	codec *clientCodec
}

func newPeerPool() *peerPool { return &peerPool{clients: make(map[string]*peerClient)} }

func (p *peerPool) get(ctx context.Context, addr string) (*peerClient, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrStopped
	}
	if pc := p.clients[addr]; pc != nil && !pc.codec.broken.Load() {
		p.mu.Unlock()
		return pc, nil
	}
	p.mu.Unlock()

	// Dial outside the lock: a dead peer must not stall calls to others.
	// Two racing dials both succeed; the loser's connection is closed.
	d, _ := ctx.Deadline()
	conn, err := dialMux(addr, muxRPC, time.Until(d))
	if err != nil {
		return nil, fmt.Errorf("%w: dial %s: %w: %w", ErrPeerUnreachable, addr, errNotSent, err)
	}
	codec := newClientCodec(conn)
	pc := &peerClient{c: rpc.NewClientWithCodec(codec), codec: codec}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		_ = pc.c.Close()
		return nil, ErrStopped
	}
	if old := p.clients[addr]; old != nil && !old.codec.broken.Load() {
		_ = pc.c.Close()
		return old, nil
	}
	if old := p.clients[addr]; old != nil {
		_ = old.c.Close()
	}
	p.clients[addr] = pc
	return pc, nil
}

// drop closes pc if it is still the pooled client of addr.
func (p *peerPool) drop(addr string, pc *peerClient) {
	p.mu.Lock()
	if p.clients[addr] == pc {
		delete(p.clients, addr)
	}
	p.mu.Unlock()
	_ = pc.c.Close()
}

func (p *peerPool) call(ctx context.Context, addr, method string, req, resp any) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %s to %s: %w", ErrPeerUnreachable, method, addr, err)
	}
	pc, err := p.get(ctx, addr)
	if err != nil {
		return err
	}
	sent := time.Now()
	call := pc.c.Go(method, req, resp, make(chan *rpc.Call, 1))
	select {
	case <-call.Done:
		err := call.Error
		if err == nil {
			return nil
		}
		var se rpc.ServerError
		if errors.As(err, &se) {
			return fmt.Errorf("cluster: %s on %s: %w", method, addr, err)
		}
		// Connection-level failure: the next call redials.
		p.drop(addr, pc)
		return fmt.Errorf("%w: %s to %s: %w", ErrPeerUnreachable, method, addr, err)
	case <-ctx.Done():
		// net/rpc cannot cancel a call; the reply, if any, is discarded.
		// If nothing at all came back on the connection since the call
		// was sent, it is probably dead (peer partitioned or frozen):
		// close it so that later calls redial instead of queueing on it.
		if pc.codec.lastRecv.Load() < sent.UnixNano() {
			p.drop(addr, pc)
		}
		return fmt.Errorf("%w: %s to %s: %w", ErrPeerUnreachable, method, addr, ctx.Err())
	}
}

func (p *peerPool) close() {
	p.mu.Lock()
	p.closed = true
	cs := p.clients
	p.clients = nil
	p.mu.Unlock()
	for _, pc := range cs {
		_ = pc.c.Close()
	}
}

// clientCodec is net/rpc's gob client codec plus two observations used
// by the pool: when a reply last arrived, and whether the connection broke.
type clientCodec struct {
	conn     net.Conn
	dec      *gob.Decoder
	enc      *gob.Encoder
	encBuf   *bufio.Writer
	lastRecv atomic.Int64 // unix nanos of the last reply header
	broken   atomic.Bool
}

var _ rpc.ClientCodec = (*clientCodec)(nil)

func newClientCodec(conn net.Conn) *clientCodec {
	buf := bufio.NewWriter(conn)
	return &clientCodec{conn: conn, dec: gob.NewDecoder(conn), enc: gob.NewEncoder(buf), encBuf: buf}
}

func (c *clientCodec) WriteRequest(r *rpc.Request, body any) error {
	// net/rpc writes under a client-wide lock, so a peer that stops
	// reading must not block the writer (and every other caller) forever.
	_ = c.conn.SetWriteDeadline(time.Now().Add(DefaultRPCTimeout))
	err := c.enc.Encode(r)
	if err == nil {
		err = c.enc.Encode(body)
	}
	if err == nil {
		err = c.encBuf.Flush()
	}
	if err != nil {
		c.broken.Store(true)
	}
	return err
}

func (c *clientCodec) ReadResponseHeader(r *rpc.Response) error {
	if err := c.dec.Decode(r); err != nil {
		c.broken.Store(true)
		return err
	}
	c.lastRecv.Store(time.Now().UnixNano())
	return nil
}

func (c *clientCodec) ReadResponseBody(body any) error { return c.dec.Decode(body) }

func (c *clientCodec) Close() error {
	c.broken.Store(true)
	return c.conn.Close()
}
