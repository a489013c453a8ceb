package region

import (
	"errors"
	"fmt"
	"net"

	"github.com/edgechat/edgechat/internal/pahoconn"
)

// maxInboundPacket bounds an MQTT packet the other region sends to a
// link or query connection. The largest it has reason to send is the
// answer to a media chunk request (MaxMediaChunk, a header of at most
// maxChunkHeader, the topic and the correlation data); presence, typing,
// receipts, acknowledgements, profiles and searches are far smaller.
const maxInboundPacket = 1 << 20

// errPacketTooLarge ends a link's connection on a packet above
// maxInboundPacket.
var errPacketTooLarge = errors.New("region: the other region sent a packet larger than a link takes")

// limitPackets returns c ready for a link's paho client (pahoconn.Wrap),
// failing a read as soon as the other region announces a packet larger
// than max: paho allocates a packet's whole remaining length (up to
// 256 MiB, as MQTT's variable byte integer allows) before it reads it, so
// a buggy or compromised region could make this region's leader allocate
// that much per packet, and hold the connection while it never sends
// the bytes. The CONNECT also tells the limit (Maximum Packet Size), so a
// region that keeps to MQTT never sends more.
func limitPackets(c net.Conn, max int) net.Conn {
	l := &packetReader{max: int64(max)}
	if tc, ok := c.(*net.TCPConn); ok {
		// Kept a *net.TCPConn underneath for its writev (pahoconn).
		l.Conn = tc
		return &tcpLimited{TCPConn: tc, r: l}
	}
	l.Conn = c
	return pahoconn.Wrap(l)
}

// tcpLimited is a TCP connection whose reads go through packetReader;
// its writes stay the TCP connection's own.
type tcpLimited struct {
	*net.TCPConn
	r *packetReader
}

func (t *tcpLimited) Read(p []byte) (int, error) { return t.r.Read(p) }

// packetReader follows the MQTT packets read from Conn: fixed header
// byte, remaining length (variable byte integer), then that many bytes.
type packetReader struct {
	net.Conn
	max int64

	left  int64 // bytes of the current packet's rest still to come
	inLen bool  // reading the remaining length
	rem   int64
	shift uint
	err   error
}

func (r *packetReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.Conn.Read(p)
	for i := 0; i < n; {
		if r.left > 0 {
			k := min(r.left, int64(n-i))
			r.left -= k
			i += int(k)
			continue
		}
		b := p[i]
		i++
		if !r.inLen { // the packet type and flags
			r.inLen, r.rem, r.shift = true, 0, 0
			continue
		}
		r.rem |= int64(b&0x7f) << r.shift
		r.shift += 7
		if b&0x80 != 0 {
			if r.shift >= 28 {
				r.err = fmt.Errorf("region: the other region sent a malformed packet length")
				break
			}
			continue
		}
		r.inLen = false
		if r.rem > r.max {
			r.err = fmt.Errorf("%w: %d bytes (at most %d)", errPacketTooLarge, r.rem, r.max)
			break
		}
		r.left = r.rem
	}
	if r.err != nil {
		_ = r.Conn.Close()
		return 0, r.err
	}
	return n, err
}
