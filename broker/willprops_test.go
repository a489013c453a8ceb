package broker

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/testutil/mqtttest"
)

// willProps are MQTT 5 will properties, encoded (paho.golang packs only
// the will delay and user properties of a will: these go raw).
type willProps []byte

func (p willProps) u32(id byte, v uint32) willProps {
	return binary.BigEndian.AppendUint32(append(p, id), v)
}
func (p willProps) str(id byte, s string) willProps { return mqtttest.RawString(append(p, id), s) }

// dialRawWill connects an anonymous MQTT 5 client (--dev) with a QoS 1
// will and returns its connection, open: close it to have the will
// published. A session expiry > 0 keeps its session past the connection.
func dialRawWill(t *testing.T, addr, clientID string, sessionExpiry uint32, topic, payload string, retain bool, props willProps) net.Conn {
	t.Helper()
	flags := byte(0x02 | 0x04 | 0x08) // clean start, will, will QoS 1
	if retain {
		flags |= 0x20
	}
	var cprops []byte
	if sessionExpiry > 0 {
		cprops = binary.BigEndian.AppendUint32([]byte{0x11}, sessionExpiry)
	}
	vh := append([]byte{0, 4, 'M', 'Q', 'T', 'T', 5, flags, 0, 60}, mqtttest.RawLength(len(cprops))...)
	vh = mqtttest.RawString(append(vh, cprops...), clientID)
	vh = append(append(vh, mqtttest.RawLength(len(props))...), props...)
	vh = mqtttest.RawString(mqtttest.RawString(vh, topic), payload)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(waitFor))
	if _, err := conn.Write(mqtttest.RawPacket(0x10, vh)); err != nil {
		t.Fatal(err)
	}
	typ, body, err := mqtttest.ReadRawPacket(bufio.NewReader(conn))
	if err != nil || typ != 0x20 || len(body) < 2 || body[1] != 0 {
		t.Fatalf("connect %s: packet %#x %v, %v; want a CONNACK 0x00", clientID, typ, body, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return conn
}

// describeExpiry says how a message came: with which Message Expiry
// Interval, if any.
func describeExpiry(p *paho.Publish) string {
	if p == nil {
		return "nothing"
	}
	if p.Properties == nil || p.Properties.MessageExpiry == nil {
		return p.Topic + " without message expiry"
	}
	return fmt.Sprintf("%s with message expiry %d", p.Topic, *p.Properties.MessageExpiry)
}

// A will keeps the MQTT 5 will properties its client set (MQTT 5
// 3.1.3.2): its subscribers get its Message Expiry Interval, Content
// Type, Response Topic, Correlation Data and Payload Format Indicator
// as with any publish, and a retained will with an expiry is forgotten
// when it expires. mochi kept the user properties only: a retained
// "offline" will with an expiry stayed retained for good, and a
// subscriber could not tell its content type nor where to answer.
func TestAWillKeepsItsProperties(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.Dev = true })
	watcher := mqtttest.MustDial(t, e.addr, mqtttest.Options{ClientID: "watcher"})
	watcher.MustSub(t, "status/+")

	props := append(willProps{0x01, 1}.u32(0x02, 60).str(0x03, "text/plain").str(0x08, "reply/sensor").str(0x09, "c1"), 0x26)
	props = mqtttest.RawString(mqtttest.RawString(props, "k"), "v")
	_ = dialRawWill(t, e.addr, "sensor", 0, "status/sensor", "offline", false, props).Close() // gone without DISCONNECT

	got := watcher.Next(t)
	p := got.Properties
	if got.Topic != "status/sensor" || p == nil {
		t.Fatalf("watcher got %q on %q, want the will", got.Payload, got.Topic)
	}
	var format any
	if p.PayloadFormat != nil {
		format = *p.PayloadFormat
	}
	if p.MessageExpiry == nil || *p.MessageExpiry == 0 || *p.MessageExpiry > 60 || format != byte(1) ||
		p.ContentType != "text/plain" || p.ResponseTopic != "reply/sensor" || !bytes.Equal(p.CorrelationData, []byte("c1")) ||
		p.User.Get("k") != "v" {
		t.Fatalf("the will came as %s, payload format %v, content type %q, response topic %q, correlation data %q, user %v; "+
			"want message expiry 1..60, 1, text/plain, reply/sensor, c1, k=v", describeExpiry(got), format, p.ContentType, p.ResponseTopic, p.CorrelationData, p.User)
	}

	// A retained will that expires in 1 s is no longer retained after it.
	_ = dialRawWill(t, e.addr, "brief", 0, "status/brief", "offline", true, willProps{}.u32(0x02, 1)).Close()
	if got := watcher.Next(t); got.Topic != "status/brief" {
		t.Fatalf("watcher got %q, want brief's will", got.Topic)
	}
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if _, ok := e.b.srv.Topics.Retained.Get("status/brief"); ok {
			return fmt.Errorf("status/brief still retained, its will's message expiry (1 s) passed")
		}
		return nil
	})
}

// A delayed will (Will Delay Interval) is published with the message
// expiry its client gave it, counted from its publication, and with none
// when it gave none. mochi kept the end of the delay as the will's
// expiry: published then, it went out with a Message Expiry Interval of
// 1 s that no client set, live and to later subscribers of the retained
// copy, and the expiry the client gave was lost.
func TestADelayedWillHasTheExpiryItsClientGave(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.Dev = true })
	watcher := mqtttest.MustDial(t, e.addr, mqtttest.Options{ClientID: "watcher"})
	watcher.MustSub(t, "status/+")

	plain := dialRawWill(t, e.addr, "plain", 60, "status/plain", "offline", true, willProps{}.u32(0x18, 1))
	timed := dialRawWill(t, e.addr, "timed", 60, "status/timed", "offline", false, willProps{}.u32(0x18, 1).u32(0x02, 120))
	_, _ = plain.Close(), timed.Close()

	got := map[string]*paho.Publish{}
	for len(got) < 2 {
		p := watcher.Next(t)
		got[p.Topic] = p
	}
	if p := got["status/plain"]; p == nil || p.Properties != nil && p.Properties.MessageExpiry != nil {
		t.Errorf("the delayed will of plain came as %s, want without message expiry", describeExpiry(p))
	}
	if p := got["status/timed"]; p == nil || p.Properties == nil || p.Properties.MessageExpiry == nil || *p.Properties.MessageExpiry < 115 {
		t.Errorf("the delayed will of timed came as %s, want with message expiry about 120", describeExpiry(got["status/timed"]))
	}
	late := mqtttest.MustDial(t, e.addr, mqtttest.Options{ClientID: "late"})
	late.MustSub(t, "status/plain")
	if p := late.Next(t); p.Properties != nil && p.Properties.MessageExpiry != nil {
		t.Errorf("a new subscriber got the retained delayed will as %s, want without message expiry", describeExpiry(p))
	}
}
