package broker

import (
	"context"
	"log/slog"
	"time"
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
	backoff := time.Duration(0)
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
			backoff = min(max(2*backoff, 50*time.Millisecond), 2*time.Second)
			log.Debug(what+" proposal failed; retrying", "in", backoff, "error", err)
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			select {
			case wake <- struct{}{}:
			default:
			}
			continue
		}
		backoff = 0
	}
}
