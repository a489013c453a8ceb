// Package pahoconn prepares a connection for a paho.golang client.
//
// paho writes a packet in several Write calls on anything but a
// *net.TCPConn (whose writev keeps a packet in one call under the
// descriptor's write lock), and from several goroutines: the caller's,
// its reader's acknowledgements, its pinger (whose first PINGREQ goes out
// at once). Over TLS or WebSocket the writes of two packets interleave
// and the peer reads a malformed packet, unless the connection is a
// sync.Locker, which paho holds around each packet (its documented fix,
// packets.NewThreadSafeConn).
package pahoconn

import (
	"net"

	"github.com/eclipse/paho.golang/packets"
)

// Wrap returns c ready for paho.ClientConfig.Conn: c itself when it is a
// *net.TCPConn (a lock would hide its writev and split every packet in
// two writes), else c with a lock paho takes for each packet.
func Wrap(c net.Conn) net.Conn {
	if _, ok := c.(*net.TCPConn); ok {
		return c
	}
	return packets.NewThreadSafeConn(c)
}
