package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"golang.org/x/sync/errgroup"
)

// FanoutConfig configures the plain-MQTT scenarios, which run against any
// broker (edgechat --dev, plain mochi-mqtt, Mosquitto):
//
//   - dm: Topics pairs of connections, one publisher and one subscriber
//     per topic (Subs = 1): 1:1 messaging at QoS 0 or 1;
//   - rooms: Topics topics with Subs subscribers each and one publisher;
//     deliveries/s = Rate × Subs.
//
// Rate is the total publish rate over all publishers, paced open loop.
type FanoutConfig struct {
	Scenario string   // "dm" or "rooms": names the topics and the result
	Addrs    []string // MQTT addresses; connections are spread over them
	PIDs     []int    // broker processes: CPU and RSS summed over them
	Prefix   string
	Topics   int
	Subs     int // subscribers per topic
	QoS      byte
	Size     int // payload bytes (at least the 24-byte header)
	InFlight int // QoS 1: outstanding publishes per publisher
	Duration time.Duration
	Warmup   time.Duration
	Drain    time.Duration // after the last send, how long to wait for deliveries
	Clock    Clock
}

// Step is the outcome of one fixed-rate period of a scenario: one point
// of a sweep, or the whole of a fixed-rate run.
type Step struct {
	OfferedRate float64 `json:"offeredRate"` // publishes/s asked for
	// Expected = sent × subscribers per message; Delivered counts each
	// (subscriber, message) once; Duplicates the extra copies.
	Sent       int64 `json:"sent"`
	Expected   int64 `json:"expected"`
	Delivered  int64 `json:"delivered"`
	Lost       int64 `json:"lost"`
	Duplicates int64 `json:"duplicates"`
	Failed     int64 `json:"failed,omitempty"` // publishes refused or timed out (QoS 1)
	Late       int64 `json:"lateSends,omitempty"`
	// Unsent counts the publishes due in the step that the generator
	// had still not sent --drain after its end (behind its schedule,
	// waiting for an --inflight slot): a step with any fails the bar,
	// since their latency is missing from its percentiles.
	Unsent   int64    `json:"unsent,omitempty"`
	Rate     float64  `json:"deliveredPerSecond"` // in the measured window
	SendRate float64  `json:"sentPerSecond"`
	Latency  Summary  `json:"latency"`       // scheduled send → delivery
	Ack      *Summary `json:"ack,omitempty"` // publish → PUBACK (QoS 1)
	// BarOnAck: the sweep's p99 bar applies to Ack (durable: a PUBACK
	// means committed), not to Latency.
	BarOnAck bool `json:"barOnAck,omitempty"`
	// CPUPerMsg is the broker's CPU time per delivery (plain MQTT) or per
	// committed message (durable), summed over its processes.
	CPUPerMsg  float64        `json:"serverCpuMicrosPerMsg,omitempty"`
	CPUPercent float64        `json:"serverCpuPercent,omitempty"` // of one core, summed over PIDs
	RSSKB      int64          `json:"serverRssKB,omitempty"`
	Errors     map[string]int `json:"errors,omitempty"`
	// GenCPUPerMsg is the generator's (this process's) CPU time per
	// committed message (durable) or delivery: what the load itself cost.
	GenCPUPerMsg float64 `json:"generatorCpuMicrosPerMsg,omitempty"`
	// Durable: deliveries that came after a later message of the same
	// sender to the same receiver; PUBACKs that came before the PUBACK of
	// an earlier publish on the connection (MQTT requires them in order),
	// and PUBACKs for no publish in flight (the raw client checks both).
	Reordered     int64 `json:"reordered,omitempty"`
	AckOutOfOrder int64 `json:"pubackOutOfOrder,omitempty"`
	StrayAcks     int64 `json:"strayPubacks,omitempty"`
}

// OK reports whether the step met the bar: every message delivered once
// and p99 at most p99Max.
func (s Step) OK(p99Max time.Duration) bool {
	bar := s.Latency
	if s.BarOnAck && s.Ack != nil {
		bar = *s.Ack
	}
	return s.Sent > 0 && s.Lost == 0 && s.Failed == 0 && s.Unsent == 0 && bar.Count > 0 && bar.P99 <= ms(p99Max)
}

// BarP99 is the p99 the sweep's bar applies to.
func (s Step) BarP99() float64 {
	if s.BarOnAck && s.Ack != nil {
		return s.Ack.P99
	}
	return s.Latency.P99
}

