package broker

import (
	"context"
	"log/slog"
)

// quietRefusals demotes mochi's "publish packet error" records to Debug:
// mochi logs every publish a hook refuses (a negative PUBACK, a normal
// outcome for bad input or a quota) at Error level with the whole packet.
// Refusals are counted in edgechat_mqtt_messages_dropped_total instead.
type quietRefusals struct{ slog.Handler }

func (q quietRefusals) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "publish packet error" && r.Level > slog.LevelDebug {
		if !q.Handler.Enabled(ctx, slog.LevelDebug) {
			return nil
		}
		r.Level = slog.LevelDebug
	}
	return q.Handler.Handle(ctx, r)
}

func (q quietRefusals) WithAttrs(as []slog.Attr) slog.Handler {
	return quietRefusals{q.Handler.WithAttrs(as)}
}

func (q quietRefusals) WithGroup(name string) slog.Handler {
	return quietRefusals{q.Handler.WithGroup(name)}
}
