package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"strconv"
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
	// Client is clientRaw (default) or clientPaho: the MQTT client of the
	// senders and receivers.
	Client string
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
	if c.Client == "" {
		c.Client = clientRaw
	}
	if err := validClient(c.Client); err != nil {
		return err
	}
	return validPrefix(c.Prefix)
}

// durableRun keeps the connections of the durable scenario across steps.
type durableRun struct {
	cfg       DurableConfig
	env       Env
	runID     string
	senders   []durablePub
	receivers []string
	recv      []*durableRecv
	pahoConns []*paho.Client // receivers with --client paho
	rawConns  []*rawClient   // receivers with the raw client

	step        uint32 // steps run one after another
	cur         atomic.Pointer[durableStep]
	prefix      atomic.Pointer[[]byte] // cid prefix of the current step
	measureFrom atomic.Int64
	measureTo   atomic.Int64
	lat         atomic.Pointer[Histogram]
	seen        []*seqSet // per sender: the k delivered in this step
	delivered   atomic.Int64
	inWindow    atomic.Int64
	dups        atomic.Int64
	reordered   atomic.Int64
}

// durableRecv is one receiver's view: the last k delivered from each
// sender, to see whether a sender's messages arrive in the order sent.
type durableRecv struct {
	mu   sync.Mutex
	last []int64
}

// durableStep counts the publishes of one step; the senders' ackFunc
// reaches it through durableRun.cur.
type durableStep struct {
	acked, failed atomic.Int64
	ack           Histogram
	errs          errTally
}

