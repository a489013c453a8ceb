// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co

package packets

import (
	"bytes"
	"slices"
	"testing"
)

// A property that becomes valid on PUBLISH must be compared by
// SameEncoding, or two packets differing in it would share an encoding.
func TestSameEncodingCoversPublishProperties(t *testing.T) {
	for k, pkts := range validPacketProperties {
		if pkts[Publish] == 1 && !slices.Contains(sameEncodingProperties, k) {
			t.Errorf("property %d is valid on PUBLISH but SameEncoding does not compare it", k)
		}
	}
}

func samePublishBase() Packet {
	return Packet{
		FixedHeader:     FixedHeader{Type: Publish, Qos: 1},
		ProtocolVersion: 5,
		PacketID:        7,
		TopicName:       "a/b",
		Payload:         []byte("hello"),
		Mods:            Mods{AllowResponseInfo: true},
		Properties: Properties{
			PayloadFormat: 1, PayloadFormatFlag: true,
			MessageExpiryInterval:  30,
			ContentType:            "text/plain",
			ResponseTopic:          "r/t",
			CorrelationData:        []byte("c"),
			SubscriptionIdentifier: []int{3},
			TopicAlias:             2, TopicAliasFlag: true,
			User: []UserProperty{{Key: "k", Val: "v"}},
		},
	}
}

func encodePublish(t *testing.T, pk Packet) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := pk.PublishEncode(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// SameEncoding must never hold for packets that encode differently
// (packet ID aside), whatever field PublishEncode reads differs; it may
// miss an equal encoding (a max size that cuts nothing), but not for
// copies of the same values.
func TestSameEncoding(t *testing.T) {
	changes := map[string]func(*Packet){
		"max size cutting": func(p *Packet) { p.Mods.MaxSize = 30 },
		"max size roomy":   func(p *Packet) { p.Mods.MaxSize = 1000 },
		"qos":              func(p *Packet) { p.FixedHeader.Qos = 2 },
		"qos 0":            func(p *Packet) { p.FixedHeader.Qos = 0 },
		"retain":           func(p *Packet) { p.FixedHeader.Retain = true },
		"dup":              func(p *Packet) { p.FixedHeader.Dup = true },
		"version":          func(p *Packet) { p.ProtocolVersion = 4 },
		"topic":            func(p *Packet) { p.TopicName = "a/c" },
		"payload":          func(p *Packet) { p.Payload = []byte("hellO") },
		"problem info":     func(p *Packet) { p.Mods.DisallowProblemInfo = true },
		"response info":    func(p *Packet) { p.Mods.AllowResponseInfo = false },
		"payload format":   func(p *Packet) { p.Properties.PayloadFormat = 0 },
		"format flag":      func(p *Packet) { p.Properties.PayloadFormatFlag = false },
		"expiry":           func(p *Packet) { p.Properties.MessageExpiryInterval = 29 },
		"content type":     func(p *Packet) { p.Properties.ContentType = "text/html" },
		"response topic":   func(p *Packet) { p.Properties.ResponseTopic = "r/u" },
		"correlation":      func(p *Packet) { p.Properties.CorrelationData = []byte("d") },
		"subscription ids": func(p *Packet) { p.Properties.SubscriptionIdentifier = []int{3, 4} },
		"topic alias":      func(p *Packet) { p.Properties.TopicAlias = 3 },
		"alias flag":       func(p *Packet) { p.Properties.TopicAliasFlag = false },
		"user value":       func(p *Packet) { p.Properties.User = []UserProperty{{Key: "k", Val: "w"}} },
		"user more":        func(p *Packet) { p.Properties.User = append(p.Properties.User, UserProperty{Key: "k", Val: "v"}) },
	}
	same := map[string]func(*Packet){
		"nothing":      func(*Packet) {},
		"packet id":    func(p *Packet) { p.PacketID = 9 },
		"payload copy": func(p *Packet) { p.Payload = []byte("hello") },
		"user copy":    func(p *Packet) { p.Properties.User = []UserProperty{{Key: "k", Val: "v"}} },
		"origin":       func(p *Packet) { p.Origin = "someone" },
		"ignored prop": func(p *Packet) { p.Properties.ReasonString = "why" },
	}
	base := samePublishBase()
	want := encodePublish(t, base)
	for name, change := range changes {
		pk := samePublishBase()
		change(&pk)
		if pk.FixedHeader.Qos == 0 {
			pk.PacketID = 0
		}
		equal := bytes.Equal(encodePublish(t, pk), want)
		if !equal && (pk.SameEncoding(&base) || base.SameEncoding(&pk)) {
			t.Errorf("%s: the encodings differ but SameEncoding holds", name)
		}
	}
	for name, change := range same {
		pk := samePublishBase()
		change(&pk)
		id := pk.PacketID
		pk.PacketID = base.PacketID
		if !bytes.Equal(encodePublish(t, pk), want) {
			t.Fatalf("%s: the test's packet encodes differently", name)
		}
		pk.PacketID = id
		if !pk.SameEncoding(&base) || !base.SameEncoding(&pk) {
			t.Errorf("%s: SameEncoding does not hold", name)
		}
	}
	other := samePublishBase()
	other.FixedHeader.Type = Puback
	if base.SameEncoding(&other) {
		t.Error("a PUBACK is not a PUBLISH")
	}
}
