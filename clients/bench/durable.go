package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"golang.org/x/sync/errgroup"
)

// DurableConfig configures the durable scenario: real edgechat direct
// messages (signed-in users, chat envelopes, QoS 1 to
// user/{to}/newMessage, acknowledged once committed) from Senders users
// to Receivers users round robin, at a fixed total rate. With several
// addresses (a cluster), senders and receivers are spread over them, a
// receiver on a different node from most of its senders.
type DurableConfig struct {
	Addrs     []string
	PIDs      []int
	Prefix    string
	Senders   int
	Receivers int
	InFlight  int
	Size      int
	Duration  time.Duration
	Warmup    time.Duration
	Drain     time.Duration
	Clock     Clock
}

func (c *DurableConfig) validate() error {
	switch {
	case len(c.Addrs) == 0:
		return fmt.Errorf("%w: no MQTT address", errUsage)
	case c.Senders < 1 || c.Receivers < 1:
		return fmt.Errorf("%w: --senders and --receivers must be at least 1", errUsage)
	case c.Duration <= 0 || c.Warmup < 0 || c.Drain < 0:
		return fmt.Errorf("%w: --duration must be positive, --warmup and --drain not negative", errUsage)
	case c.Size < 1 || c.Size > 8000:
		return fmt.Errorf("%w: --size must be 1..8000 bytes (the server's body limit is 8 KiB)", errUsage)
	}
	if c.InFlight < 1 {
		c.InFlight = 16
	}
	if c.Drain == 0 {
		c.Drain = 5 * time.Second
	}
	if c.Clock == nil {
		c.Clock = wallClock{}
	}
	return validPrefix(c.Prefix)
}

// durableRun keeps the connections of the durable scenario across steps.
type durableRun struct {
	cfg       DurableConfig
	env       Env
	runID     string
	senders   []*paho.Client
	receivers []string
	conns     []*paho.Client

	step        atomic.Uint32
	measureFrom atomic.Int64
	measureTo   atomic.Int64
	lat         atomic.Pointer[Histogram]
	mu          sync.Mutex
	seen        map[string]struct{} // cids delivered in this step
	delivered   atomic.Int64
	inWindow    atomic.Int64
	dups        atomic.Int64
}

