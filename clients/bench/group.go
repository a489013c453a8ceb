package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"golang.org/x/sync/errgroup"
)

// GroupConfig configures the big-group scenario: one group of Members
// users (the owner included) created through the HTTP API, Online of
// them connected over MQTT and subscribed to the group's topic, and the
// owner sending Messages group messages at Rate per second. The figure
// is the time from a message's send to its delivery at the LAST online
// member: a group message is only read by everyone once it reached the
// slowest subscriber.
type GroupConfig struct {
	Addrs    []string // MQTT addresses; members spread over them, the owner on the first
	HTTPURL  string
	PIDs     []int
	Prefix   string
	Members  int
	Online   int
	Messages int
	Rate     float64
	QoS      byte // of the members' subscriptions
	Size     int  // body bytes
	Drain    time.Duration
	Clock    Clock
}

func (c *GroupConfig) validate() error {
	switch {
	case len(c.Addrs) == 0:
		return fmt.Errorf("%w: no MQTT address", errUsage)
	case c.Members < 2 || c.Online < 1 || c.Online > c.Members-1:
		return fmt.Errorf("%w: --members must be at least 2 and --online 1..members-1 (the owner sends)", errUsage)
	case c.Messages < 1 || !(c.Rate > 0):
		return fmt.Errorf("%w: --messages and --rate must be positive", errUsage)
	case c.QoS > 1:
		return fmt.Errorf("%w: --qos must be 0 or 1", errUsage)
	case c.Size < 1 || c.Size > 8000:
		return fmt.Errorf("%w: --size must be 1..8000 bytes", errUsage)
	}
	if c.Drain <= 0 {
		c.Drain = 30 * time.Second
	}
	if c.Clock == nil {
		c.Clock = wallClock{}
	}
	return validPrefix(c.Prefix)
}

// GroupResult is the outcome of the group scenario.
type GroupResult struct {
	Scenario string  `json:"scenario"` // "group"
	Target   string  `json:"target,omitempty"`
	Nodes    int     `json:"nodes"`
	Members  int     `json:"members"`
	Online   int     `json:"online"`
	Messages int     `json:"messages"`
	Rate     float64 `json:"rate"`
	QoS      int     `json:"qos"`
	GroupID  string  `json:"groupId"`
	// Setup: accounts (argon2 registrations the first time), the group
	// and its members, the connections.
	SetupSeconds float64 `json:"setupSeconds"`
	Sent         int64   `json:"sent"`
	Acked        int64   `json:"acked"`
	Failed       int64   `json:"failed,omitempty"`
	Expected     int64   `json:"expected"` // acked × online
	Delivered    int64   `json:"delivered"`
	Lost         int64   `json:"lost"`
	Duplicates   int64   `json:"duplicates"`
	// LastDelivery: per message, send → the last online member's
	// delivery (messages that reached everyone); FirstDelivery the first
	// member's; Delivery every delivery.
	LastDelivery  Summary `json:"lastDelivery"`
	FirstDelivery Summary `json:"firstDelivery"`
	// PerMessage: each sent message's first and last delivery, to tell
	// a slow commit (late first delivery) from a slow fan-out (late last
	// one) in the tail.
	PerMessage []GroupMessage `json:"perMessage,omitempty"`
	Delivery   Summary        `json:"delivery"`
	Ack        Summary        `json:"puback"`
	// CPU: the servers' (summed) per group message and per delivery, the
	// generator's per delivery.
	ServerCPUPerMsg      float64        `json:"serverCpuMicrosPerMsg,omitempty"`
	ServerCPUPerDelivery float64        `json:"serverCpuMicrosPerDelivery,omitempty"`
	ServerCPUPercent     float64        `json:"serverCpuPercent,omitempty"`
	GenCPUPerDelivery    float64        `json:"generatorCpuMicrosPerDelivery,omitempty"`
	ServerRSSKB          int64          `json:"serverRssKB,omitempty"`
	Errors               map[string]int `json:"errors,omitempty"`
}

