package peerrpc

import (
	"bufio"
	"context"
	"encoding/gob"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/edgechat/edgechat/internal/workpool"
)

// Server serves registered methods on the connections given to
// ServeConn. Safe for concurrent use.
type Server struct {
	// WriteTimeout bounds each answer's write, so that a peer that stops
	// reading cannot hold the connection's handlers forever (0: none).
	WriteTimeout time.Duration

	mu      sync.RWMutex
	methods map[string]Handler // "Service.Method"
	names   map[string]bool    // registered services

	// handlers run the requests: a handler (a forwarded delivery goes
	// through the whole MQTT publish path) needs a deep stack, which a
	// fresh goroutine per request grew every time.
	handlers *workpool.Pool
}

// handlerIdle is how long a handler's worker waits for the next request.
const handlerIdle = 5 * time.Second

// NewServer returns a server with no services.
func NewServer() *Server {
	return &Server{methods: make(map[string]Handler), names: make(map[string]bool),
		handlers: workpool.New(context.Background(), handlerIdle)}
}

// Register serves methods as "service.Name". A service registers once.
func (s *Server) Register(service string, methods Methods) error {
	if service == "" || strings.Contains(service, ".") {
		return fmt.Errorf("peerrpc: bad service name %q", service)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.names[service] {
		return fmt.Errorf("peerrpc: service %q already registered", service)
	}
	s.names[service] = true
	for name, h := range methods {
		s.methods[service+"."+name] = h
	}
	return nil
}

func (s *Server) lookup(serviceMethod string) (Handler, error) {
	svc, _, ok := strings.Cut(serviceMethod, ".")
	if !ok {
		return nil, ServerError("rpc: service/method request ill-formed: " + serviceMethod)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if h := s.methods[serviceMethod]; h != nil {
		return h, nil
	}
	if !s.names[svc] {
		return nil, ServerError("rpc: can't find service " + serviceMethod)
	}
	return nil, errUnknownMethod(serviceMethod)
}

// ServeConn reads requests from conn until it fails or closes, runs each
// on a goroutine of its own (a pooled one), and writes the answers as they finish; then it
// closes conn.
func (s *Server) ServeConn(conn net.Conn) {
	sc := &serverConn{srv: s, conn: conn, dec: gob.NewDecoder(bufio.NewReader(conn))}
	sc.buf = bufio.NewWriter(conn)
	sc.enc = gob.NewEncoder(sc.buf)
	defer conn.Close() // handlers still running answer into a closed conn
	for {
		var req requestHeader
		if err := sc.dec.Decode(&req); err != nil {
			return
		}
		h, err := s.lookup(req.ServiceMethod)
		if err != nil {
			if discard(sc.dec) != nil { // the body, discarded
				return
			}
			sc.answer(&req, invalidRequest{}, err)
			continue
		}
		run, err := h(sc.dec.Decode)
		if err != nil {
			// The body did not decode into the method's request: the
			// stream is still aligned (gob read the whole value).
			sc.answer(&req, invalidRequest{}, ServerError(err.Error()))
			continue
		}
		s.handlers.Go(func() {
			reply, err := run()
			if err != nil {
				sc.answer(&req, invalidRequest{}, ServerError(err.Error()))
				return
			}
			sc.answer(&req, reply, nil)
		})
	}
}

type serverConn struct {
	srv  *Server
	conn net.Conn
	dec  *gob.Decoder

	mu  sync.Mutex // one answer at a time on the stream
	buf *bufio.Writer
	enc *gob.Encoder
}

func (sc *serverConn) answer(req *requestHeader, body any, err error) {
	resp := responseHeader{ServiceMethod: req.ServiceMethod, Seq: req.Seq}
	if err != nil {
		resp.Error = err.Error()
		body = invalidRequest{}
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if t := sc.srv.WriteTimeout; t > 0 {
		_ = sc.conn.SetWriteDeadline(time.Now().Add(t))
	}
	werr := sc.enc.Encode(&resp)
	if werr == nil {
		werr = sc.enc.Encode(body)
	}
	if werr == nil {
		werr = sc.buf.Flush()
	}
	if werr != nil {
		// A half-written answer leaves the stream unusable.
		_ = sc.conn.Close()
	}
}
