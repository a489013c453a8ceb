package cluster

import (
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// tcpStream is raft's TCP stream layer with one difference from
// raft.NewTCPTransport: it binds first and works out the advertised
// address afterwards, so that ":0" (any interface, any port) can
// advertise 127.0.0.1 with the port the kernel picked.
type tcpStream struct {
	ln        net.Listener
	advertise net.Addr
}

var _ raft.StreamLayer = (*tcpStream)(nil)

func newTCPStream(bind, advertise string) (*tcpStream, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("cluster: bind %s: %w", bind, err)
	}
	bound := ln.Addr().(*net.TCPAddr)
	var adv *net.TCPAddr
	switch {
	case advertise != "":
		adv, err = net.ResolveTCPAddr("tcp", advertise)
		if err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("cluster: advertise address %q: %w", advertise, err)
		}
		if adv.Port == 0 {
			adv.Port = bound.Port
		}
	case bound.IP == nil || bound.IP.IsUnspecified():
		adv = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: bound.Port}
	default:
		adv = bound
	}
	if adv.IP == nil || adv.IP.IsUnspecified() {
		_ = ln.Close()
		return nil, fmt.Errorf("cluster: advertise address %s is not reachable by peers", adv)
	}
	return &tcpStream{ln: ln, advertise: adv}, nil
}

func (s *tcpStream) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", string(address), timeout)
}

func (s *tcpStream) Accept() (net.Conn, error) { return s.ln.Accept() }
func (s *tcpStream) Close() error              { return s.ln.Close() }
func (s *tcpStream) Addr() net.Addr            { return s.advertise }
