// Package peerrpc is the request/response protocol between the nodes of a
// cluster: a table of named methods served on a connection, and a client
// that multiplexes concurrent calls on one connection.
//
// On the wire it is exactly Go's net/rpc with its gob codec (a gob
// header {ServiceMethod, Seq} then the gob body, and {ServiceMethod, Seq,
// Error} then the body back), so nodes of earlier versions, which used
// net/rpc, and nodes of this one talk to each other during a rolling
// upgrade. It is not net/rpc because net/rpc finds handlers by
// reflection over a type's methods: a program that does that makes the
// linker keep every exported method of every type it links, about 4 MB
// of the edgechat binary. Here each method is registered by name with a
// typed function (Method), and nothing looks methods up by reflection.
package peerrpc

import (
	"encoding/gob"
	"errors"
	"fmt"
	"strings"
)

// Handler serves one method. It decodes the request with decode (on the
// connection's reading goroutine, in the order requests arrived) and
// returns the call to run, which may run concurrently with others and
// returns the reply to send.
type Handler func(decode func(any) error) (run func() (reply any, err error), err error)

// Methods maps method names ("Deliver") to their handlers; a service
// registers them under its name ("Forward"), callers name
// "Forward.Deliver".
type Methods map[string]Handler

// Method makes a Handler of fn, net/rpc's method shape: fn fills *Resp
// from *Req, and its error reaches the caller as a ServerError (text
// only). Req and Resp must be gob-encodable.
func Method[Req, Resp any](fn func(*Req, *Resp) error) Handler {
	return func(decode func(any) error) (func() (any, error), error) {
		req := new(Req)
		if err := decode(req); err != nil {
			return nil, err
		}
		return func() (any, error) {
			resp := new(Resp)
			err := fn(req, resp)
			return resp, err
		}, nil
	}
}

// ServerError is an error the remote handler returned (or the server's
// refusal of the call, such as an unknown method), as text: the call
// reached the peer and the connection stays usable.
type ServerError string

func (e ServerError) Error() string { return string(e) }

// ErrShutdown means the client's connection is closed or broke before
// the call's answer arrived.
var ErrShutdown = errors.New("peerrpc: connection shut down")

// requestHeader and responseHeader have the field names of net/rpc's
// Request and Response, which is all gob matches on.
type requestHeader struct {
	ServiceMethod string
	Seq           uint64
}

type responseHeader struct {
	ServiceMethod string
	Seq           uint64
	Error         string
}

// invalidRequest is the body net/rpc sends with an error response.
type invalidRequest struct{}

func errUnknownMethod(name string) ServerError {
	return ServerError(fmt.Sprintf("%s%s", unknownMethodPrefix, name))
}

// unknownMethodPrefix starts the refusal of a method a registered
// service lacks (net/rpc's wording, which every version sent).
const unknownMethodPrefix = "rpc: can't find method "

// IsUnknownMethod reports whether err is a peer's refusal of a method its
// service does not have: a peer of an older version, during a rolling
// upgrade. Any other error says nothing about the peer's version.
func IsUnknownMethod(err error) bool {
	var se ServerError
	return errors.As(err, &se) && strings.HasPrefix(string(se), unknownMethodPrefix)
}

// discard reads the stream's next value and drops it (gob's Decode of a
// nil interface).
func discard(dec *gob.Decoder) error {
	var none any
	return dec.Decode(none)
}
