package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"golang.org/x/sync/errgroup"
)

// ConnsConfig configures the idle-connection memory benchmark.
type ConnsConfig struct {
	MQTTAddr    string
	PID         int // server process for RSS; 0: connections only
	Prefix      string
	N           int // connections
	Users       int // distinct users; connections are spread over them as devices
	Step        int // RSS is sampled after every Step connections
	Concurrency int // connections being opened at once
	Settle      time.Duration
	Hold        time.Duration // keep the connections open this long after measuring
	KeepAlive   uint16
	Subscribe   bool // each connection subscribes to user/{me}/newMessage, as a chat client does
}

// ConnSample is the server's RSS with a number of connections open.
type ConnSample struct {
	Conns     int     `json:"conns"`
	RSSKB     int64   `json:"rssKB"`
	ElapsedMs float64 `json:"elapsedMs"`
}

// ConnsResult is the outcome of the conns mode.
type ConnsResult struct {
	Mode         string       `json:"mode"`
	Target       string       `json:"target,omitempty"`
	Requested    int          `json:"requested"`
	Opened       int          `json:"opened"`
	Failed       int          `json:"failed"`
	Users        int          `json:"users"`
	Subscribed   bool         `json:"subscribed"`
	OpenSeconds  float64      `json:"openSeconds"`
	ConnsPerSec  float64      `json:"connsPerSecond"`
	RSSBeforeKB  int64        `json:"rssBeforeKB,omitempty"`
	RSSAfterKB   int64        `json:"rssAfterKB,omitempty"`
	RSSSettledKB int64        `json:"rssSettledKB,omitempty"`
	PerConnKB    float64      `json:"perConnKB,omitempty"`      // (settled - before) / opened
	PerConnAfter float64      `json:"perConnAfterKB,omitempty"` // (after - before) / opened
	SlopeKB      float64      `json:"slopeKB,omitempty"`        // least-squares KB per connection over the steps
	Samples      []ConnSample `json:"samples,omitempty"`
	FirstError   string       `json:"firstError,omitempty"`
}

// ErrTooManyFailures aborts a run whose connections keep failing.
var ErrTooManyFailures = errors.New("too many connections failed")

func (c *ConnsConfig) validate() error {
	switch {
	case c.N < 1:
		return fmt.Errorf("%w: -n must be at least 1", errUsage)
	case c.Users < 1:
		return fmt.Errorf("%w: --users must be at least 1", errUsage)
	case c.Step < 1:
		return fmt.Errorf("%w: --step must be at least 1", errUsage)
	case c.Concurrency < 1:
		return fmt.Errorf("%w: --concurrency must be at least 1", errUsage)
	case c.Settle < 0 || c.Hold < 0:
		return fmt.Errorf("%w: --settle and --hold must not be negative", errUsage)
	}
	if c.Users > c.N {
		c.Users = c.N
	}
	return validPrefix(c.Prefix)
}

