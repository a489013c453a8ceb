package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"golang.org/x/sync/errgroup"
)

// LoadConfig configures the latency and throughput modes: senders
// publish durable direct messages (QoS 1 to user/{to}/newMessage) to a
// set of receivers, round robin.
type LoadConfig struct {
	MQTTAddr string
	// MQTTAddrs, when set, replaces MQTTAddr: a cluster's nodes; senders
	// and receivers are spread over them (a sender on the node after its
	// receiver's, as in the durable scenario).
	MQTTAddrs []string
	HTTPURL   string // the node's HTTP API, for its /metrics; "": not read
	PID       int    // server process for CPU and RSS; 0: not measured
	PIDs      []int  // a cluster's processes, summed (replaces PID when set)
	Prefix    string
	Senders   int
	Receivers int
	// Rate is the total offered load in messages per second, paced open
	// loop (latency mode). 0 means closed loop: every sender keeps
	// InFlight publishes outstanding all the time (throughput mode).
	Rate     float64
	InFlight int // outstanding publishes per sender
	Duration time.Duration
	Warmup   time.Duration // messages sent before this are not measured
	Size     int           // message body bytes
	Deliver  bool          // receivers subscribe; measure publish→delivery
	Drain    time.Duration // how long to wait for late deliveries at the end
	Clock    Clock         // paces the latency mode; nil: wall clock
	Client   string        // clientRaw (default) or clientPaho
	// Samples names a file that gets one line per measured PUBACK: the
	// publish's send time (Unix nanoseconds) and its latency (ns). "": none.
	Samples string
}

// LoadResult is the outcome of the latency and throughput modes.
type LoadResult struct {
	Mode            string         `json:"mode"`
	Senders         int            `json:"senders"`
	Receivers       int            `json:"receivers"`
	InFlight        int            `json:"inFlightPerSender"`
	TargetRate      float64        `json:"targetRate,omitempty"`
	DurationSeconds float64        `json:"durationSeconds"`
	WarmupSeconds   float64        `json:"warmupSeconds"`
	BodyBytes       int            `json:"bodyBytes"`
	Sent            int64          `json:"sent"`      // publishes started in the measured window
	Committed       int64          `json:"committed"` // of those, acknowledged with success
	Failed          int64          `json:"failed"`
	Errors          map[string]int `json:"errors,omitempty"`
	Late            int64          `json:"lateSends,omitempty"` // latency mode: sends that started >10ms after their slot
	// Unsent (latency mode) counts the publishes due in the run that
	// were still waiting for a slot --drain after its end.
	Unsent    int64    `json:"unsent,omitempty"`
	Rate      float64  `json:"committedPerSecond"`
	PubAck    Summary  `json:"puback"`
	Delivered int64    `json:"delivered,omitempty"`
	Delivery  *Summary `json:"delivery,omitempty"`
	PerSecond []int64  `json:"committedEachSecond,omitempty"` // committed in each progress interval since the start, warm-up included
	// ProgressSeconds is the length of PerSecond's intervals.
	ProgressSeconds float64 `json:"progressSeconds,omitempty"`
	ServerCPUPerMsg float64 `json:"serverCpuMicrosPerMsg,omitempty"`
	ServerRSSKB     int64   `json:"serverRssKB,omitempty"`
	Client          string  `json:"client"`
	// GenCPUPerMsg is the generator's own CPU time per committed message.
	GenCPUPerMsg float64 `json:"generatorCpuMicrosPerMsg,omitempty"`
	// PUBACKs out of order on a connection and PUBACKs for nothing in
	// flight (raw client only).
	AckOutOfOrder int64   `json:"pubackOutOfOrder,omitempty"`
	StrayAcks     int64   `json:"strayPubacks,omitempty"`
	RaftBatchAvg  float64 `json:"raftBatchAvgCommands,omitempty"` // from the node's /metrics

	pubackSorted   []time.Duration
	deliverySorted []time.Duration
}