// GroupMessage is one sent group message's deliveries: send → first and
// → last delivery (ms; 0 when none), and how many online members got it.
type GroupMessage struct {
	SentUnixMs float64 `json:"sentUnixMs"`
	FirstMs    float64 `json:"firstMs"`
	LastMs     float64 `json:"lastMs"`
	Delivered  int64   `json:"delivered"`
}

// RunGroup runs the group scenario.
func RunGroup(ctx context.Context, cfg GroupConfig, env Env) (*GroupResult, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	env = env.withDefaults()
	if _, err := RaiseNoFile(uint64(cfg.Online) + 256); err != nil {
		env.warnf("%v", err)
	}
	t0 := time.Now()
	owner, members := groupUsers(cfg.Prefix, cfg.Members)
	tokens, err := env.tokens(ctx, append([]string{owner}, members...))
	if err != nil {
		return nil, err
	}
	gid, err := createGroup(ctx, env, cfg.HTTPURL, tokens[owner], members)
	if err != nil {
		return nil, err
	}
	topic := "group/" + gid + "/newMessage"

	var rb [4]byte
	_, _ = rand.Read(rb[:])
	prefix := []byte(hex.EncodeToString(rb[:]) + "-")
	var (
		lastAt     = make([]atomic.Int64, cfg.Messages) // unix ns of the latest delivery of message k
		firstAt    = make([]atomic.Int64, cfg.Messages)
		count      = make([]atomic.Int64, cfg.Messages)
		sentAt     = make([]atomic.Int64, cfg.Messages)
		delivered  atomic.Int64
		dups       atomic.Int64
		deliveries Recorder
		seen       = make([]*seqSet, cfg.Online)
	)
	onMsg := func(member int, p []byte) {
		now := time.Now().UnixNano()
		cid, ok := envelopeCID(p)
		if !ok || !bytes.HasPrefix(cid, prefix) {
			return
		}
		k, n := parseDigits(cid[len(prefix):])
		if n == 0 || n != len(cid)-len(prefix) || k >= int64(cfg.Messages) {
			return
		}
		if !seen[member].add(uint64(k)) {
			dups.Add(1)
			return
		}
		delivered.Add(1)
		count[k].Add(1)
		for {
			l := lastAt[k].Load()
			if now <= l || lastAt[k].CompareAndSwap(l, now) {
				break
			}
		}
		firstAt[k].CompareAndSwap(0, now)
		if t, ok := sentTime(p); ok {
			deliveries.Add(time.Duration(now - t.UnixNano()))
		}
	}

	// The online members: raw clients (the generator reads 1,000
	// deliveries per message).
	subs := make([]*rawClient, cfg.Online)
	defer func() {
		var g errgroup.Group
		g.SetLimit(32)
		for _, c := range subs {
			if c != nil {
				g.Go(func() error { c.Disconnect(); return nil })
			}
		}
		_ = g.Wait()
	}()
	var opened atomic.Int64
	stop := env.progress(ctx, func(time.Duration) string {
		return fmt.Sprintf("group: %d/%d members online", opened.Load(), cfg.Online)
	})
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i := range cfg.Online {
		seen[i] = new(seqSet)
		u := members[i]
		g.Go(func() error {
			c, err := dialRaw(gctx, rawOptions{Addr: cfg.Addrs[i%len(cfg.Addrs)], ClientID: u + "/bench", User: u, Password: tokens[u],
				ReceiveMaximum: 1024, Topic: topic, QoS: cfg.QoS, OnMsg: func(p []byte) { onMsg(i, p) }})
			if err != nil {
				return err
			}
			subs[i] = c
			opened.Add(1)
			return nil
		})
	}
	err = g.Wait()
	stop()
	if err != nil {
		return nil, err
	}

	var (
		acked, failed atomic.Int64
		ackLat        Recorder
		errs          errTally
	)
	sender, err := dialRaw(ctx, rawOptions{Addr: cfg.Addrs[0], ClientID: owner + "/bench", User: owner, Password: tokens[owner], Window: 16,
		OnAck: func(_ int64, sent time.Time, err error) {
			if err != nil {
				failed.Add(1)
				errs.add(err)
				return
			}
			acked.Add(1)
			ackLat.Add(time.Since(sent))
		}})
	if err != nil {
		return nil, err
	}
	defer sender.Disconnect()
	setup := time.Since(t0)

	cpu0, _ := readCPUTimes(cfg.PIDs)
	gen0, _ := ReadCPUTime(os.Getpid())
	start := time.Now()
	var sent int64
	stop = env.progress(ctx, func(el time.Duration) string {
		return fmt.Sprintf("group: %.1fs, %d sent, %d acked, %d failed, %d/%d delivered",
			el.Seconds(), atomic.LoadInt64(&sent), acked.Load(), failed.Load(), delivered.Load(), atomic.LoadInt64(&sent)*int64(cfg.Online))
	})
	pacer, err := NewPacer(cfg.Rate, 50*time.Millisecond, cfg.Clock)
	if err != nil {
		stop()
		return nil, err
	}
	var buf []byte
	for k := range cfg.Messages {
		if _, err := pacer.Wait(ctx); err != nil {
			stop()
			return nil, err
		}
		if err := sender.Acquire(ctx); err != nil {
			stop()
			return nil, err
		}
		now := time.Now()
		sentAt[k].Store(now.UnixNano())
		buf = appendEnvelope(buf[:0], string(prefix), int64(k), now.UnixNano(), cfg.Size)
		if err := sender.Send(topic, buf, int64(k), false); err != nil {
			failed.Add(1)
			errs.add(err)
		}
		atomic.AddInt64(&sent, 1)
	}
	deadline := time.Now().Add(cfg.Drain)
	for (sender.InFlight() > 0 || delivered.Load() < acked.Load()*int64(cfg.Online)) && time.Now().Before(deadline) && ctx.Err() == nil {
		_ = (wallClock{}).Sleep(ctx, 10*time.Millisecond)
	}
	elapsed := time.Since(start)
	cpu1, cpuErr := readCPUTimes(cfg.PIDs)
	gen1, genErr := ReadCPUTime(os.Getpid())
	stop()
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	res := &GroupResult{Scenario: "group", Nodes: len(cfg.Addrs), Members: cfg.Members, Online: cfg.Online, Messages: cfg.Messages,
		Rate: cfg.Rate, QoS: int(cfg.QoS), GroupID: gid, SetupSeconds: setup.Seconds(),
		Sent: sent, Acked: acked.Load(), Failed: failed.Load(), Delivered: delivered.Load(), Duplicates: dups.Load(), Errors: errs.counts()}
	res.Expected = res.Acked * int64(cfg.Online)
	res.Lost = max(0, res.Expected-res.Delivered)
	var last, first []time.Duration
	for k := range cfg.Messages {
		s := sentAt[k].Load()
		if s == 0 {
			continue
		}
		m := GroupMessage{SentUnixMs: float64(s) / 1e6, Delivered: count[k].Load()}
		if m.Delivered > 0 {
			m.FirstMs, m.LastMs = float64(firstAt[k].Load()-s)/1e6, float64(lastAt[k].Load()-s)/1e6
		}
		res.PerMessage = append(res.PerMessage, m)
		if m.Delivered == 0 {
			continue
		}
		first = append(first, time.Duration(firstAt[k].Load()-s))
		if m.Delivered == int64(cfg.Online) {
			last = append(last, time.Duration(lastAt[k].Load()-s))
		}
	}
	res.LastDelivery, res.FirstDelivery = Summarize(last), Summarize(first)
	res.Delivery = Summarize(deliveries.Sorted())
	res.Ack = Summarize(ackLat.Sorted())
	if genErr == nil && res.Delivered > 0 {
		res.GenCPUPerDelivery = float64((gen1 - gen0).Nanoseconds()) / 1e3 / float64(res.Delivered)
	}
	if len(cfg.PIDs) > 0 && cpuErr == nil {
		used := cpu1 - cpu0
		if res.Acked > 0 {
			res.ServerCPUPerMsg = float64(used.Nanoseconds()) / 1e3 / float64(res.Acked)
		}
		if res.Delivered > 0 {
			res.ServerCPUPerDelivery = float64(used.Nanoseconds()) / 1e3 / float64(res.Delivered)
		}
		res.ServerCPUPercent = 100 * used.Seconds() / elapsed.Seconds()
		res.ServerRSSKB, _ = readRSSSum(cfg.PIDs)
	}
	return res, nil
}