func (c *FanoutConfig) validate() error {
	switch {
	case len(c.Addrs) == 0:
		return fmt.Errorf("%w: no MQTT address", errUsage)
	case c.Topics < 1 || c.Subs < 1:
		return fmt.Errorf("%w: --topics/--pairs and --subs must be at least 1", errUsage)
	case c.QoS > 1:
		return fmt.Errorf("%w: --qos must be 0 or 1", errUsage)
	case c.Duration <= 0 || c.Warmup < 0 || c.Drain < 0:
		return fmt.Errorf("%w: --duration must be positive, --warmup and --drain not negative", errUsage)
	case c.Size > 256*1024:
		return fmt.Errorf("%w: --size at most 256 KiB", errUsage)
	}
	c.Size = max(c.Size, fanoutHeader)
	if c.InFlight < 1 {
		c.InFlight = 16
	}
	if c.Drain == 0 {
		c.Drain = 3 * time.Second
	}
	if c.Clock == nil {
		c.Clock = wallClock{}
	}
	return validPrefix(c.Prefix)
}

// fanoutHeader is the binary header of every plain-MQTT payload:
// scheduled send time (unix ns), step number, topic, sequence number.
const fanoutHeader = 24

func encodeFanout(b []byte, due time.Time, step, topic uint32, seq uint64) {
	binary.BigEndian.PutUint64(b[0:], uint64(due.UnixNano()))
	binary.BigEndian.PutUint32(b[8:], step)
	binary.BigEndian.PutUint32(b[12:], topic)
	binary.BigEndian.PutUint64(b[16:], seq)
}

func decodeFanout(b []byte) (due time.Time, step, topic uint32, seq uint64, ok bool) {
	if len(b) < fanoutHeader {
		return time.Time{}, 0, 0, 0, false
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(b[0:]))), binary.BigEndian.Uint32(b[8:]),
		binary.BigEndian.Uint32(b[12:]), binary.BigEndian.Uint64(b[16:]), true
}

// seqSet records which sequence numbers one subscriber has seen, to
// tell deliveries from duplicates.
type seqSet struct {
	mu   sync.Mutex
	bits []uint64
}

// add marks seq and reports whether it was new.
func (s *seqSet) add(seq uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := int(seq / 64)
	if w >= len(s.bits) {
		s.bits = append(s.bits, make([]uint64, w-len(s.bits)+1+len(s.bits)/2)...)
	}
	m := uint64(1) << (seq % 64)
	if s.bits[w]&m != 0 {
		return false
	}
	s.bits[w] |= m
	return true
}

func (s *seqSet) reset() {
	s.mu.Lock()
	clear(s.bits)
	s.mu.Unlock()
}

// fanoutRun holds the connections of a scenario across its steps, so
// that a sweep connects once.
type fanoutRun struct {
	cfg  FanoutConfig
	env  Env
	pubs []*paho.Client
	subs []*rawClient // lean subscribers: the generator must not be the limit
	seen []*seqSet    // per subscriber

	step        atomic.Uint32
	measureFrom atomic.Int64 // unix ns of the first measured slot
	measureTo   atomic.Int64
	lat         atomic.Pointer[Histogram]
	delivered   atomic.Int64 // unique, whole step
	inWindow    atomic.Int64 // unique, sent in the measured window
	dups        atomic.Int64
}

func (r *fanoutRun) topic(i int) string {
	if r.cfg.Scenario == "dm" {
		return r.cfg.Prefix + "/dm/" + strconv.Itoa(i)
	}
	return r.cfg.Prefix + "/room/" + strconv.Itoa(i)
}

