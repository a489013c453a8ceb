package broker

import (
	"context"
	"log/slog"
	"strconv"
	"unicode/utf8"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// quietRefusals is the handler of mochi's log. It demotes mochi's
// "publish packet error" records to Debug: mochi logs every publish a
// hook refuses (a negative PUBACK, a normal outcome for bad input or a
// quota) at Error level with the whole packet. Refusals are counted in
// edgechat_mqtt_messages_dropped_total instead.
//
// It also demotes mochi's warning of a short keepalive (minimumKeepalive),
// cuts long client IDs (loggedID), and replaces every MQTT packet mochi
// logs (a packet it refused as a protocol error, at Warn; publishes it
// could not deliver, at Debug) by a summary (packetSummary): the whole
// packet holds a CONNECT's password (the user's access token) and a
// PUBLISH's payload (a message's body).
type quietRefusals struct{ slog.Handler }

func (q quietRefusals) Handle(ctx context.Context, r slog.Record) error {
	if (r.Message == "publish packet error" || r.Message == minimumKeepalive) && r.Level > slog.LevelDebug {
		if !q.Handler.Enabled(ctx, slog.LevelDebug) {
			return nil
		}
		r.Level = slog.LevelDebug
	}
	rewrite := false
	r.Attrs(func(a slog.Attr) bool {
		_, rewrite = cleanAttr(a)
		return !rewrite
	})
	if rewrite {
		clean := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
		r.Attrs(func(a slog.Attr) bool {
			a, _ = cleanAttr(a)
			clean.AddAttrs(a)
			return true
		})
		r = clean
	}
	return q.Handler.Handle(ctx, r)
}

// minimumKeepalive is mochi's warning of a CONNECT with a keepalive under
// 5 s, written as it reads the packet, before any check: 0 (no keepalive)
// is valid MQTT, and a flood of CONNECTs over the connection rate, whose
// refusals are logged at Debug, wrote one WARN line each. Debug too.
var minimumKeepalive = mqtt.ErrMinimumKeepalive.Error()

// cleanAttr is a of mochi's log as edgechat writes it: a packet as its
// summary, a client ID cut to loggedID's length. It reports whether it
// changed a.
func cleanAttr(a slog.Attr) (slog.Attr, bool) {
	if pk, ok := logPacket(a.Value); ok {
		a.Value = packetSummary(pk)
		return a, true
	}
	if a.Key == "client" && a.Value.Kind() == slog.KindString && len(a.Value.String()) > maxLoggedClientID {
		a.Value = slog.StringValue(loggedID(a.Value.String()))
		return a, true
	}
	return a, false
}

// maxLoggedClientID bounds a client ID in the log: an accepted one is at
// most 97 bytes ({userID}/{deviceID}); a refused one may fill the CONNECT
// (64 KiB), and anyone may send it.
const maxLoggedClientID = 128

// loggedID is a client ID for the log: as it is, or its first
// maxLoggedClientID bytes (whole characters) and its length.
func loggedID(id string) string {
	if len(id) <= maxLoggedClientID {
		return id
	}
	n := maxLoggedClientID
	for i := 0; i < utf8.UTFMax-1 && n > 0 && !utf8.RuneStart(id[n]); i++ {
		n-- // not within a character
	}
	return id[:n] + "…(" + strconv.Itoa(len(id)) + " bytes)"
}

func (q quietRefusals) WithAttrs(as []slog.Attr) slog.Handler {
	return quietRefusals{q.Handler.WithAttrs(as)}
}

func (q quietRefusals) WithGroup(name string) slog.Handler {
	return quietRefusals{q.Handler.WithGroup(name)}
}

// logPacket is the MQTT packet an attribute of mochi's log holds.
func logPacket(v slog.Value) (packets.Packet, bool) {
	if v.Kind() != slog.KindAny {
		return packets.Packet{}, false
	}
	switch pk := v.Any().(type) {
	case packets.Packet:
		return pk, true
	case *packets.Packet:
		if pk != nil {
			return *pk, true
		}
	}
	return packets.Packet{}, false
}

// packetSummary is what the log says of a packet: its type, packet ID,
// topic, QoS and payload size; never the CONNECT's credentials, a will's
// or a PUBLISH's payload, nor AUTH data.
func packetSummary(pk packets.Packet) slog.Value {
	attrs := []slog.Attr{slog.String("type", packets.PacketNames[pk.FixedHeader.Type])}
	if pk.PacketID != 0 {
		attrs = append(attrs, slog.Int("id", int(pk.PacketID)))
	}
	if pk.TopicName != "" {
		attrs = append(attrs, slog.String("topic", pk.TopicName))
	}
	if pk.FixedHeader.Type == packets.Publish {
		attrs = append(attrs, slog.Int("qos", int(pk.FixedHeader.Qos)), slog.Int("payload_bytes", len(pk.Payload)))
	}
	if pk.FixedHeader.Type == packets.Connect {
		attrs = append(attrs, slog.String("client_id", loggedID(pk.Connect.ClientIdentifier)))
	}
	if len(pk.Filters) > 0 {
		attrs = append(attrs, slog.Int("filters", len(pk.Filters)))
	}
	return slog.GroupValue(attrs...)
}