// RunConns opens cfg.N idle authenticated connections in steps and
// measures the server's resident memory per connection.
func RunConns(ctx context.Context, cfg ConnsConfig, env Env) (*ConnsResult, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	env = env.withDefaults()
	// The bench process needs one descriptor per connection too.
	want := uint64(cfg.N) + 256
	if got, err := RaiseNoFile(want); err != nil {
		return nil, err
	} else if got < want {
		return nil, fmt.Errorf("this process may open only %d files (hard limit) but %d connections need %d; raise it with ulimit -Hn as root", got, cfg.N, want)
	}
	if cfg.PID > 0 {
		if lim, err := ReadMaxOpenFiles(cfg.PID); err == nil && lim >= 0 && lim < int64(cfg.N)+64 {
			env.warnf("the server (pid %d) may open only %d files, fewer than %d connections need: start it from a shell with a higher `ulimit -n` (e.g. ulimit -n 65536)", cfg.PID, lim, cfg.N)
		}
	}

	users := make([]string, cfg.Users)
	for i := range users {
		users[i] = cfg.Prefix + "c" + strconv.Itoa(i)
	}
	tokens, err := env.tokens(ctx, users)
	if err != nil {
		return nil, err
	}

	res := &ConnsResult{Mode: "conns", Requested: cfg.N, Users: cfg.Users, Subscribed: cfg.Subscribe}
	start := time.Now()
	sample := func(n int) {
		if cfg.PID <= 0 {
			return
		}
		kb, err := ReadRSS(cfg.PID)
		if err != nil {
			env.warnf("%v", err)
			return
		}
		res.Samples = append(res.Samples, ConnSample{Conns: n, RSSKB: kb, ElapsedMs: ms(time.Since(start))})
	}
	rss := func() int64 {
		if len(res.Samples) == 0 {
			return 0
		}
		return res.Samples[len(res.Samples)-1].RSSKB
	}
	sample(0)
	res.RSSBeforeKB = rss()

	var (
		mu       sync.Mutex
		clients  = make([]*paho.Client, 0, cfg.N)
		failed   atomic.Int64
		firstErr error
	)
	defer func() {
		// Close in parallel: 10,000 sequential DISCONNECTs take a while.
		var g errgroup.Group
		g.SetLimit(64)
		for _, c := range clients {
			g.Go(func() error {
				_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
				return nil
			})
		}
		_ = g.Wait()
	}()
	opened := func() int { mu.Lock(); defer mu.Unlock(); return len(clients) }
	stopProgress := env.progress(ctx, func(el time.Duration) string {
		n := opened()
		line := fmt.Sprintf("conns: %d/%d open, %d failed, %.0f conn/s", n, cfg.N, failed.Load(), float64(n)/el.Seconds())
		if cfg.PID > 0 {
			if kb, err := ReadRSS(cfg.PID); err == nil {
				line += fmt.Sprintf(", server RSS %.1f MB", float64(kb)/1024)
			}
		}
		return line
	})
	maxFail := int64(max(10, cfg.N/100))
	for base := 0; base < cfg.N; base += cfg.Step {
		end := min(base+cfg.Step, cfg.N)
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(cfg.Concurrency)
		for i := base; i < end; i++ {
			user := users[i%cfg.Users]
			device := "d" + strconv.Itoa(i/cfg.Users)
			g.Go(func() error {
				c, err := dial(gctx, dialOptions{Addr: cfg.MQTTAddr, User: user, Device: device, Token: tokens[user], KeepAlive: cfg.KeepAlive, ReceiveMaximum: 8})
				if err == nil && cfg.Subscribe {
					if err = subscribe(gctx, c, "user/"+user+"/newMessage"); err != nil {
						_ = c.Disconnect(&paho.Disconnect{})
					}
				}
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					if firstErr == nil {
						firstErr = err
					}
					if failed.Add(1) > maxFail {
						return fmt.Errorf("%w (%d); first: %v", ErrTooManyFailures, failed.Load(), firstErr)
					}
					return nil
				}
				clients = append(clients, c)
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			stopProgress()
			return nil, err
		}
		if err := ctx.Err(); err != nil {
			stopProgress()
			return nil, err
		}
		sample(opened())
	}
	res.OpenSeconds = time.Since(start).Seconds()
	res.Opened = opened()
	res.Failed = int(failed.Load())
	if firstErr != nil {
		res.FirstError = firstErr.Error()
	}
	if res.OpenSeconds > 0 {
		res.ConnsPerSec = float64(res.Opened) / res.OpenSeconds
	}
	res.RSSAfterKB = rss()
	if cfg.Settle > 0 {
		// The server's heap settles after the connection burst (GC, freed
		// handshake buffers); the settled figure is the steady-state cost.
		if err := (wallClock{}).Sleep(ctx, cfg.Settle); err != nil {
			stopProgress()
			return nil, err
		}
		sample(res.Opened)
	}
	res.RSSSettledKB = rss()
	if cfg.PID > 0 && res.Opened > 0 {
		res.PerConnKB = float64(res.RSSSettledKB-res.RSSBeforeKB) / float64(res.Opened)
		res.PerConnAfter = float64(res.RSSAfterKB-res.RSSBeforeKB) / float64(res.Opened)
		res.SlopeKB = Slope(res.Samples)
	}
	if cfg.Hold > 0 {
		if err := (wallClock{}).Sleep(ctx, cfg.Hold); err != nil {
			stopProgress()
			return nil, err
		}
	}
	stopProgress()
	return res, nil
}

// Slope is the least-squares slope of RSS (KB) against connections over
// the samples taken while connections were being opened (the settle
// sample repeats the last count and is left out). The marginal cost of
// one more connection is less sensitive to a baseline that holds freed
// memory (the heap of a server that has just hashed passwords) than the
// difference of two readings.
func Slope(samples []ConnSample) float64 {
	var pts []ConnSample
	for i, s := range samples {
		if i > 0 && s.Conns == samples[i-1].Conns {
			continue
		}
		pts = append(pts, s)
	}
	if len(pts) < 2 {
		return 0
	}
	var sx, sy, sxx, sxy float64
	n := float64(len(pts))
	for _, p := range pts {
		x, y := float64(p.Conns), float64(p.RSSKB)
		sx += x
		sy += y
		sxx += x * x
		sxy += x * y
	}
	den := n*sxx - sx*sx
	if den == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / den
}
