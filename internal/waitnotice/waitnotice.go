// Package waitnotice lets a goroutine that waits for many results in turn
// learn when one of its waits is about to block, the way net/http/httptrace
// reports the steps of a request: the waiter puts a function in the
// context, and code that waits calls Blocking(ctx) just before it parks.
//
// The broker's answerer uses it to batch acknowledgements: results that
// are already there are answered together, and what is batched is written
// out as soon as the next result is not there yet, so batching never holds
// an answer back while the answerer waits.
package waitnotice

import "context"

type key struct{}

// With returns a context whose waits call fn just before they block. fn
// runs on the waiting goroutine and must not block for long.
func With(ctx context.Context, fn func()) context.Context {
	return context.WithValue(ctx, key{}, fn)
}

// Blocking calls the function With put in ctx, if any. Code about to
// block on a result calls it once per wait, only when the result is not
// there yet.
func Blocking(ctx context.Context) {
	if fn, ok := ctx.Value(key{}).(func()); ok {
		fn()
	}
}
