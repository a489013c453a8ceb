package broker

import (
	"context"
	"log/slog"
	"time"

	"github.com/edgechat/edgechat/internal/backoff"
)

// reconcileLoop drives a keeper of replicated state (routes, the client
// registry): on every wake it proposes what changed locally, retrying
// with backoff while the cluster cannot commit (even without a new
// event), and every resync it marks everything for a full reconcile,
// which also withdraws entries left from before a crash.
func reconcileLoop(ctx context.Context, resync time.Duration, wake chan struct{}, markAll func(),
	reconcile func(context.Context) error, log *slog.Logger, what string) {
	markAll()
	tick := time.NewTicker(resync)
	defer tick.Stop()
	bo := backoff.New(50*time.Millisecond, 2*time.Second)
	for {
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-tick.C:
			markAll()
			continue
		}
		if err := reconcile(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Debug(what+" proposal failed; retrying", "error", err)
			if bo.Sleep(ctx) != nil {
				return
			}
			select {
			case wake <- struct{}{}:
			default:
			}
			continue
		}
		bo.Reset()
	}
}
