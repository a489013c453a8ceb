package node_test

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
)

// halfOpenDevice is a phone that lost its network without closing its
// TCP connection: it connected over a real socket, subscribed at QoS 1,
// and from then on reads nothing and acknowledges nothing (the server
// writes into the socket's buffers and hears nothing back until the
// keepalive runs out, 90 s for the 60 s this CONNECT asks).
func halfOpenDevice(t *testing.T, addr, user, device, token, filter string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	if _, err := conn.Write(mqtttest.RawConnectV5(user+"/"+device, user, token)); err != nil {
		t.Fatal(err)
	}
	if typ, body, err := mqtttest.ReadRawPacket(r); err != nil || typ != 0x20 || len(body) < 2 || body[1] != 0 {
		t.Fatalf("CONNACK: type %#x body %x err %v", typ, body, err)
	}
	if _, err := conn.Write(mqtttest.RawSubscribeV5(1, filter)); err != nil {
		t.Fatal(err)
	}
	if typ, body, err := mqtttest.ReadRawPacket(r); err != nil || typ != 0x90 || len(body) < 4 || body[len(body)-1] != 1 {
		t.Fatalf("SUBACK: type %#x body %x err %v", typ, body, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return conn // never read again, never acknowledged
}

// A device connected when a message commits but that never acknowledges
// its QoS 1 delivery (its network went away under an open connection) is
// pushed, once, within the acknowledgement bound: before, it counted as
// connected and was never pushed (the message appeared only when the app
// was next opened).
func TestPushAHalfOpenDevice(t *testing.T) {
	f := startPushFlow(t, 0)
	halfOpenDevice(t, f.n.MQTTAddr(), "bob", "phone", f.bob, "user/bob/newMessage")
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !f.n.ClientConnected("bob/phone") {
			return errors.New("the half-open phone is not registered as connected")
		}
		return nil
	})
	start := time.Now()
	id := f.send(t, "user/bob/newMessage", "walking into a lift")
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n := f.pushesFor(f.phone, id); n == 0 {
			return fmt.Errorf("no push %v after the commit (the phone is still half-open: connected %v)",
				time.Since(start).Round(time.Millisecond), f.n.ClientConnected("bob/phone"))
		}
		return nil
	})
	el := time.Since(start)
	t.Logf("pushed %v after the commit", el.Round(time.Millisecond))
	if el < flowAckTimeout || el > flowAckTimeout+3*time.Second {
		t.Errorf("pushed %v after the commit, want after the bound of %v and soon after it", el, flowAckTimeout)
	}
	f.outboxEmpty(t) // done and recorded: nothing can send it again
	if n := f.pushesFor(f.phone, id); n != 1 {
		t.Fatalf("%d pushes for one message", n)
	}
	if !f.n.ClientConnected("bob/phone") {
		t.Fatal("the half-open phone was dropped: the push came from its disconnection, not from the bound")
	}
	checkMetric(t, f.n, "edgechat_push_unacked_total", nil, 1)
	checkMetric(t, f.n, "edgechat_push_decisions_total", map[string]string{"verdict": "push"}, 1)
}

// rawDevice connects and subscribes as halfOpenDevice does, and reads.
type rawDevice struct {
	conn net.Conn
	r    *bufio.Reader
}

func connectRawDevice(t *testing.T, f *pushFlow, device string) *rawDevice {
	t.Helper()
	d := &rawDevice{conn: halfOpenDevice(t, f.n.MQTTAddr(), "bob", device, f.bob, "user/bob/newMessage")}
	d.r = bufio.NewReader(d.conn)
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !f.n.ClientConnected("bob/" + device) {
			return errors.New("bob/" + device + " is not registered as connected")
		}
		return nil
	})
	return d
}

// nextPublish reads the next PUBLISH and returns its packet ID.
func (d *rawDevice) nextPublish(t *testing.T) uint16 {
	t.Helper()
	_ = d.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		typ, body, err := mqtttest.ReadRawPacket(d.r)
		if err != nil {
			t.Fatalf("reading the delivery: %v", err)
		}
		if typ>>4 != 3 {
			continue
		}
		if typ&0x06 == 0 {
			t.Fatalf("a QoS 0 delivery: %#x", typ)
		}
		n := int(body[0])<<8 | int(body[1])
		return uint16(body[2+n])<<8 | uint16(body[3+n])
	}
}

