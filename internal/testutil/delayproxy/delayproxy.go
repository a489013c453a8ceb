// Package delayproxy is a TCP forwarder for tests and benchmarks that
// adds a one-way delay in each direction, in user space (the kernels the
// tests run on may have no netem): every chunk read from one side is
// written to the other no earlier than the delay after it was read, in
// order, without limiting throughput (chunks are timestamped and queued,
// and a writer sends each at its time). The queue of a direction is
// bounded: when it is full the reader stops reading, and TCP flow
// control pushes back on the sender. A proxy can be cut (every
// connection through it closed at once, new ones refused) and restored:
// a network outage.
//
// It listens on 127.0.0.1:0 and imports nothing of edgechat's.
package delayproxy

import (
	"errors"
	"net"
	"sync"
	"time"
)

// queueChunks bounds a direction's queue (chunks of at most chunkBytes).
const (
	queueChunks = 4096
	chunkBytes  = 32 << 10
)

// Proxy forwards the connections it accepts to a target with a delay.
type Proxy struct {
	ln net.Listener

	mu     sync.Mutex
	target string        // "": connections are refused (closed at once)
	delay  time.Duration // for connections accepted from now on
	cut    bool
	conns  map[net.Conn]bool // both ends of every live connection
	closed bool
	wg     sync.WaitGroup // the accept loop and every pipe
}

// New listens on 127.0.0.1:0 and forwards to target (which may be set
// later with SetTarget) with delay one way in each direction.
func New(target string, delay time.Duration) (*Proxy, error) {
	if delay < 0 {
		return nil, errors.New("delayproxy: negative delay")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, delay: delay, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Addr is the host:port to dial.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetTarget changes where new connections go ("": refuse them).
func (p *Proxy) SetTarget(addr string) {
	p.mu.Lock()
	p.target = addr
	p.mu.Unlock()
}

// SetDelay changes the one-way delay of new connections.
func (p *Proxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = max(d, 0)
	p.mu.Unlock()
}

// Delay is the one-way delay of new connections.
func (p *Proxy) Delay() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.delay
}

// SetCut cuts the proxy (closing every connection through it, data in
// flight lost, and refusing new ones) or restores it.
func (p *Proxy) SetCut(cut bool) {
	p.mu.Lock()
	p.cut = cut
	var open []net.Conn
	if cut {
		for c := range p.conns {
			open = append(open, c)
		}
	}
	p.mu.Unlock()
	for _, c := range open {
		_ = c.Close()
	}
}

// Conns is how many connections are open through the proxy.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns) / 2
}

// Close stops listening, closes every connection and waits for the
// proxy's goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	err := p.ln.Close()
	p.SetCut(true)
	p.wg.Wait()
	return err
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		target, cut, delay := p.target, p.cut, p.delay
		p.mu.Unlock()
		if cut || target == "" {
			_ = c.Close()
			continue
		}
		up, err := net.Dial("tcp", target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		if p.cut || p.closed { // cut while dialling
			p.mu.Unlock()
			_ = c.Close()
			_ = up.Close()
			continue
		}
		p.conns[c], p.conns[up] = true, true
		p.wg.Add(2)
		p.mu.Unlock()
		var both sync.WaitGroup
		both.Add(2)
		go p.pipe(up, c, delay, &both)
		go p.pipe(c, up, delay, &both)
		go func() {
			both.Wait()
			_ = c.Close()
			_ = up.Close()
			p.mu.Lock()
			delete(p.conns, c)
			delete(p.conns, up)
			p.mu.Unlock()
		}()
	}
}

// chunk is what one read returned and when it may be written.
type chunk struct {
	b   []byte
	due time.Time
}

// pipe copies src to dst, each chunk delay after it was read. At src's
// end it sends what is queued and closes dst's write side; a write error
// closes both connections.
func (p *Proxy) pipe(dst, src net.Conn, delay time.Duration, both *sync.WaitGroup) {
	defer p.wg.Done()
	defer both.Done()
	q := make(chan chunk, queueChunks)
	go func() {
		defer close(q)
		buf := make([]byte, chunkBytes)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				q <- chunk{b: append([]byte(nil), buf[:n]...), due: time.Now().Add(delay)}
			}
			if err != nil {
				return
			}
		}
	}()
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	failed := false
	for c := range q {
		if failed {
			continue // drain until the reader ends (both are closed)
		}
		if d := time.Until(c.due); d > 0 {
			timer.Reset(d)
			<-timer.C
		}
		if _, err := dst.Write(c.b); err != nil {
			failed = true
			_ = dst.Close()
			_ = src.Close()
		}
	}
	if tc, ok := dst.(*net.TCPConn); ok && !failed {
		_ = tc.CloseWrite()
	}
}
