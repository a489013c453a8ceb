package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// RunRefServer serves a plain mochi-mqtt broker (default options, every
// client and topic allowed) on addr until ctx ends: the reference that
// edgechat's figures are compared with (run the modes with --anon).
func RunRefServer(ctx context.Context, addr string, stdout io.Writer) error {
	s := mqtt.New(&mqtt.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := s.AddHook(new(allowAll), nil); err != nil {
		return err
	}
	l := listeners.NewTCP(listeners.Config{ID: "tcp", Address: addr})
	if err := s.AddListener(l); err != nil { // binds: the address is known now
		return fmt.Errorf("listening on %s: %w", addr, err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve() }()
	fmt.Fprintf(stdout, "plain mochi-mqtt serving mqtt=%s pid=%d (Ctrl-C stops it)\n", l.Address(), os.Getpid())
	select {
	case <-ctx.Done():
	case err := <-errc:
		if err != nil {
			return err
		}
		<-ctx.Done()
	}
	return s.Close()
}

// allowAll authenticates every client and allows every topic.
type allowAll struct{ mqtt.HookBase }

var _ mqtt.Hook = (*allowAll)(nil)

func (*allowAll) ID() string { return "allow-all" }

func (*allowAll) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

func (*allowAll) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }

func (*allowAll) OnACLCheck(*mqtt.Client, string, bool) bool { return true }
