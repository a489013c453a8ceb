package mqtttest

import (
	"bufio"
	"fmt"
	"io"
)

// Raw MQTT 5 packets, for tests that must send what a client library
// would refuse to (a packet over the server's limit, a filter the
// CONNACK said is not available) or race handshakes byte by byte.

// RawString appends s as an MQTT UTF-8 string (two length bytes first).
func RawString(b []byte, s string) []byte {
	return append(append(b, byte(len(s)>>8), byte(len(s))), s...)
}

// RawLength is n as an MQTT variable byte integer.
func RawLength(n int) []byte {
	var b []byte
	for {
		d := byte(n % 128)
		if n /= 128; n > 0 {
			d |= 0x80
		}
		if b = append(b, d); n == 0 {
			return b
		}
	}
}

// RawPacket is a packet of type byte typ with body vh.
func RawPacket(typ byte, vh []byte) []byte {
	return append(append([]byte{typ}, RawLength(len(vh))...), vh...)
}

// RawConnectV5 is an MQTT 5 CONNECT with a clean start, keepalive 60 s,
// username and password, no properties.
func RawConnectV5(clientID, user, pass string) []byte {
	vh := []byte{0, 4, 'M', 'Q', 'T', 'T', 5, 0xc2, 0, 60, 0}
	vh = RawString(RawString(RawString(vh, clientID), user), pass)
	return RawPacket(0x10, vh)
}

// RawPublishV5 is an MQTT 5 QoS 1 PUBLISH without properties.
func RawPublishV5(topic string, id uint16, payload string) []byte {
	vh := append(RawString(nil, topic), byte(id>>8), byte(id), 0)
	return RawPacket(0x32, append(vh, payload...))
}

// RawSubscribeV5 is an MQTT 5 SUBSCRIBE of one filter at QoS 1, without
// properties.
func RawSubscribeV5(id uint16, filter string) []byte {
	vh := RawString([]byte{byte(id >> 8), byte(id), 0}, filter)
	return RawPacket(0x82, append(vh, 1))
}

// ReadRawPacket reads one packet: its type byte and its body.
func ReadRawPacket(r *bufio.Reader) (typ byte, body []byte, err error) {
	if typ, err = r.ReadByte(); err != nil {
		return 0, nil, fmt.Errorf("reading a packet: %w", err)
	}
	n, mul := 0, 1
	for {
		d, err := r.ReadByte()
		if err != nil {
			return 0, nil, fmt.Errorf("reading a packet's length: %w", err)
		}
		n += int(d&0x7f) * mul
		mul *= 128
		if d&0x80 == 0 {
			break
		}
	}
	body = make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, fmt.Errorf("reading a packet's body: %w", err)
	}
	return typ, body, nil
}
