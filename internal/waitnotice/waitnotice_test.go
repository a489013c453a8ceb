package waitnotice

import (
	"context"
	"testing"
	"time"
)

func TestBlockingCallsTheFunctionOfTheContext(t *testing.T) {
	calls := 0
	ctx := With(context.Background(), func() { calls++ })
	dctx, cancel := context.WithDeadline(ctx, time.Now().Add(time.Hour))
	defer cancel()
	Blocking(dctx) // derived contexts carry it
	Blocking(ctx)
	if calls != 2 {
		t.Fatalf("fn called %d times, want 2", calls)
	}
	Blocking(context.Background()) // none: nothing to call, no panic
}