func newDurableRun(ctx context.Context, cfg DurableConfig, env Env) (*durableRun, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	env = env.withDefaults()
	if _, err := RaiseNoFile(uint64(cfg.Senders+cfg.Receivers) + 256); err != nil {
		env.warnf("%v", err)
	}
	r := &durableRun{cfg: cfg, env: env, seen: map[string]struct{}{}}
	r.lat.Store(new(Histogram))
	var rb [4]byte
	_, _ = rand.Read(rb[:])
	// A fresh run ID keeps cids unique across runs: the server would
	// acknowledge a repeated (sender, cid) without storing it again.
	r.runID = hex.EncodeToString(rb[:])
	senders := make([]string, cfg.Senders)
	for i := range senders {
		senders[i] = cfg.Prefix + "s" + strconv.Itoa(i)
	}
	r.receivers = make([]string, cfg.Receivers)
	for i := range r.receivers {
		r.receivers[i] = cfg.Prefix + "r" + strconv.Itoa(i)
	}
	tokens, err := env.tokens(ctx, append(slices.Clone(senders), r.receivers...))
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i, u := range r.receivers {
		g.Go(func() error {
			c, err := dial(gctx, dialOptions{Addr: cfg.Addrs[i%len(cfg.Addrs)], User: u, Device: "bench", Token: tokens[u],
				ReceiveMaximum: 1024, OnPublish: r.onMessage})
			if err != nil {
				return err
			}
			mu.Lock()
			r.conns = append(r.conns, c)
			mu.Unlock()
			return subscribe(gctx, c, "user/"+u+"/newMessage")
		})
	}
	r.senders = make([]*paho.Client, len(senders))
	for i, u := range senders {
		g.Go(func() error {
			c, err := dial(gctx, dialOptions{Addr: cfg.Addrs[(i+1)%len(cfg.Addrs)], User: u, Device: "bench", Token: tokens[u], ReceiveMaximum: 16})
			if err != nil {
				return err
			}
			mu.Lock()
			r.conns = append(r.conns, c)
			mu.Unlock()
			r.senders[i] = c
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

func (r *durableRun) close() { disconnectAll(r.conns) }

// disconnectAll disconnects paho clients, 32 at a time (nil ones are
// skipped: a run that failed half-way through connecting).
func disconnectAll(conns []*paho.Client) {
	var g errgroup.Group
	g.SetLimit(32)
	for _, c := range conns {
		if c != nil {
			g.Go(func() error { _ = c.Disconnect(&paho.Disconnect{}); return nil })
		}
	}
	_ = g.Wait()
}

// stepPrefix starts the cids of a step: "{run}-{step}-".
func (r *durableRun) stepPrefix(step uint32) string {
	return r.runID + "-" + strconv.FormatUint(uint64(step), 10) + "-"
}

func (r *durableRun) onMessage(p *paho.Publish) {
	now := time.Now()
	cid, ok := envelopeCID(p.Payload)
	if !ok || !strings.HasPrefix(cid, r.stepPrefix(r.step.Load())) {
		return
	}
	r.mu.Lock()
	_, dup := r.seen[cid]
	if !dup {
		r.seen[cid] = struct{}{}
	}
	r.mu.Unlock()
	if dup {
		r.dups.Add(1)
		return
	}
	r.delivered.Add(1)
	if t, ok := sentTime(p.Payload); ok && t.UnixNano() >= r.measureFrom.Load() && t.UnixNano() < r.measureTo.Load() {
		r.inWindow.Add(1)
		r.lat.Load().Add(now.Sub(t))
	}
}

// envelopeCID extracts "cid" from a delivered envelope.
func envelopeCID(b []byte) (string, bool) {
	s := string(b)
	i := strings.Index(s, `"cid":"`)
	if i < 0 {
		return "", false
	}
	s = s[i+len(`"cid":"`):]
	j := strings.IndexByte(s, '"')
	if j < 0 {
		return "", false
	}
	return s[:j], true
}

// run offers rate messages/s; the bar of a sweep is the PUBACK p99 (a
// PUBACK means committed: that is the durable figure).
func (r *durableRun) run(ctx context.Context, rate float64) (Step, error) {
	cfg := r.cfg
	if !(rate > 0) {
		return Step{}, ErrBadRate
	}
	r.mu.Lock()
	clear(r.seen)
	r.mu.Unlock()
	r.delivered.Store(0)
	r.inWindow.Store(0)
	r.dups.Store(0)
	lat := new(Histogram)
	r.lat.Store(lat)
	stepNo := r.step.Add(1)
	prefix := r.stepPrefix(stepNo)

	var (
		sent, sentInWindow, acked, failed, late atomic.Int64
		ack                                     Histogram
		errs                                    errTally
	)
	start := cfg.Clock.Now().Add(50 * time.Millisecond)
	from, to := start.Add(cfg.Warmup), start.Add(cfg.Warmup+cfg.Duration)
	r.measureFrom.Store(from.UnixNano())
	r.measureTo.Store(to.UnixNano())
	cpu0, _ := readCPUTimes(cfg.PIDs)
	t0 := time.Now()
	stopProgress := r.env.progress(ctx, func(el time.Duration) string {
		return fmt.Sprintf("durable: rate %.0f/s, %.1fs, %d sent, %d acked, %d delivered, %d failed",
			rate, el.Seconds(), sent.Load(), acked.Load(), r.delivered.Load(), failed.Load())
	})
	runCtx, cancel := context.WithDeadline(ctx, to)
	defer cancel()
	var wg sync.WaitGroup
	perSender := rate / float64(cfg.Senders)
	for i, c := range r.senders {
		offset := 50*time.Millisecond + time.Duration(float64(time.Second)/perSender*float64(i)/float64(cfg.Senders))
		pacer, err := NewPacer(perSender, offset, cfg.Clock)
		if err != nil {
			stopProgress()
			return Step{}, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem := make(chan struct{}, cfg.InFlight)
			var inner sync.WaitGroup
			defer inner.Wait()
			for k := int64(0); ; k++ {
				due, err := pacer.Wait(runCtx)
				if err != nil || !due.Before(to) {
					return
				}
				select {
				case sem <- struct{}{}:
				case <-runCtx.Done():
					return
				}
				if cfg.Clock.Now().Sub(due) > lateThreshold {
					late.Add(1)
				}
				inWin := !due.Before(from)
				sent.Add(1)
				if inWin {
					sentInWindow.Add(1)
				}
				to := r.receivers[(i+int(k))%len(r.receivers)]
				payload := messagePayload(prefix+strconv.Itoa(i)+"-"+strconv.FormatInt(k, 10), due, cfg.Size)
				inner.Add(1)
				go func() {
					defer inner.Done()
					defer func() { <-sem }()
					s := time.Now()
					resp, err := c.Publish(context.WithoutCancel(ctx), &paho.Publish{QoS: 1, Topic: "user/" + to + "/newMessage", Payload: payload})
					d := time.Since(s)
					if err == nil && resp != nil && resp.ReasonCode >= 0x80 {
						err = fmt.Errorf("PUBACK 0x%02x %s", resp.ReasonCode, pubackReason(resp))
					}
					if err != nil {
						failed.Add(1)
						errs.add(err)
						return
					}
					acked.Add(1)
					if inWin {
						ack.Add(d)
					}
				}()
			}
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(cfg.Drain)
	for r.delivered.Load() < acked.Load() && time.Now().Before(deadline) && ctx.Err() == nil {
		_ = (wallClock{}).Sleep(ctx, 10*time.Millisecond)
	}
	elapsed := time.Since(t0)
	cpu1, cpuErr := readCPUTimes(cfg.PIDs)
	stopProgress()
	if err := ctx.Err(); err != nil {
		return Step{}, err
	}
	a := ack.Summary()
	st := Step{
		OfferedRate: rate, Sent: sent.Load(), Expected: acked.Load(), Delivered: r.delivered.Load(),
		Duplicates: r.dups.Load(), Failed: failed.Load(), Late: late.Load(),
		Rate:     float64(ack.Count()) / cfg.Duration.Seconds(),
		SendRate: float64(sentInWindow.Load()) / cfg.Duration.Seconds(),
		Latency:  lat.Summary(), Ack: &a, BarOnAck: true,
	}
	// Every acknowledged message is owed to its receiver.
	st.Lost = max(0, st.Expected-st.Delivered)
	st.Errors = errs.counts()
	if len(cfg.PIDs) > 0 && cpuErr == nil {
		used := cpu1 - cpu0
		if acked.Load() > 0 {
			st.CPUPerMsg = float64(used.Nanoseconds()) / 1e3 / float64(acked.Load())
		}
		st.CPUPercent = 100 * used.Seconds() / elapsed.Seconds()
		st.RSSKB, _ = readRSSSum(cfg.PIDs)
	}
	return st, nil
}

func pubackReason(r *paho.PublishResponse) string {
	if r.Properties != nil {
		return r.Properties.ReasonString
	}
	return ""
}