// createGroup creates a group owned by the owner's token holding members
// (the first 999 with the group, then 1,000 per request: the API's
// limits) and returns its ID.
func createGroup(ctx context.Context, env Env, httpURL, ownerToken string, members []string) (string, error) {
	var added atomic.Int64
	stop := env.progress(ctx, func(time.Duration) string {
		return fmt.Sprintf("group: %d/%d members added", added.Load(), len(members))
	})
	defer stop()
	first := members[:min(999, len(members))]
	var g struct {
		GroupID string `json:"groupId"`
	}
	if err := apiJSON(ctx, http.MethodPost, httpURL+"/user/groups", ownerToken,
		map[string]any{"name": "bench group", "members": first}, http.StatusCreated, &g); err != nil {
		return "", fmt.Errorf("creating the group: %w", err)
	}
	added.Store(int64(len(first)))
	for rest := members[len(first):]; len(rest) > 0; {
		chunk := rest[:min(1000, len(rest))]
		rest = rest[len(chunk):]
		if err := apiJSON(ctx, http.MethodPost, httpURL+"/user/groups/"+g.GroupID+"/members", ownerToken,
			map[string]any{"uids": chunk}, http.StatusOK, nil); err != nil {
			return "", fmt.Errorf("adding members to group %s: %w", g.GroupID, err)
		}
		added.Add(int64(len(chunk)))
	}
	return g.GroupID, nil
}