func newDurableRun(ctx context.Context, cfg DurableConfig, env Env) (*durableRun, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	env = env.withDefaults()
	if _, err := RaiseNoFile(uint64(cfg.Senders+cfg.Receivers) + 256); err != nil {
		env.warnf("%v", err)
	}
	r := &durableRun{cfg: cfg, env: env}
	r.lat.Store(new(Histogram))
	r.cur.Store(new(durableStep))
	r.prefix.Store(new([]byte))
	var rb [4]byte
	_, _ = rand.Read(rb[:])
	// A fresh run ID keeps cids unique across runs: the server would
	// acknowledge a repeated (sender, cid) without storing it again.
	r.runID = hex.EncodeToString(rb[:])
	senders := make([]string, cfg.Senders)
	r.seen = make([]*seqSet, cfg.Senders)
	for i := range senders {
		senders[i] = cfg.Prefix + "s" + strconv.Itoa(i)
		r.seen[i] = new(seqSet)
	}
	r.receivers = make([]string, cfg.Receivers)
	topics := make([]string, cfg.Receivers)
	r.recv = make([]*durableRecv, cfg.Receivers)
	for i := range r.receivers {
		r.receivers[i] = cfg.Prefix + "r" + strconv.Itoa(i)
		topics[i] = "user/" + r.receivers[i] + "/newMessage"
		r.recv[i] = &durableRecv{last: make([]int64, cfg.Senders)}
	}
	tokens, err := env.tokens(ctx, append(slices.Clone(senders), r.receivers...))
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i, u := range r.receivers {
		rcv := r.recv[i]
		addr := cfg.Addrs[i%len(cfg.Addrs)]
		g.Go(func() error {
			if cfg.Client == clientRaw {
				c, err := dialRaw(gctx, rawOptions{Addr: addr, ClientID: u + "/bench", User: u, Password: tokens[u],
					ReceiveMaximum: 1024, Topic: topics[i], QoS: 1, OnMsg: func(p []byte) { r.onMessage(rcv, p) }})
				if err != nil {
					return err
				}
				mu.Lock()
				r.rawConns = append(r.rawConns, c)
				mu.Unlock()
				return nil
			}
			c, err := dial(gctx, dialOptions{Addr: addr, User: u, Device: "bench", Token: tokens[u],
				ReceiveMaximum: 1024, OnPublish: func(p *paho.Publish) { r.onMessage(rcv, p.Payload) }})
			if err != nil {
				return err
			}
			mu.Lock()
			r.pahoConns = append(r.pahoConns, c)
			mu.Unlock()
			return subscribe(gctx, c, topics[i])
		})
	}
	r.senders = make([]durablePub, len(senders))
	for i, u := range senders {
		g.Go(func() error {
			c, err := dialDurablePub(gctx, durablePubOptions{Kind: cfg.Client, Addr: cfg.Addrs[(i+1)%len(cfg.Addrs)], User: u, Token: tokens[u],
				Topics: topics, Window: cfg.InFlight, BodySize: cfg.Size, OnAck: r.onAck})
			if err != nil {
				return err
			}
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

func (r *durableRun) close() {
	var g errgroup.Group
	g.SetLimit(32)
	for _, c := range r.senders {
		if c != nil {
			g.Go(func() error { c.close(); return nil })
		}
	}
	for _, c := range r.rawConns {
		g.Go(func() error { c.Disconnect(); return nil })
	}
	_ = g.Wait()
	disconnectAll(r.pahoConns)
}

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

// onAck records the outcome of a publish; tag 1 marks a publish due in
// the measured window.
func (r *durableRun) onAck(tag int64, sent time.Time, err error) {
	st := r.cur.Load()
	if err != nil {
		st.failed.Add(1)
		st.errs.add(err)
		return
	}
	st.acked.Add(1)
	if tag == 1 {
		st.ack.Add(time.Since(sent))
	}
}

// onMessage runs on a receiver's reading goroutine for each delivery:
// no allocation, no map.
func (r *durableRun) onMessage(rcv *durableRecv, payload []byte) {
	now := time.Now()
	cid, ok := envelopeCID(payload)
	prefix := *r.prefix.Load()
	if !ok || !bytes.HasPrefix(cid, prefix) {
		return
	}
	i, k, ok := parseSenderSeq(cid[len(prefix):])
	if !ok || i >= len(r.seen) {
		return
	}
	if !r.seen[i].add(uint64(k)) {
		r.dups.Add(1)
		return
	}
	r.delivered.Add(1)
	rcv.mu.Lock()
	if k < rcv.last[i] {
		r.reordered.Add(1)
	} else {
		rcv.last[i] = k
	}
	rcv.mu.Unlock()
	if t, ok := sentTime(payload); ok && t.UnixNano() >= r.measureFrom.Load() && t.UnixNano() < r.measureTo.Load() {
		r.inWindow.Add(1)
		r.lat.Load().Add(now.Sub(t))
	}
}

// run offers rate messages/s; the bar of a sweep is the PUBACK p99 (a
// PUBACK means committed: that is the durable figure).
func (r *durableRun) run(ctx context.Context, rate float64) (Step, error) {
	cfg := r.cfg
	if !(rate > 0) {
		return Step{}, ErrBadRate
	}
	for _, s := range r.seen {
		s.reset()
	}
	for _, rcv := range r.recv {
		rcv.mu.Lock()
		for i := range rcv.last {
			rcv.last[i] = -1
		}
		rcv.mu.Unlock()
	}
	r.delivered.Store(0)
	r.inWindow.Store(0)
	r.dups.Store(0)
	r.reordered.Store(0)
	lat := new(Histogram)
	r.lat.Store(lat)
	st := new(durableStep)
	r.cur.Store(st)
	r.step++
	prefix := r.stepPrefix(r.step)
	pb := []byte(prefix)
	r.prefix.Store(&pb)
	var ooo0, stray0 int64
	for i, c := range r.senders {
		c.setPrefix(prefix + strconv.Itoa(i) + "-")
		o, s := c.stats()
		ooo0, stray0 = ooo0+o, stray0+s
	}

	var sent, sentInWindow, late atomic.Int64
	start := cfg.Clock.Now().Add(50 * time.Millisecond)
	from, to := start.Add(cfg.Warmup), start.Add(cfg.Warmup+cfg.Duration)
	r.measureFrom.Store(from.UnixNano())
	r.measureTo.Store(to.UnixNano())
	cpu0, _ := readCPUTimes(cfg.PIDs)
	gen0, _ := ReadCPUTime(os.Getpid())
	t0 := time.Now()
	stopProgress := r.env.progress(ctx, func(el time.Duration) string {
		return fmt.Sprintf("durable: rate %.0f/s, %.1fs, %d sent, %d acked, %d delivered, %d failed",
			rate, el.Seconds(), sent.Load(), st.acked.Load(), r.delivered.Load(), st.failed.Load())
	})
	// Every slot due before the step's end is sent, late if the sender
	// is behind (a publish that waited for a slot is timed from its due
	// time): dropping them when the time is up would drop the step's
	// worst latencies. The senders give up --drain after the end; what
	// is still unsent then is counted as such and fails the step.
	runCtx, cancel := context.WithDeadline(ctx, to.Add(cfg.Drain))
	defer cancel()
	var unsent atomic.Int64
	var lastSend latestTime
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
			// Every publish sent is acknowledged or failed before the
			// step is counted.
			defer c.wait(30 * time.Second)
			defer func() { unsent.Add(pacer.DueBefore(to)) }()
			for k := int64(0); pacer.Due(pacer.Released()).Before(to); k++ {
				due, err := pacer.Wait(runCtx)
				if err != nil {
					return
				}
				if cfg.Clock.Now().Sub(due) > lateThreshold {
					late.Add(1)
				}
				inWin := !due.Before(from)
				var tag int64
				if inWin {
					tag = 1
				}
				// A sender behind its schedule writes its late publishes
				// together (the next publish follows at once; the buffer
				// goes out before any wait).
				if err := c.publish(runCtx, (i+int(k))%len(r.receivers), k, due, tag, pacer.Behind()); err != nil {
					if runCtx.Err() != nil {
						pacer.Unrelease() // not sent: counted as unsent
						return            // --drain after the end, still waiting for a slot
					}
					st.failed.Add(1)
					st.errs.add(err)
				}
				sent.Add(1)
				if inWin {
					sentInWindow.Add(1)
					lastSend.mark(time.Now())
				}
			}
		}()
	}
	wg.Wait()
	measured := lastSend.window(from, to)
	deadline := time.Now().Add(cfg.Drain)
	for r.delivered.Load() < st.acked.Load() && time.Now().Before(deadline) && ctx.Err() == nil {
		_ = (wallClock{}).Sleep(ctx, 10*time.Millisecond)
	}
	elapsed := time.Since(t0)
	cpu1, cpuErr := readCPUTimes(cfg.PIDs)
	gen1, genErr := ReadCPUTime(os.Getpid())
	stopProgress()
	if err := ctx.Err(); err != nil {
		return Step{}, err
	}
	var ooo, stray int64
	for _, c := range r.senders {
		o, s := c.stats()
		ooo, stray = ooo+o, stray+s
	}
	a := st.ack.Summary()
	acked := st.acked.Load()
	out := Step{
		OfferedRate: rate, Sent: sent.Load(), Expected: acked, Delivered: r.delivered.Load(),
		Duplicates: r.dups.Load(), Failed: st.failed.Load(), Late: late.Load(), Unsent: unsent.Load(),
		Rate:     float64(st.ack.Count()) / measured,
		SendRate: float64(sentInWindow.Load()) / measured,
		Latency:  lat.Summary(), Ack: &a, BarOnAck: true,
		Reordered: r.reordered.Load(), AckOutOfOrder: ooo - ooo0, StrayAcks: stray - stray0,
	}
	// Every acknowledged message is owed to its receiver.
	out.Lost = max(0, out.Expected-out.Delivered)
	out.Errors = st.errs.counts()
	if genErr == nil && acked > 0 {
		out.GenCPUPerMsg = float64((gen1 - gen0).Nanoseconds()) / 1e3 / float64(acked)
	}
	if len(cfg.PIDs) > 0 && cpuErr == nil {
		used := cpu1 - cpu0
		if acked > 0 {
			out.CPUPerMsg = float64(used.Nanoseconds()) / 1e3 / float64(acked)
		}
		out.CPUPercent = 100 * used.Seconds() / elapsed.Seconds()
		out.RSSKB, _ = readRSSSum(cfg.PIDs)
	}
	return out, nil
}
