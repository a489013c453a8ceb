package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/services/auth"
)

// Seeding accounts. A registration over HTTP hashes its password with
// argon2id (19 MiB, two passes): on the 2-core project machine that is
// 3–10 registrations per second, so the 10,000 members of the group
// scenario would take half an hour to an hour of server CPU before
// anything is measured. `bench seed` instead runs a node in this process
// on the data directory the server will use, with the cheap argon2
// parameters of the tests, and creates the accounts through the node's
// own auth service (Raft commands, as a registration makes them); then
// `edgechat serve --data DIR --cluster-addr ADDR` (the same address)
// starts on that directory. Only the stored password hashes differ:
// bench users get tokens minted with --data and never log in.

// SeedConfig configures `bench seed`.
type SeedConfig struct {
	DataDir     string
	ClusterAddr string // the address `edgechat serve` will use: Raft remembers it
	NodeID      string
	Password    string
	Users       []string
}

// RunSeed creates the accounts (existing ones are kept) and stops the
// in-process node.
func RunSeed(ctx context.Context, cfg SeedConfig, env Env) error {
	env = env.withDefaults()
	if cfg.DataDir == "" || cfg.ClusterAddr == "" {
		return fmt.Errorf("%w: seed needs --data and --cluster-addr (the ones edgechat serve will use)", errUsage)
	}
	nc := node.Defaults()
	nc.DataDir, nc.ClusterAddr = cfg.DataDir, cfg.ClusterAddr
	if cfg.NodeID != "" {
		nc.NodeID = cfg.NodeID
	}
	nc.HTTPAddr, nc.MQTTAddr, nc.MQTTSAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	nc.FastPassword, nc.NoRateLimits = true, true
	nc.MQTTPublishRate, nc.MQTTConnectRate, nc.MQTTSubscribeRate = "off", "off", "off"
	nc.MQTTConnectionsPerUser = 0 // no limit: the conns mode opens as many as asked
	nc.LogLevel = "warn"
	nd, err := node.New(nc, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- nd.Run(ctx) }()
	stopNode := func() error {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			return fmt.Errorf("seed: stopping the node: %w", err)
		}
		return nil
	}
	for !nd.Ready() {
		select {
		case err := <-done:
			cancel()
			return fmt.Errorf("seed: node stopped before it was ready: %w", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	var created, existed atomic.Int64
	stop := env.progress(ctx, func(time.Duration) string {
		return fmt.Sprintf("seed: %d created, %d existed, of %d", created.Load(), existed.Load(), len(cfg.Users))
	})
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(64) // concurrent proposals share Raft entries
	for _, u := range cfg.Users {
		g.Go(func() error {
			_, err := nd.Auth.CreateAccount(gctx, u, cfg.Password, u)
			switch {
			case errors.Is(err, auth.ErrUsernameTaken):
				existed.Add(1)
			case err != nil:
				return fmt.Errorf("seed: creating %s: %w", u, err)
			default:
				created.Add(1)
			}
			return nil
		})
	}
	err = g.Wait()
	stop()
	if serr := stopNode(); err == nil {
		err = serr
	}
	return err
}

// groupUsers are the accounts of the group scenario: the owner and
// members-1 members.
func groupUsers(prefix string, members int) (owner string, ms []string) {
	ms = make([]string, members-1)
	for i := range ms {
		ms[i] = prefix + "m" + fmt.Sprint(i)
	}
	return prefix + "o", ms
}