func (c *LoadConfig) validate() error {
	switch {
	case c.Senders < 1:
		return fmt.Errorf("%w: --senders must be at least 1", errUsage)
	case c.Receivers < 1:
		return fmt.Errorf("%w: --receivers must be at least 1", errUsage)
	case c.InFlight < 1:
		return fmt.Errorf("%w: --inflight must be at least 1", errUsage)
	case c.Duration <= 0:
		return fmt.Errorf("%w: --duration must be positive", errUsage)
	case c.Warmup < 0 || c.Drain < 0:
		return fmt.Errorf("%w: --warmup and --drain must not be negative", errUsage)
	case c.Rate < 0:
		return fmt.Errorf("%w: --rate must not be negative", errUsage)
	case c.Size < 1 || c.Size > 8000:
		return fmt.Errorf("%w: --size must be 1..8000 bytes (the server's body limit is 8 KiB)", errUsage)
	}
	if c.Drain == 0 {
		c.Drain = 10 * time.Second
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

// addr is the address of the i-th connection of a kind.
func (c *LoadConfig) addr(i int) string {
	if len(c.MQTTAddrs) == 0 {
		return c.MQTTAddr
	}
	return c.MQTTAddrs[i%len(c.MQTTAddrs)]
}

// lateThreshold is how far behind its slot a paced send may start
// before it counts as late (the client, not the server, was too slow).
const lateThreshold = 10 * time.Millisecond

// RunLoad runs the latency mode (cfg.Rate > 0) or the throughput mode.
func RunLoad(ctx context.Context, cfg LoadConfig, env Env) (*LoadResult, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	env = env.withDefaults()
	mode := "throughput"
	if cfg.Rate > 0 {
		mode = "latency"
	}
	if _, err := RaiseNoFile(uint64(cfg.Senders+cfg.Receivers) + 256); err != nil {
		env.warnf("%v", err)
	}
	senders := make([]string, cfg.Senders)
	for i := range senders {
		senders[i] = cfg.Prefix + "s" + strconv.Itoa(i)
	}
	receivers := make([]string, cfg.Receivers)
	for i := range receivers {
		receivers[i] = cfg.Prefix + "r" + strconv.Itoa(i)
	}
	tokens, err := env.tokens(ctx, append(slices.Clone(senders), receivers...))
	if err != nil {
		return nil, err
	}
	// A fresh run ID keeps cids unique across runs: the server would
	// acknowledge a repeated (sender, cid) without storing it again.
	var rb [4]byte
	_, _ = rand.Read(rb[:])
	runID := hex.EncodeToString(rb[:])

	var (
		measureFrom atomic.Int64 // unix nanos; sends before it are warmup
		pubacks     Recorder
		deliveries  Recorder
		delivered   atomic.Int64
		sent        atomic.Int64
		committed   atomic.Int64 // in the measured window
		total       atomic.Int64 // all committed, for the progress line
		failed      atomic.Int64
		late        atomic.Int64
		errs        errTally
	)
	measureFrom.Store(1<<63 - 1)
	inWindow := func(t time.Time) bool { return t.UnixNano() >= measureFrom.Load() }

	var (
		conns  []*paho.Client
		raws   []*rawClient
		pubs   = make([]durablePub, len(senders))
		topics = make([]string, len(receivers))
	)
	for i, r := range receivers {
		topics[i] = "user/" + r + "/newMessage"
	}
	defer func() {
		for _, c := range pubs {
			if c != nil {
				c.close()
			}
		}
		for _, c := range raws {
			c.Disconnect()
		}
		disconnectAll(conns)
	}()
	if cfg.Deliver {
		onMsg := func(p []byte) {
			now := time.Now()
			if t, ok := sentTime(p); ok && inWindow(t) {
				delivered.Add(1)
				deliveries.Add(now.Sub(t))
			}
		}
		for i, r := range receivers {
			if cfg.Client == clientRaw {
				c, err := dialRaw(ctx, rawOptions{Addr: cfg.addr(i), ClientID: r + "/bench", User: r, Password: tokens[r],
					ReceiveMaximum: 1024, Topic: topics[i], QoS: 1, OnMsg: onMsg})
				if err != nil {
					return nil, err
				}
				raws = append(raws, c)
				continue
			}
			c, err := dial(ctx, dialOptions{Addr: cfg.addr(i), User: r, Device: "bench", Token: tokens[r], ReceiveMaximum: 1024,
				OnPublish: func(p *paho.Publish) { onMsg(p.Payload) }})
			if err != nil {
				return nil, err
			}
			conns = append(conns, c)
			if err := subscribe(ctx, c, topics[i]); err != nil {
				return nil, err
			}
		}
	}
	// onAck records the outcome of a publish written at t0. Publishes
	// already on the wire are waited for when the run ends.
	// samples keeps (send time, latency) of every measured PUBACK for
	// cfg.Samples, to line the slow ones up with the server's events.
	samplesOn := cfg.Samples != ""
	var samplesMu sync.Mutex
	var samples [][2]int64
	onAck := func(_ int64, t0 time.Time, err error) {
		lat := time.Since(t0)
		measured := inWindow(t0)
		if measured {
			sent.Add(1)
		}
		if err != nil {
			failed.Add(1)
			errs.add(err)
			return
		}
		total.Add(1)
		if measured {
			committed.Add(1)
			pubacks.Add(lat)
			if samplesOn {
				samplesMu.Lock()
				samples = append(samples, [2]int64{t0.UnixNano(), int64(lat)})
				samplesMu.Unlock()
			}
		}
	}
	{
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(16)
		for i, s := range senders {
			g.Go(func() error {
				c, err := dialDurablePub(gctx, durablePubOptions{Kind: cfg.Client, Addr: cfg.addr(i + 1), User: s, Token: tokens[s],
					Topics: topics, Window: cfg.InFlight, BodySize: cfg.Size, OnAck: onAck})
				if err != nil {
					return err
				}
				c.setPrefix(runID + "-" + strconv.Itoa(i) + "-")
				pubs[i] = c
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return nil, err
		}
	}

	metrics0 := scrapeMetrics(ctx, cfg.HTTPURL, raftMetrics...)
	var cpu0 time.Duration
	if len(cfg.PIDs) == 0 && cfg.PID > 0 {
		cfg.PIDs = []int{cfg.PID}
	}
	if len(cfg.PIDs) > 0 {
		cpu0, _ = readCPUTimes(cfg.PIDs)
	}
	gen0, _ := ReadCPUTime(os.Getpid())
	// publish sends message k of sender i stamped due: the time its
	// slot was scheduled, which its PUBACK and delivery latencies run
	// from (a publish that waited for a free slot counts its wait); a
	// publish that could not be sent counts as failed. It reports false
	// when ctx ended first (nothing sent).
	publish := func(ctx context.Context, i int, k int64, due time.Time, more bool) bool {
		err := pubs[i].publish(ctx, (i+int(k))%len(receivers), k, due, 0, more)
		if err != nil && ctx.Err() != nil {
			return false
		}
		if err != nil {
			onAck(0, time.Now(), err)
		}
		return true
	}

	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	start := time.Now()
	var perSecond []int64
	var lastTotal int64
	stopProgress := env.progress(ctx, func(el time.Duration) string {
		t := total.Load()
		perSecond = append(perSecond, t-lastTotal)
		lastTotal = t
		line := fmt.Sprintf("%s: %.1fs, %d committed (%.0f msg/s now), %d failed", mode, el.Seconds(), t, float64(perSecond[len(perSecond)-1])/env.ProgressEvery.Seconds(), failed.Load())
		if cfg.Deliver {
			line += fmt.Sprintf(", %d delivered", delivered.Load())
		}
		return line
	})
	measureFrom.Store(start.Add(cfg.Warmup).UnixNano())
	endAt := start.Add(cfg.Warmup + cfg.Duration)
	// The closed loop ends at endAt; the paced senders send every slot
	// due before it, late if they are behind, until --drain after it
	// (dropping them would drop the run's worst latencies), and count
	// what is still unsent then.
	closedCtx, cancelDeadline := context.WithDeadline(runCtx, endAt)
	defer cancelDeadline()
	pacedCtx, cancelPaced := context.WithDeadline(runCtx, endAt.Add(cfg.Drain))
	defer cancelPaced()
	var unsent atomic.Int64
	var lastSend latestTime

	var wg sync.WaitGroup
	for i := range senders {
		if cfg.Rate > 0 {
			// Stagger the senders across one interval so that their slots
			// interleave instead of arriving in bursts of len(senders).
			perSender := cfg.Rate / float64(cfg.Senders)
			offset := time.Duration(float64(time.Second) / perSender * float64(i) / float64(cfg.Senders))
			pacer, err := NewPacer(perSender, offset, cfg.Clock)
			if err != nil {
				return nil, err
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer pubs[i].wait(30 * time.Second)
				defer func() { unsent.Add(pacer.DueBefore(endAt)) }()
				// A slot at or after the end is not part of the run.
				for k := int64(0); pacer.Due(pacer.Released()).Before(endAt); k++ {
					due, err := pacer.Wait(pacedCtx)
					if err != nil {
						return
					}
					if cfg.Clock.Now().Sub(due) > lateThreshold && inWindow(due) {
						late.Add(1)
					}
					// The window (--inflight) is the sender's: publish
					// waits for a free slot.
					// Behind its schedule, a sender writes its late
					// publishes together.
					if !publish(pacedCtx, i, k, due, pacer.Behind()) {
						pacer.Unrelease() // not sent: counted as unsent
						return
					}
					if inWindow(due) {
						lastSend.mark(time.Now())
					}
				}
			}()
			continue
		}
		// Closed loop: keep --inflight publishes outstanding; the raw
		// client sends the next ones as PUBACKs free their slots.
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer pubs[i].wait(30 * time.Second)
			pubs[i].closedLoop(closedCtx, func(k int64) int { return (i + int(k)) % len(receivers) })
		}()
	}
	wg.Wait()
	if cfg.Deliver {
		// Deliveries trail the last PUBACKs a little; wait for them, but
		// not forever (a lost delivery shows as delivered < committed).
		deadline := time.Now().Add(cfg.Drain)
		for delivered.Load() < committed.Load() && time.Now().Before(deadline) && ctx.Err() == nil {
			_ = (wallClock{}).Sleep(ctx, 20*time.Millisecond)
		}
	}
	stopProgress()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(perSecond) > 0 {
		perSecond = perSecond[:len(perSecond)-1] // the final line's partial interval
	}

	res := &LoadResult{
		Mode: mode, Senders: cfg.Senders, Receivers: cfg.Receivers, InFlight: cfg.InFlight,
		TargetRate: cfg.Rate, DurationSeconds: cfg.Duration.Seconds(), WarmupSeconds: cfg.Warmup.Seconds(),
		BodyBytes: cfg.Size, Sent: sent.Load(), Committed: committed.Load(), Failed: failed.Load(),
		Late: late.Load(), Unsent: unsent.Load(), Delivered: delivered.Load(), PerSecond: perSecond,
	}
	if len(perSecond) > 0 {
		res.ProgressSeconds = env.ProgressEvery.Seconds()
	}
	res.Client = cfg.Client
	for _, c := range pubs {
		o, st := c.stats()
		res.AckOutOfOrder += o
		res.StrayAcks += st
	}
	if gen1, err := ReadCPUTime(os.Getpid()); err == nil && total.Load() > 0 {
		res.GenCPUPerMsg = float64((gen1 - gen0).Nanoseconds()) / 1e3 / float64(total.Load())
	}
	res.RaftBatchAvg = batchAverage(metrics0, scrapeMetrics(ctx, cfg.HTTPURL, raftMetrics...))
	res.Errors = errs.counts()
	// Latency mode: over the window, or to the last send of a publish due
	// in it when that went out after its end (not credited to the window).
	res.Rate = float64(res.Committed) / lastSend.window(time.Unix(0, measureFrom.Load()), endAt)
	res.pubackSorted = pubacks.Sorted()
	res.PubAck = Summarize(slices.Clone(res.pubackSorted))
	if cfg.Deliver {
		res.deliverySorted = deliveries.Sorted()
		s := Summarize(slices.Clone(res.deliverySorted))
		res.Delivery = &s
	}
	if samplesOn {
		if err := writeSamples(cfg.Samples, samples); err != nil {
			return nil, err
		}
	}
	if len(cfg.PIDs) > 0 {
		if cpu1, err := readCPUTimes(cfg.PIDs); err == nil && total.Load() > 0 {
			res.ServerCPUPerMsg = float64((cpu1 - cpu0).Microseconds()) / float64(total.Load())
		}
		if kb, err := readRSSSum(cfg.PIDs); err == nil {
			res.ServerRSSKB = kb
		}
	}
	return res, nil
}

// writeSamples writes the (send time, latency) pairs, one per line.
func writeSamples(path string, samples [][2]int64) error {
	slices.SortFunc(samples, func(a, b [2]int64) int { return cmp.Compare(a[0], b[0]) })
	var b strings.Builder
	for _, x := range samples {
		fmt.Fprintf(&b, "%d %d\n", x[0], x[1])
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("bench: --samples: %w", err)
	}
	return nil
}

// validPrefix checks that prefix+"s123" is a valid user ID.
func validPrefix(p string) error {
	if len(p) < 1 || len(p) > 20 || p[0] < 'a' || p[0] > 'z' {
		return fmt.Errorf("%w: --prefix %q must be 1-20 characters starting with a lowercase letter", errUsage, p)
	}
	if strings.IndexFunc(p, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-')
	}) >= 0 {
		return fmt.Errorf("%w: --prefix %q may hold only a-z, 0-9, _, . and -", errUsage, p)
	}
	return nil
}

var errUsage = errors.New("usage")
