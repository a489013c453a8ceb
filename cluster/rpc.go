package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/edgechat/edgechat/internal/peerrpc"
	"github.com/edgechat/edgechat/internal/wire"
)

// Node-to-node RPC: internal/peerrpc (net/rpc's wire format with gob)
// over the cluster port (see transport.go). One connection per peer is
// pooled and shared by concurrent calls.
//
// Other packages add services with RegisterRPC and call them with Call:
//
//	n.RegisterRPC("Forward", peerrpc.Methods{"Deliver": peerrpc.Method(f.deliver)})
//	err := n.Call(ctx, peerAddr, "Forward.Deliver", &req, &resp)
//
// Handler errors reach the caller as text only (peerrpc.ServerError); put
// any error kind the caller must act on into the reply struct.

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

func newRPCServer() *peerrpc.Server {
	s := peerrpc.NewServer()
	s.WriteTimeout = DefaultRPCTimeout
	return s
}

// RegisterRPC serves methods as "name.Method" on this node's cluster
// port (requests and replies must be gob-encodable). Register before
// peers call; the name "Cluster" is reserved.
func (n *Raft) RegisterRPC(name string, methods peerrpc.Methods) error {
	if name == clusterService {
		return fmt.Errorf("cluster: RPC service name %q is reserved", name)
	}
	if err := n.rpcSrv.Register(name, methods); err != nil {
		return fmt.Errorf("cluster: register RPC %s: %w", name, err)
	}
	return nil
}

// Call invokes method ("Service.Method") on the node at peerAddr (its
// advertised cluster address) and decodes the answer into resp. The call
// ends at ctx's deadline, or DefaultRPCTimeout when ctx has none. Errors
// are ErrPeerUnreachable (wrapping wire.ErrUnavailable) for transport
// failures, or the handler's error as a peerrpc.ServerError.
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

type peerClient = peerrpc.Client

func newPeerPool() *peerPool { return &peerPool{clients: make(map[string]*peerClient)} }

func (p *peerPool) get(ctx context.Context, addr string) (*peerClient, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrStopped
	}
	if pc := p.clients[addr]; pc != nil && !pc.Broken() {
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
	pc := peerrpc.NewClient(conn, DefaultRPCTimeout)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		_ = pc.Close()
		return nil, ErrStopped
	}
	if old := p.clients[addr]; old != nil && !old.Broken() {
		_ = pc.Close()
		return old, nil
	}
	if old := p.clients[addr]; old != nil {
		_ = old.Close()
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
	_ = pc.Close()
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
	err = pc.Call(ctx, method, req, resp)
	var se peerrpc.ServerError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &se):
		return fmt.Errorf("cluster: %s on %s: %w", method, addr, err)
	case ctx.Err() != nil:
		// If nothing at all came back on the connection since the call
		// was sent, it is probably dead (peer partitioned or frozen):
		// close it so that later calls redial instead of queueing on it.
		if pc.LastReceived().Before(sent) {
			p.drop(addr, pc)
		}
		return fmt.Errorf("%w: %s to %s: %w", ErrPeerUnreachable, method, addr, ctx.Err())
	default:
		// Connection-level failure: the next call redials.
		p.drop(addr, pc)
		return fmt.Errorf("%w: %s to %s: %w", ErrPeerUnreachable, method, addr, err)
	}
}

func (p *peerPool) close() {
	p.mu.Lock()
	p.closed = true
	cs := p.clients
	p.clients = nil
	p.mu.Unlock()
	for _, pc := range cs {
		_ = pc.Close()
	}
}