// newFanoutRun connects every subscriber (and subscribes) and every
// publisher.
func newFanoutRun(ctx context.Context, cfg FanoutConfig, env Env) (*fanoutRun, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	env = env.withDefaults()
	r := &fanoutRun{cfg: cfg, env: env}
	r.lat.Store(new(Histogram))
	nSubs := cfg.Topics * cfg.Subs
	if _, err := RaiseNoFile(uint64(nSubs+cfg.Topics) + 256); err != nil {
		env.warnf("%v", err)
	}
	r.subs = make([]*rawClient, nSubs)
	r.seen = make([]*seqSet, nSubs)
	r.pubs = make([]*paho.Client, cfg.Topics)
	var opened atomic.Int64
	stop := env.progress(ctx, func(time.Duration) string {
		return fmt.Sprintf("%s: %d/%d connections open", cfg.Scenario, opened.Load(), nSubs+cfg.Topics)
	})
	defer stop()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i := range nSubs {
		r.seen[i] = new(seqSet)
		g.Go(func() error {
			seen := r.seen[i]
			user := cfg.Prefix + "sub" + strconv.Itoa(i)
			c, err := dialRawSub(gctx, cfg.Addrs[i%len(cfg.Addrs)], user+"-b", user, r.topic(i/cfg.Subs), cfg.QoS,
				func(p []byte) { r.onMessage(seen, p) })
			if err != nil {
				return err
			}
			r.subs[i] = c
			opened.Add(1)
			return nil
		})
	}
	for i := range cfg.Topics {
		g.Go(func() error {
			// Publishers go to the next address from their subscribers',
			// so that a cluster carries messages between nodes.
			c, err := dial(gctx, dialOptions{
				Addr: cfg.Addrs[(i*cfg.Subs+1)%len(cfg.Addrs)], User: cfg.Prefix + "pub" + strconv.Itoa(i), Device: "b",
				ReceiveMaximum: 64,
			})
			if err != nil {
				return err
			}
			r.pubs[i] = c
			opened.Add(1)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

func (r *fanoutRun) close() {
	disconnectAll(r.pubs)
	var g errgroup.Group
	g.SetLimit(32)
	for _, c := range r.subs {
		if c != nil {
			g.Go(func() error { c.Disconnect(); return nil })
		}
	}
	_ = g.Wait()
}

// onMessage runs on a subscriber's read goroutine: it must stay cheap.
func (r *fanoutRun) onMessage(seen *seqSet, payload []byte) {
	now := time.Now()
	due, step, _, seq, ok := decodeFanout(payload)
	if !ok || step != r.step.Load() {
		return // a straggler of an earlier step
	}
	if !seen.add(seq) {
		r.dups.Add(1)
		return
	}
	r.delivered.Add(1)
	if d := due.UnixNano(); d >= r.measureFrom.Load() && d < r.measureTo.Load() {
		r.inWindow.Add(1)
		r.lat.Load().Add(now.Sub(due))
	}
}

// run offers rate publishes/s for warmup+duration and waits for the
// deliveries.
func (r *fanoutRun) run(ctx context.Context, rate float64) (Step, error) {
	cfg := r.cfg
	if !(rate > 0) {
		return Step{}, ErrBadRate
	}
	for _, s := range r.seen {
		s.reset()
	}
	r.delivered.Store(0)
	r.inWindow.Store(0)
	r.dups.Store(0)
	lat := new(Histogram)
	r.lat.Store(lat)
	stepNo := r.step.Add(1)

	var (
		sent, sentInWindow, failed, late atomic.Int64
		ack                              Histogram
		errs                             errTally
	)
	start := cfg.Clock.Now().Add(50 * time.Millisecond)
	from, to := start.Add(cfg.Warmup), start.Add(cfg.Warmup+cfg.Duration)
	r.measureFrom.Store(from.UnixNano())
	r.measureTo.Store(to.UnixNano())
	cpu0, _ := readCPUTimes(cfg.PIDs)
	t0 := time.Now()

	perTopic := cfg.Subs
	expectedPer := int64(perTopic)
	stopProgress := r.env.progress(ctx, func(el time.Duration) string {
		return fmt.Sprintf("%s: rate %.0f/s, %.1fs, %d sent, %d delivered (%d expected), %d dup, %d failed",
			cfg.Scenario, rate, el.Seconds(), sent.Load(), r.delivered.Load(), sent.Load()*expectedPer, r.dups.Load(), failed.Load())
	})

	// Every slot due before the step's end is sent, late if the
	// publisher is behind; it gives up --drain after the end (see
	// durableRun.run).
	runCtx, cancel := context.WithDeadline(ctx, to.Add(cfg.Drain))
	defer cancel()
	var unsent atomic.Int64
	var lastSend latestTime
	var wg sync.WaitGroup
	perPub := rate / float64(cfg.Topics)
	for i, c := range r.pubs {
		offset := 50*time.Millisecond + time.Duration(float64(time.Second)/perPub*float64(i)/float64(cfg.Topics))
		pacer, err := NewPacer(perPub, offset, cfg.Clock)
		if err != nil {
			stopProgress()
			return Step{}, err
		}
		topic := r.topic(i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem := make(chan struct{}, cfg.InFlight)
			var inner sync.WaitGroup
			defer inner.Wait()
			defer func() { unsent.Add(pacer.DueBefore(to)) }()
			for seq := uint64(0); pacer.Due(pacer.Released()).Before(to); seq++ {
				due, err := pacer.Wait(runCtx)
				if err != nil {
					return
				}
				if cfg.Clock.Now().Sub(due) > lateThreshold {
					late.Add(1)
				}
				payload := make([]byte, cfg.Size)
				encodeFanout(payload, due, stepNo, uint32(i), seq)
				inWin := !due.Before(from)
				pub := &paho.Publish{QoS: cfg.QoS, Topic: topic, Payload: payload}
				record := func(err error, d time.Duration) {
					if err != nil {
						failed.Add(1)
						errs.add(err)
						return
					}
					if inWin && cfg.QoS > 0 {
						ack.Add(d)
					}
				}
				sent.Add(1)
				if inWin {
					sentInWindow.Add(1)
				}
				if cfg.QoS == 0 {
					if inWin {
						lastSend.mark(time.Now())
					}
					_, err := c.Publish(ctx, pub)
					record(err, 0)
					continue
				}
				select {
				case sem <- struct{}{}:
				case <-runCtx.Done():
					sent.Add(-1)
					if inWin {
						sentInWindow.Add(-1)
					}
					pacer.Unrelease() // not sent: counted as unsent
					return
				}
				if inWin {
					lastSend.mark(time.Now())
				}
				inner.Add(1)
				go func() {
					defer inner.Done()
					defer func() { <-sem }()
					_, err := c.Publish(context.WithoutCancel(ctx), pub)
					// From the slot, not from this write: a publish that
					// waited for a free one counts its wait.
					record(err, time.Since(due))
				}()
			}
		}()
	}
	wg.Wait()
	measured := lastSend.window(from, to)
	// Wait for the deliveries still on their way, not forever.
	deadline := time.Now().Add(cfg.Drain)
	want := func() int64 { return (sent.Load() - failed.Load()) * expectedPer }
	for r.delivered.Load() < want() && time.Now().Before(deadline) && ctx.Err() == nil {
		_ = (wallClock{}).Sleep(ctx, 10*time.Millisecond)
	}
	elapsed := time.Since(t0)
	cpu1, cpuErr := readCPUTimes(cfg.PIDs)
	stopProgress()
	if err := ctx.Err(); err != nil {
		return Step{}, err
	}
	st := Step{
		OfferedRate: rate, Sent: sent.Load(), Expected: sent.Load() * expectedPer,
		Delivered: r.delivered.Load(), Duplicates: r.dups.Load(), Failed: failed.Load(), Late: late.Load(), Unsent: unsent.Load(),
		Rate:     float64(r.inWindow.Load()) / measured,
		SendRate: float64(sentInWindow.Load()) / measured,
		Latency:  lat.Summary(),
	}
	// QoS 1 publishes that failed may still have been delivered; only
	// what was acknowledged counts as owed.
	st.Lost = max(0, (st.Sent-st.Failed)*expectedPer-st.Delivered)
	if cfg.QoS > 0 {
		s := ack.Summary()
		st.Ack = &s
	}
	st.Errors = errs.counts()
	if len(cfg.PIDs) > 0 && cpuErr == nil {
		used := cpu1 - cpu0
		if st.Delivered > 0 {
			st.CPUPerMsg = float64(used.Nanoseconds()) / 1e3 / float64(st.Delivered)
		}
		st.CPUPercent = 100 * used.Seconds() / elapsed.Seconds()
		st.RSSKB, _ = readRSSSum(cfg.PIDs)
	}
	return st, nil
}

// subscribeQoS subscribes c to topic at qos and checks the grant.
func subscribeQoS(ctx context.Context, c *paho.Client, topic string, qos byte) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: qos}}})
	if err != nil {
		return fmt.Errorf("subscribing to %s: %w", topic, err)
	}
	if len(sa.Reasons) != 1 || sa.Reasons[0] >= 0x80 {
		return fmt.Errorf("subscribing to %s: %w: reasons %v", topic, errRefused, sa.Reasons)
	}
	return nil
}

