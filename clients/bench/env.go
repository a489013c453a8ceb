package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// Env is what a mode needs from outside: where to write, and how to get
// tokens.
type Env struct {
	Stdout        io.Writer // final summary
	Stderr        io.Writer // progress lines and warnings
	Tokens        TokenSource
	ProgressEvery time.Duration // default 1s
}

func (e Env) withDefaults() Env {
	if e.Stdout == nil {
		e.Stdout = io.Discard
	}
	if e.Stderr == nil {
		e.Stderr = io.Discard
	}
	if e.ProgressEvery <= 0 {
		e.ProgressEvery = time.Second
	}
	return e
}

func (e Env) warnf(format string, args ...any) {
	fmt.Fprintf(e.Stderr, "warning: "+format+"\n", args...)
}

// errNoTokens is returned when a mode runs without a TokenSource.
var errNoTokens = errors.New("no token source configured")

// tokens gets the tokens of users, with a progress line.
func (e Env) tokens(ctx context.Context, users []string) (map[string]string, error) {
	if e.Tokens == nil {
		return nil, errNoTokens
	}
	var done atomic.Int64
	stop := e.progress(ctx, func(time.Duration) string {
		return fmt.Sprintf("accounts: %d/%d ready", done.Load(), len(users))
	})
	defer stop()
	toks, err := e.Tokens.Tokens(ctx, users, func(n int) { done.Store(int64(n)) })
	if err != nil {
		return nil, fmt.Errorf("preparing %d accounts: %w", len(users), err)
	}
	return toks, nil
}

// progress prints line(elapsed) every ProgressEvery until stop is
// called; stop prints the line one last time so that the final state is
// always shown.
func (e Env) progress(ctx context.Context, line func(elapsed time.Duration) string) (stop func()) {
	start := time.Now()
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(e.ProgressEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				fmt.Fprintln(e.Stderr, line(time.Since(start)))
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			fmt.Fprintln(e.Stderr, line(time.Since(start)))
		})
	}
}