// apiJSON sends a JSON request with a bearer token and decodes the
// answer into out when the status is want.
func apiJSON(ctx context.Context, method, url, token string, body any, want int, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := (&http.Client{Timeout: 2 * time.Minute}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		return fmt.Errorf("%w: %s %s: %d %s", ErrHTTP, method, url, resp.StatusCode, strings.TrimSpace(string(rb)))
	}
	if out != nil {
		return json.Unmarshal(rb, out)
	}
	return nil
}

// PrintGroup writes the summary of a group run.
func PrintGroup(w io.Writer, r *GroupResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "scenario\tgroup of %d members, %d online (QoS %d subscriptions), %d node(s), group %s\n", r.Members, r.Online, r.QoS, r.Nodes, r.GroupID)
	fmt.Fprintf(tw, "messages\t%d sent at %.1f/s, %d acked, %d failed (setup %.1f s)\n", r.Sent, r.Rate, r.Acked, r.Failed, r.SetupSeconds)
	fmt.Fprintf(tw, "deliveries\t%d of %d, %d lost, %d duplicated\n", r.Delivered, r.Expected, r.Lost, r.Duplicates)
	fmt.Fprintf(tw, "send → LAST member ms\t%s\n", summaryLine(r.LastDelivery))
	fmt.Fprintf(tw, "send → first member ms\t%s\n", summaryLine(r.FirstDelivery))
	fmt.Fprintf(tw, "send → each delivery ms\t%s\n", summaryLine(r.Delivery))
	fmt.Fprintf(tw, "publish → PUBACK ms\t%s\n", summaryLine(r.Ack))
	if r.ServerCPUPerMsg > 0 {
		fmt.Fprintf(tw, "server CPU\t%.0f µs per group message, %.1f µs per delivery, %.0f%% of a core; RSS %.1f MB\n",
			r.ServerCPUPerMsg, r.ServerCPUPerDelivery, r.ServerCPUPercent, float64(r.ServerRSSKB)/1024)
	}
	fmt.Fprintf(tw, "generator CPU\t%.1f µs per delivery\n", r.GenCPUPerDelivery)
	for _, k := range slices.Sorted(maps.Keys(r.Errors)) {
		fmt.Fprintf(tw, "error ×%d\t%s\n", r.Errors[k], k)
	}
	return tw.Flush()
}