// readCPUTimes sums the CPU time of pids.
func readCPUTimes(pids []int) (time.Duration, error) {
	var sum time.Duration
	for _, p := range pids {
		d, err := ReadCPUTime(p)
		if err != nil {
			return 0, err
		}
		sum += d
	}
	return sum, nil
}

// readRSSSum sums the RSS of pids in KB.
func readRSSSum(pids []int) (int64, error) {
	var sum int64
	for _, p := range pids {
		kb, err := ReadRSS(p)
		if err != nil {
			return 0, err
		}
		sum += kb
	}
	return sum, nil
}

// latestTime keeps the latest of the times marked, from any goroutine.
type latestTime struct{ ns atomic.Int64 }

func (l *latestTime) mark(t time.Time) {
	v := t.UnixNano()
	for {
		cur := l.ns.Load()
		if v <= cur || l.ns.CompareAndSwap(cur, v) {
			return
		}
	}
}

// window is the length in seconds of a step's measured window [from,
// to): longer when the last publish due in it went out after its end (a
// sender behind its schedule), so that what the window's messages
// achieved per second is not credited with the time past its end.
func (l *latestTime) window(from, to time.Time) float64 {
	end := to
	if v := l.ns.Load(); v != 0 && time.Unix(0, v).After(end) {
		end = time.Unix(0, v)
	}
	return end.Sub(from).Seconds()
}
