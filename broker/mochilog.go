package broker

import (
	"context"
	"log/slog"

	"github.com/mochi-mqtt/server/v2/packets"
)

// quietRefusals is the handler of mochi's log. It demotes mochi's
// "publish packet error" records to Debug: mochi logs every publish a
// hook refuses (a negative PUBACK, a normal outcome for bad input or a
// quota) at Error level with the whole packet. Refusals are counted in
// edgechat_mqtt_messages_dropped_total instead.
//
// It also replaces every MQTT packet mochi logs (a packet it refused as a
// protocol error, at Warn; publishes it could not deliver, at Debug) by
// a summary (packetSummary): the whole packet holds a CONNECT's password
// (the user's access token) and a PUBLISH's payload (a message's body).
type quietRefusals struct{ slog.Handler }

func (q quietRefusals) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "publish packet error" && r.Level > slog.LevelDebug {
		if !q.Handler.Enabled(ctx, slog.LevelDebug) {
			return nil
		}
		r.Level = slog.LevelDebug
	}
	hasPacket := false
	r.Attrs(func(a slog.Attr) bool {
		_, hasPacket = logPacket(a.Value)
		return !hasPacket
	})
	if hasPacket {
		clean := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
		r.Attrs(func(a slog.Attr) bool {
			if pk, ok := logPacket(a.Value); ok {
				a.Value = packetSummary(pk)
			}
			clean.AddAttrs(a)
			return true
		})
		r = clean
	}
	return q.Handler.Handle(ctx, r)
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
		attrs = append(attrs, slog.String("client_id", pk.Connect.ClientIdentifier))
	}
	if len(pk.Filters) > 0 {
		attrs = append(attrs, slog.Int("filters", len(pk.Filters)))
	}
	return slog.GroupValue(attrs...)
}
