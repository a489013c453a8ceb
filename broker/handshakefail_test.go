package broker

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgechat/edgechat/internal/testutil"
)

// establishGate holds the session establishment of client id (after
// the broker's OnConnect accepted it, before the CONNACK) until released.
type establishGate struct {
	mqtt.HookBase
	id               string
	entered, release chan struct{}
}

func (h *establishGate) ID() string           { return "establish-gate" }
func (h *establishGate) Provides(b byte) bool { return b == mqtt.OnSessionEstablish }
func (h *establishGate) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	if cl.ID == h.id {
		close(h.entered)
		<-h.release
	}
}

func (b *Broker) connInfos() int {
	n := 0
	b.conns.Range(func(any, any) bool { n++; return true })
	return n
}

// A connection that is gone by the time its CONNECT has been accepted
// (its CONNACK cannot be written: a phone losing its network while the
// node checks its token) leaves nothing behind: before, mochi ended such
// a handshake without OnDisconnect, and the broker kept the connection's
// state (and through it the client) for the life of the process, and its
// clean session stayed in mochi's client map.
func TestConnectionGoneBeforeItsConnackLeavesNothing(t *testing.T) {
	e := startBroker(t, nil)
	gate := &establishGate{id: "bob/phone", entered: make(chan struct{}), release: make(chan struct{})}
	if err := e.b.srv.AddHook(gate, nil); err != nil {
		t.Fatal(err)
	}

	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	connect := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 5,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: "bob/phone",
			UsernameFlag: true, Username: []byte("bob"), PasswordFlag: true, Password: []byte("tok:bob")}}
	var buf bytes.Buffer
	if err := connect.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	<-gate.entered // accepted by the broker's OnConnect: its state is stored
	if n := e.b.connInfos(); n != 1 {
		t.Fatalf("%d connections' state, want 1", n)
	}
	_ = c.(*net.TCPConn).SetLinger(0) // gone: a reset, not a FIN
	_ = c.Close()
	close(gate.release)

	testutil.CheckFor(t, waitFor, time.Millisecond, func() error {
		if n := e.b.connInfos(); n != 0 {
			return fmt.Errorf("%d connections' state kept", n)
		}
		if _, ok := e.b.srv.Clients.Get("bob/phone"); ok {
			return errors.New("the clean session is still in mochi's client map")
		}
		return nil
	})
	if n := e.b.Connections(); n != 0 {
		t.Fatalf("%d connections counted", n)
	}
}
