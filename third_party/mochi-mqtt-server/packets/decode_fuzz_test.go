// SPDX-License-Identifier: MIT

package packets

import (
	"bytes"
	"errors"
	"testing"
)

// decodeWhole decodes b as the server's read loop does (the root
// package's Client.ReadFixedHeader and ReadPacket) for a client of
// protocol version v: the fixed header's byte, the remaining length, and
// a body of that length. whole is false when b holds no whole packet.
func decodeWhole(v byte, b []byte) (pk Packet, whole bool, err error) {
	if len(b) == 0 {
		return pk, false, nil
	}
	pk.ProtocolVersion = v
	if err := pk.FixedHeader.Decode(b[0]); err != nil {
		return pk, true, err
	}
	r := bytes.NewReader(b[1:])
	n, _, err := DecodeLength(r)
	if err != nil || r.Len() < n {
		return pk, false, err
	}
	pk.FixedHeader.Remaining = n
	body := b[len(b)-r.Len():][:n]
	switch pk.FixedHeader.Type {
	case Connect:
		err = pk.ConnectDecode(body)
	case Disconnect:
		err = pk.DisconnectDecode(body)
	case Connack:
		err = pk.ConnackDecode(body)
	case Publish:
		err = pk.PublishDecode(body)
	case Puback:
		err = pk.PubackDecode(body)
	case Pubrec:
		err = pk.PubrecDecode(body)
	case Pubrel:
		err = pk.PubrelDecode(body)
	case Pubcomp:
		err = pk.PubcompDecode(body)
	case Subscribe:
		err = pk.SubscribeDecode(body)
	case Suback:
		err = pk.SubackDecode(body)
	case Unsubscribe:
		err = pk.UnsubscribeDecode(body)
	case Unsuback:
		err = pk.UnsubackDecode(body)
	case Pingreq, Pingresp:
	case Auth:
		err = pk.AuthDecode(body)
	default:
		err = ErrMalformedPacket
	}
	return pk, true, err
}

// FuzzDecodePacket: whatever bytes a client sends decode to a packet or
// to an error, never to a panic. No goroutine of the server recovers
// one, so a panic in a decoder ended the whole process with every
// client's connection (a v5 SUBSCRIBE without its last filter's options
// byte did: edgechat patch 56). What decodes validates without a panic
// too.
func FuzzDecodePacket(f *testing.F) {
	for _, seed := range [][]byte{
		{0x82, 0x06, 0x00, 0x01, 0x00, 0x00, 0x01, 'a'},       // v5 SUBSCRIBE of "a" without its options byte
		{0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, 'a', 0x01}, // the same, whole
		{0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 'a', 0x01},       // 3.1.1 SUBSCRIBE
		{0xa2, 0x06, 0x00, 0x01, 0x00, 0x00, 0x01, 'a'},       // v5 UNSUBSCRIBE
		// v5 CONNECT, its credentials cut short
		{0x10, 0x10, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0xc2, 0x00, 0x3c, 0x00, 0x00, 0x01, 'c', 0x00, 0x00},
		{0x34, 0x0b, 0x00, 0x01, 't', 0x00, 0x07, 0x05, 0x26, 0x00, 0x01, 'k', 0x00}, // v5 QoS 2 PUBLISH, a user property cut short
		{0x30, 0x05, 0x00, 0x01, 't', 0x00, 'x'},                                     // v5 QoS 0 PUBLISH
		{0x62, 0x04, 0x00, 0x01, 0x92, 0x00},                                         // v5 PUBREL with a reason
		{0xe0, 0x02, 0x04, 0x00},                                                     // v5 DISCONNECT
		{0xf0, 0x02, 0x00, 0x00},                                                     // v5 AUTH
		{0x30, 0xff, 0xff, 0xff, 0xff, 0x7f},                                         // a remaining length of five bytes
	} {
		f.Add(byte(5), seed)
		f.Add(byte(4), seed)
	}
	f.Fuzz(func(t *testing.T, v byte, b []byte) {
		v = 3 + v%3 // 3.1, 3.1.1 or 5
		pk, whole, err := decodeWhole(v, b)
		if !whole || err != nil {
			return
		}
		switch pk.FixedHeader.Type {
		case Connect:
			pk.ConnectValidate()
		case Publish:
			pk.PublishValidate(32)
		case Subscribe:
			pk.SubscribeValidate()
			for _, sub := range pk.Filters {
				if sub.Qos > 2 {
					t.Fatalf("filter %q decoded with QoS %d", sub.Filter, sub.Qos)
				}
			}
		case Unsubscribe:
			pk.UnsubscribeValidate()
		case Auth:
			pk.AuthValidate()
		}
	})
}

// A SUBSCRIBE whose last filter lacks its options byte is malformed
// (0x81) in both versions; the v5 decoder read the byte past the end.
func TestSubscribeDecodeWithoutOptionsByte(t *testing.T) {
	for _, v := range []byte{4, 5} {
		body := []byte{0x00, 0x01} // packet ID
		if v == 5 {
			body = append(body, 0x00) // no properties
		}
		body = append(body, 0x00, 0x01, 'a') // the filter "a", and no options
		pk := Packet{ProtocolVersion: v, FixedHeader: FixedHeader{Type: Subscribe, Qos: 1, Remaining: len(body)}}
		if err := pk.SubscribeDecode(body); !errors.Is(err, ErrMalformedQos) {
			t.Errorf("version %d: %v, want %v", v, err, ErrMalformedQos)
		}
	}
}
