package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"time"

	"github.com/edgechat/edgechat/node"
)

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return s.Value[:12]
			}
		}
		return bi.Main.Version
	}
	return "unknown"
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	for _, a := range args {
		if a == "-h" || a == "--help" || a == "-help" {
			fmt.Fprintf(stdout, "Usage: edgechat serve [flags]\n\n%s", node.Usage())
			return nil
		}
	}
	cfg, err := node.LoadConfig(args, os.Environ())
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	// main reads it only once a signal came (stopTimeout): a malformed
	// value is refused now, not found out when a stop hangs.
	if v := os.Getenv("EDGECHAT_STOP_TIMEOUT"); v != "" {
		// Under a second, a stop would give up before the node had
		// stopped (it takes up to some hundred milliseconds).
		if d, err := time.ParseDuration(v); err != nil || d < minStopTimeout {
			return fmt.Errorf("%w: EDGECHAT_STOP_TIMEOUT %q: want a Go duration of at least %v, e.g. 45s or 2m", errUsage, v, minStopTimeout)
		}
	}
	log := newLogger(cfg, stderr)
	if cfg.Dev {
		log.Warn("DEV MODE: anonymous MQTT clients are accepted and non-chat topics are open; never run this in production")
	}
	n, err := node.New(cfg, log)
	if err != nil {
		return err
	}
	err = n.Run(ctx)
	if errors.Is(err, context.Canceled) || (err == nil && ctx.Err() != nil) {
		log.Info("edgechat stopped")
		return nil
	}
	return err
}

func newLogger(cfg node.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
