package node

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// gcRunner is what valueLogGC needs of a Badger database.
type gcRunner interface {
	RunValueLogGC(discardRatio float64) error
}

// valueLogGC rewrites Badger value-log files whose space is mostly
// garbage, on a ticker, until it stops. Badger never does it by itself
// (mochi's store once grew to 5 GB without it).
type valueLogGC struct {
	db    gcRunner
	every time.Duration
	// ratio is the share of a file that must be garbage to rewrite it:
	// 0.5 rewrites a file to reclaim at least half of it.
	ratio float64
	log   *slog.Logger
}

func newValueLogGC(db gcRunner, log *slog.Logger) *valueLogGC {
	return &valueLogGC{db: db, every: 5 * time.Minute, ratio: 0.5, log: log}
}

// Run collects garbage every g.every until ctx is done. A failed pass is
// logged and retried on the next tick: a full disk or a closing database
// must not take the node down.
func (g *valueLogGC) Run(ctx context.Context) error {
	t := time.NewTicker(g.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			g.pass(ctx)
		}
	}
}

// pass rewrites files while Badger finds one worth it (each call
// rewrites at most one).
func (g *valueLogGC) pass(ctx context.Context) {
	for rewritten := 0; ctx.Err() == nil; rewritten++ {
		err := g.db.RunValueLogGC(g.ratio)
		switch {
		case err == nil:
			continue
		case errors.Is(err, badger.ErrNoRewrite):
			if rewritten > 0 {
				g.log.Debug("value log gc", "files_rewritten", rewritten)
			}
		case errors.Is(err, badger.ErrRejected):
			// Another GC is running, or the database is closing.
		default:
			g.log.Warn("value log gc failed; retrying later", "err", err, "files_rewritten", rewritten)
		}
		return
	}
}
