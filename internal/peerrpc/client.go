package peerrpc

import (
	"bufio"
	"context"
	"encoding/gob"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Client makes calls on one connection; concurrent calls share it and
// answers are matched by sequence number. Safe for concurrent use.
type Client struct {
	conn         net.Conn
	writeTimeout time.Duration

	sendMu sync.Mutex
	buf    *bufio.Writer
	enc    *gob.Encoder
	seq    uint64

	mu      sync.Mutex
	pending map[uint64]*call
	err     error // set once the connection is done; then no call is pending

	lastRecv atomic.Int64 // unix nanos of the last answer's header
	broken   atomic.Bool
}

type call struct {
	reply any
	done  chan error // buffered: the reader never blocks on it
}

// NewClient starts reading answers from conn. writeTimeout bounds each
// request's write (0: none), so a peer that stops reading cannot block
// every caller.
func NewClient(conn net.Conn, writeTimeout time.Duration) *Client {
	c := &Client{conn: conn, writeTimeout: writeTimeout, pending: make(map[uint64]*call)}
	c.buf = bufio.NewWriter(conn)
	c.enc = gob.NewEncoder(c.buf)
	go c.read()
	return c
}

// Broken reports whether the connection failed or was closed.
func (c *Client) Broken() bool { return c.broken.Load() }

// LastReceived is when an answer last arrived (zero time: never).
func (c *Client) LastReceived() time.Time {
	if n := c.lastRecv.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// Close closes the connection; pending calls fail with ErrShutdown.
func (c *Client) Close() error {
	c.broken.Store(true)
	return c.conn.Close()
}

// Call sends req to serviceMethod and decodes the answer into reply. It
// returns a ServerError when the peer answered with an error, ctx's error
// when ctx ended first (a late answer is discarded), or another error
// (wrapping ErrShutdown when the connection went away) when the
// connection failed. reply is not touched after Call returns.
func (c *Client) Call(ctx context.Context, serviceMethod string, req, reply any) error {
	cl := &call{reply: reply, done: make(chan error, 1)}
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return err
	}
	c.mu.Unlock()

	c.sendMu.Lock()
	c.seq++
	seq := c.seq
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		c.sendMu.Unlock()
		return err
	}
	c.pending[seq] = cl
	c.mu.Unlock()
	if c.writeTimeout > 0 {
		_ = c.conn.SetWriteDeadline(time.Now().Add(c.writeTimeout))
	}
	err := c.enc.Encode(&requestHeader{ServiceMethod: serviceMethod, Seq: seq})
	if err == nil {
		err = c.enc.Encode(req)
	}
	if err == nil {
		err = c.buf.Flush()
	}
	c.sendMu.Unlock()
	if err != nil {
		// The stream may hold half a request: nothing more can go on it.
		c.forget(seq)
		_ = c.Close()
		return fmt.Errorf("%w: send %s: %w", ErrShutdown, serviceMethod, err)
	}

	select {
	case err := <-cl.done:
		return err
	case <-ctx.Done():
		if c.forget(seq) {
			return ctx.Err()
		}
		// The reader holds the call and is decoding into reply: wait for
		// it so that reply is not written after Call returns; closing
		// the connection bounds the wait when the peer stalls mid-answer.
		_ = c.Close()
		<-cl.done
		return ctx.Err()
	}
}

// forget removes seq from the pending calls; false when the reader
// already took it.
func (c *Client) forget(seq uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.pending[seq]; !ok {
		return false
	}
	delete(c.pending, seq)
	return true
}

func (c *Client) read() {
	dec := gob.NewDecoder(bufio.NewReader(c.conn))
	var err error
	for {
		var resp responseHeader
		if err = dec.Decode(&resp); err != nil {
			break
		}
		c.lastRecv.Store(time.Now().UnixNano())
		c.mu.Lock()
		cl := c.pending[resp.Seq]
		delete(c.pending, resp.Seq)
		c.mu.Unlock()
		switch {
		case cl == nil: // the caller gave up
			err = discard(dec)
		case resp.Error != "":
			err = discard(dec)
			cl.done <- ServerError(resp.Error)
		default:
			err = dec.Decode(cl.reply)
			if err != nil {
				err = fmt.Errorf("peerrpc: reading the answer to %s: %w", resp.ServiceMethod, err)
			}
			cl.done <- err
		}
		if err != nil {
			break
		}
	}
	c.broken.Store(true)
	_ = c.conn.Close()
	c.mu.Lock()
	c.err = fmt.Errorf("%w: %w", ErrShutdown, err)
	for seq, cl := range c.pending {
		cl.done <- c.err
		delete(c.pending, seq)
	}
	c.mu.Unlock()
}