// A device that acknowledges its delivery within the bound, however
// late, is not pushed.
func TestPushNotForAConnectedDeviceThatAcknowledgesLate(t *testing.T) {
	f := startPushFlow(t, 0)
	d := connectRawDevice(t, f, "phone")
	id := f.send(t, "user/bob/newMessage", "slow network")
	pid := d.nextPublish(t)
	time.Sleep(flowAckTimeout / 2) // a slow phone: the delivery's acknowledgement takes its time
	if _, err := d.conn.Write([]byte{0x40, 2, byte(pid >> 8), byte(pid)}); err != nil {
		t.Fatal(err)
	}
	f.decided(t, "connected", 1)
	f.outboxEmpty(t)
	if n := f.pushesFor(f.phone, id); n != 0 {
		t.Fatalf("a device that acknowledged its delivery got %d pushes", n)
	}
	checkMetric(t, f.n, "edgechat_push_unacked_total", nil, 0)
}

// A device whose connection ends before it acknowledged the delivery (the
// app was closed as it arrived, the network dropped with a reset) is
// pushed, once, although it was connected at the commit; so is one whose
// half-open connection the keepalive finally ends: by then it was told of
// at the bound already.
func TestPushADeviceThatLeftWithoutAcknowledging(t *testing.T) {
	f := startPushFlow(t, 0)
	d := connectRawDevice(t, f, "phone")
	start := time.Now()
	id := f.send(t, "user/bob/newMessage", "gone before the ack")
	d.nextPublish(t)
	_ = d.conn.Close()
	if el := f.firstPush(t, id, start); el >= flowAckTimeout {
		t.Errorf("pushed %v after the commit: not at the disconnection, before the bound of %v", el, flowAckTimeout)
	}
	f.onlyPush(t, id)
}

// A device connected at the commit that acknowledges its delivery and
// then goes away before the grace period ends (the app was sent to the
// background) has the message: it is not pushed when the grace ends,
// although it is offline then (LESSONS 18). What it was at the commit
// decides, not only what it is at the decision.
func TestPushNotForADeviceThatAcknowledgedAndLeftDuringTheGrace(t *testing.T) {
	f := startPushFlowGrace(t, 0, 2*time.Second)
	d := connectRawDevice(t, f, "phone")
	id := f.send(t, "user/bob/newMessage", "read, then the app went away")
	pid := d.nextPublish(t)
	if _, err := d.conn.Write([]byte{0x40, 2, byte(pid >> 8), byte(pid)}); err != nil { // PUBACK
		t.Fatal(err)
	}
	// The user's pace: the app shows the message a moment, then goes to
	// the background. (What "connected at the commit" means is read when
	// the leader plans the message, just after the commit: a device gone
	// within milliseconds, before the plan, counts as offline.)
	time.Sleep(flowGrace)
	if _, err := d.conn.Write([]byte{0xe0, 0}); err != nil { // DISCONNECT
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if f.n.ClientConnected("bob/phone") {
			return errors.New("bob/phone still connected")
		}
		return nil
	})
	f.outboxEmpty(t)
	if n := f.pushesFor(f.phone, id); n != 0 {
		t.Fatalf("a device that had the message got %d pushes", n)
	}
	f.decided(t, "connected", 1)
}

// The server's acknowledgement of the device's own QoS 1 publish, whose
// packet ID the device chose, is no acknowledgement of a delivery that
// has the same ID: a device that publishes (a heartbeat) but never
// acknowledges the message is pushed.
func TestPushADeviceWhoseOwnPublishSharesTheDeliverysPacketID(t *testing.T) {
	f := startPushFlow(t, 0)
	d := connectRawDevice(t, f, "phone")
	id := f.send(t, "user/bob/newMessage", "ack me")
	pid := d.nextPublish(t)
	if _, err := d.conn.Write(mqtttest.RawPublishV5("presence/bob/heartbeat", pid, "")); err != nil {
		t.Fatal(err)
	}
	for {
		typ, body, err := mqtttest.ReadRawPacket(d.r)
		if err != nil {
			t.Fatalf("waiting for the heartbeat's PUBACK: %v", err)
		}
		if typ == 0x40 && len(body) >= 2 && uint16(body[0])<<8|uint16(body[1]) == pid {
			break
		}
	}
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if f.pushesFor(f.phone, id) == 0 {
			return errors.New("no push: the heartbeat's PUBACK was taken for the device's")
		}
		return nil
	})
	f.outboxEmpty(t)
	if n := f.pushesFor(f.phone, id); n != 1 {
		t.Fatalf("%d pushes for one message", n)
	}
}
