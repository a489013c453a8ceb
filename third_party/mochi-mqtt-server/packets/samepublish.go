// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co

package packets

import (
	"bytes"
	"slices"
)

// SameEncoding reports whether two PUBLISH packets, prepared for their
// clients (protocol version and mods set), encode to the same bytes apart
// from the packet ID. A publish to many subscribers is then encoded once
// (see the server's fan-out). It compares everything PublishEncode reads:
// the fixed header, the topic, the payload, the mods and, for MQTT 5, the
// properties valid on a PUBLISH (TestSameEncodingCoversPublishProperties
// keeps that list in step with validPacketProperties).
func (pk *Packet) SameEncoding(o *Packet) bool {
	if pk.FixedHeader.Type != Publish || o.FixedHeader.Type != Publish ||
		pk.FixedHeader.Qos != o.FixedHeader.Qos || pk.FixedHeader.Retain != o.FixedHeader.Retain ||
		pk.FixedHeader.Dup != o.FixedHeader.Dup || pk.ProtocolVersion != o.ProtocolVersion ||
		pk.Mods != o.Mods || pk.TopicName != o.TopicName || !bytes.Equal(pk.Payload, o.Payload) {
		return false
	}
	if pk.ProtocolVersion < 5 {
		return true
	}
	a, b := &pk.Properties, &o.Properties
	return a.PayloadFormat == b.PayloadFormat && a.PayloadFormatFlag == b.PayloadFormatFlag &&
		a.MessageExpiryInterval == b.MessageExpiryInterval &&
		a.ContentType == b.ContentType &&
		a.ResponseTopic == b.ResponseTopic &&
		bytes.Equal(a.CorrelationData, b.CorrelationData) &&
		slices.Equal(a.SubscriptionIdentifier, b.SubscriptionIdentifier) &&
		a.TopicAlias == b.TopicAlias && a.TopicAliasFlag == b.TopicAliasFlag &&
		slices.Equal(a.User, b.User)
}

// sameEncodingProperties are the properties SameEncoding compares.
var sameEncodingProperties = []byte{
	PropPayloadFormat, PropMessageExpiryInterval, PropContentType, PropResponseTopic,
	PropCorrelationData, PropSubscriptionIdentifier, PropTopicAlias, PropUser,
}
