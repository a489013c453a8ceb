package cluster

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"

	"github.com/hashicorp/go-hclog"
)

// hclogAdapter sends the logs of hashicorp/raft and raft-wal (which speak
// hclog) to the node's slog logger. Raft is chatty at info level, so only
// messages at or above level reach slog; leadership changes are logged by
// the node itself.
type hclogAdapter struct {
	log   *slog.Logger
	name  string
	level hclog.Level
	args  []any
}

var _ hclog.Logger = (*hclogAdapter)(nil)

func newHclog(l *slog.Logger, name string, level hclog.Level) *hclogAdapter {
	return &hclogAdapter{log: l, name: name, level: level}
}

func slogLevel(l hclog.Level) slog.Level {
	switch l {
	case hclog.Trace, hclog.Debug:
		return slog.LevelDebug
	case hclog.Info, hclog.NoLevel:
		return slog.LevelInfo
	case hclog.Warn:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

func (h *hclogAdapter) Log(level hclog.Level, msg string, args ...any) {
	if level == hclog.Off || level < h.level {
		return
	}
	sl := slogLevel(level)
	if sl >= slog.LevelWarn && closedByUs(args) {
		// Raft's transport reports reads of connections this node closed
		// while it shuts down ("failed to decode incoming command: use of
		// closed network connection") as errors: every clean stop
		// printed a few.
		sl = slog.LevelDebug
	}
	ctx := context.Background()
	if !h.log.Enabled(ctx, sl) {
		return
	}
	all := make([]any, 0, len(h.args)+len(args)+2)
	if h.name != "" {
		all = append(all, "component", h.name)
	}
	all = append(all, h.args...)
	all = append(all, args...)
	h.log.Log(ctx, sl, msg, all...)
}

// closedByUs reports whether the only error among args is a use of a
// connection or listener this process closed (net.ErrClosed).
func closedByUs(args []any) bool {
	closed := false
	for _, a := range args {
		if err, ok := a.(error); ok {
			if !errors.Is(err, net.ErrClosed) {
				return false
			}
			closed = true
		}
	}
	return closed
}

func (h *hclogAdapter) Trace(msg string, args ...any) { h.Log(hclog.Trace, msg, args...) }
func (h *hclogAdapter) Debug(msg string, args ...any) { h.Log(hclog.Debug, msg, args...) }
func (h *hclogAdapter) Info(msg string, args ...any)  { h.Log(hclog.Info, msg, args...) }
func (h *hclogAdapter) Warn(msg string, args ...any)  { h.Log(hclog.Warn, msg, args...) }
func (h *hclogAdapter) Error(msg string, args ...any) { h.Log(hclog.Error, msg, args...) }

func (h *hclogAdapter) IsTrace() bool { return h.level <= hclog.Trace }
func (h *hclogAdapter) IsDebug() bool { return h.level <= hclog.Debug }
func (h *hclogAdapter) IsInfo() bool  { return h.level <= hclog.Info }
func (h *hclogAdapter) IsWarn() bool  { return h.level <= hclog.Warn }
func (h *hclogAdapter) IsError() bool { return h.level <= hclog.Error }

func (h *hclogAdapter) ImpliedArgs() []any { return h.args }

func (h *hclogAdapter) With(args ...any) hclog.Logger {
	c := *h
	c.args = append(append([]any{}, h.args...), args...)
	return &c
}

func (h *hclogAdapter) Name() string { return h.name }

func (h *hclogAdapter) Named(name string) hclog.Logger {
	c := *h
	if c.name != "" {
		c.name += "." + name
	} else {
		c.name = name
	}
	return &c
}

func (h *hclogAdapter) ResetNamed(name string) hclog.Logger {
	c := *h
	c.name = name
	return &c
}

// SetLevel is ignored after construction on purpose: the adapter is
// shared by value copies and a data race on level would buy nothing.
func (h *hclogAdapter) SetLevel(hclog.Level) {}

func (h *hclogAdapter) GetLevel() hclog.Level { return h.level }

func (h *hclogAdapter) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(h.StandardWriter(opts), "", 0)
}

func (h *hclogAdapter) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return stdWriter{h}
}

// stdWriter turns lines written through a standard *log.Logger into
// adapter calls, guessing the level from hclog's "[WARN]" style prefixes.
type stdWriter struct{ h *hclogAdapter }

func (w stdWriter) Write(p []byte) (int, error) {
	line := bytes.TrimSpace(p)
	level := hclog.Info
	for _, c := range []struct {
		prefix string
		level  hclog.Level
	}{
		{"[ERR", hclog.Error}, {"[WARN", hclog.Warn}, {"[DEBUG", hclog.Debug}, {"[TRACE", hclog.Trace}, {"[INFO", hclog.Info},
	} {
		if bytes.HasPrefix(line, []byte(c.prefix)) {
			level = c.level
			if i := bytes.IndexByte(line, ']'); i >= 0 {
				line = bytes.TrimSpace(line[i+1:])
			}
			break
		}
	}
	w.h.Log(level, string(line))
	return len(p), nil
}
