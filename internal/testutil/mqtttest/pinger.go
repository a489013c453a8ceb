package mqtttest

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/log"
)

// idlePinger is the clients' keep-alive: a PINGREQ only once nothing was
// sent or received for the keep-alive interval, which is all MQTT asks
// (MQTT-3.1.2-20), and never at the start.
//
// Why not paho's DefaultPinger: paho.golang v0.23.0 sends its first
// PINGREQ as soon as the connection is up, from a goroutine of its own,
// and paho writes a packet in several Write calls (the fixed header,
// then the rest) on any connection but a *net.TCPConn, whose writev
// keeps a packet whole. Over TLS or WebSocket that PINGREQ could land
// between another packet's header and its body: a loaded run of
// TestTLSListener had the broker read a SUBSCRIBE split by "c0 00" and
// refuse it as malformed (which it was). Pinging only when idle leaves
// a ping nothing to collide with but a packet started at the very same
// moment after keepAlive seconds of silence, which no test does.
type idlePinger struct {
	mu           sync.Mutex
	last         time.Time // the last packet sent or received
	pingSent     time.Time
	pingAnswered time.Time
}

var _ paho.Pinger = (*idlePinger)(nil)

func newIdlePinger() *idlePinger { return &idlePinger{last: time.Now()} }

// Run pings conn when it has been idle for keepAlive seconds, until ctx
// ends; a ping unanswered by the next one is an error, as in paho.
func (p *idlePinger) Run(ctx context.Context, conn net.Conn, keepAlive uint16) error {
	if keepAlive == 0 {
		return nil
	}
	interval := time.Duration(keepAlive) * time.Second
	t := time.NewTimer(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			p.mu.Lock()
			due := p.last.Add(interval)
			unanswered := !p.pingSent.IsZero() && p.pingSent.After(p.pingAnswered)
			p.mu.Unlock()
			if now.Before(due) {
				t.Reset(due.Sub(now))
				continue
			}
			if unanswered {
				return errPingTimeout
			}
			p.mu.Lock()
			p.pingSent, p.last = now, now
			p.mu.Unlock()
			if _, err := packets.NewControlPacket(packets.PINGREQ).WriteTo(conn); err != nil {
				return err
			}
			t.Reset(interval)
		}
	}
}

func (p *idlePinger) PacketSent()     { p.touch() }
func (p *idlePinger) PacketReceived() { p.touch() }

func (p *idlePinger) PingResp() {
	p.mu.Lock()
	p.pingAnswered = time.Now()
	p.mu.Unlock()
}

func (p *idlePinger) SetDebug(log.Logger) {}

func (p *idlePinger) touch() {
	p.mu.Lock()
	p.last = time.Now()
	p.mu.Unlock()
}

type pingError string

func (e pingError) Error() string { return string(e) }

const errPingTimeout = pingError("mqtttest: PINGRESP timed out")
