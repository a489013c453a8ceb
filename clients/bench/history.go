package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"golang.org/x/sync/errgroup"
)

// HistoryConfig configures the history scenario: fill the store with
// Stored direct messages from one user (over Devices connections) to a
// reader, then time the reader's history pages, deep paging and sync.
type HistoryConfig struct {
	HTTPURL   string
	Addr      string // MQTT, for the fill
	PIDs      []int
	Prefix    string
	Stored    int // messages to send before reading (0: read what is there)
	Devices   int // sending connections for the fill
	InFlight  int // per fill connection
	Size      int
	PageSize  int // history limit (50)
	Pages     int // deep paging: pages walked back from the newest
	SyncLimit int // sync limit (1000)
	SyncPages int // sync pages walked from the start at most
	Repeat    int // repetitions of the newest page and of the conversations list
	Client    *http.Client
}

// HistoryResult is the outcome of the history scenario.
type HistoryResult struct {
	Scenario      string   `json:"scenario"`
	Target        string   `json:"target,omitempty"`
	Stored        int64    `json:"stored"` // messages sent and acknowledged by the fill
	FillSeconds   float64  `json:"fillSeconds,omitempty"`
	FillRate      float64  `json:"fillPerSecond,omitempty"`
	FillCPUPerMsg float64  `json:"fillServerCpuMicrosPerMsg,omitempty"`
	FillFailed    int64    `json:"fillFailed,omitempty"`
	PageSize      int      `json:"pageSize"`
	Newest        Summary  `json:"newestPage"`    // GET /chat/history?with=…&limit=PageSize, repeated
	Paging        Summary  `json:"deepPaging"`    // the same with before=, walking back
	PagesWalked   int      `json:"pagesWalked"`   // of Paging
	SyncLimit     int      `json:"syncLimit"`     // messages per sync page
	Sync          Summary  `json:"syncPage"`      // GET /chat/sync?since=…&limit=SyncLimit, walking forward
	SyncMessages  int64    `json:"syncMessages"`  // returned by the walk
	Conversations Summary  `json:"conversations"` // GET /chat/conversations, repeated
	ServerRSSKB   int64    `json:"serverRssKB,omitempty"`
	Errors        []string `json:"errors,omitempty"`
}

func (c *HistoryConfig) validate() error {
	switch {
	case c.HTTPURL == "" || c.Addr == "":
		return fmt.Errorf("%w: history needs --http and --mqtt", errUsage)
	case c.Stored < 0 || c.Devices < 1 || c.InFlight < 1:
		return fmt.Errorf("%w: -n must not be negative, --devices and --inflight at least 1", errUsage)
	case c.PageSize < 1 || c.PageSize > 200:
		return fmt.Errorf("%w: --page must be 1..200", errUsage)
	case c.SyncLimit < 1 || c.SyncLimit > 1000:
		return fmt.Errorf("%w: --sync-limit must be 1..1000", errUsage)
	case c.Size < 1 || c.Size > 8000:
		return fmt.Errorf("%w: --size must be 1..8000", errUsage)
	}
	c.Pages, c.SyncPages, c.Repeat = max(c.Pages, 1), max(c.SyncPages, 1), max(c.Repeat, 1)
	if c.Client == nil {
		c.Client = &http.Client{Timeout: 30 * time.Second}
	}
	return validPrefix(c.Prefix)
}

// RunHistory fills the store and times the reads.
func RunHistory(ctx context.Context, cfg HistoryConfig, env Env) (*HistoryResult, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	env = env.withDefaults()
	sender, reader := cfg.Prefix+"hs", cfg.Prefix+"hr"
	tokens, err := env.tokens(ctx, []string{sender, reader})
	if err != nil {
		return nil, err
	}
	res := &HistoryResult{Scenario: "history", PageSize: cfg.PageSize, SyncLimit: cfg.SyncLimit}
	if cfg.Stored > 0 {
		if err := fillHistory(ctx, cfg, env, sender, reader, tokens[sender], res); err != nil {
			return nil, err
		}
	}
	get := func(path string, q url.Values) ([]byte, time.Duration, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(cfg.HTTPURL, "/")+path+"?"+q.Encode(), nil)
		if err != nil {
			return nil, 0, err
		}
		req.Header.Set("Authorization", "Bearer "+tokens[reader])
		t0 := time.Now()
		resp, err := cfg.Client.Do(req)
		if err != nil {
			return nil, 0, err
		}
		body, err := io.ReadAll(resp.Body)
		d := time.Since(t0)
		resp.Body.Close()
		if err != nil {
			return nil, 0, err
		}
		if resp.StatusCode != http.StatusOK {
			return nil, 0, fmt.Errorf("GET %s: %w: %d %s", path, ErrHTTP, resp.StatusCode, truncate(strings.TrimSpace(string(body)), 200))
		}
		return body, d, nil
	}
	type page struct {
		Messages []struct {
			ID string `json:"id"`
		} `json:"messages"`
		Cursor  string `json:"cursor"`
		HasMore bool   `json:"hasMore"`
	}
	decode := func(b []byte) (page, error) {
		var p page
		if err := json.Unmarshal(b, &p); err != nil {
			return p, fmt.Errorf("decoding a page: %w", err)
		}
		return p, nil
	}

	var done atomic.Int64
	phase := atomic.Value{}
	phase.Store("newest page")
	stop := env.progress(ctx, func(time.Duration) string {
		return fmt.Sprintf("history: %s, %d requests", phase.Load(), done.Load())
	})
	defer stop()

	var newest, paging, syncH, convs Histogram
	lim := strconv.Itoa(cfg.PageSize)
	for range cfg.Repeat {
		if _, d, err := get("/chat/history", url.Values{"with": {sender}, "limit": {lim}}); err != nil {
			return nil, err
		} else {
			newest.Add(d)
		}
		done.Add(1)
	}
	phase.Store("deep paging")
	before := ""
	for range cfg.Pages {
		q := url.Values{"with": {sender}, "limit": {lim}}
		if before != "" {
			q.Set("before", before)
		}
		b, d, err := get("/chat/history", q)
		if err != nil {
			return nil, err
		}
		paging.Add(d)
		res.PagesWalked++
		done.Add(1)
		p, err := decode(b)
		if err != nil {
			return nil, err
		}
		if len(p.Messages) == 0 || !p.HasMore {
			break
		}
		before = p.Messages[len(p.Messages)-1].ID
	}
	phase.Store("sync")
	since := ""
	for range cfg.SyncPages {
		q := url.Values{"limit": {strconv.Itoa(cfg.SyncLimit)}}
		if since != "" {
			q.Set("since", since)
		}
		b, d, err := get("/chat/sync", q)
		if err != nil {
			return nil, err
		}
		done.Add(1)
		p, err := decode(b)
		if err != nil {
			return nil, err
		}
		if len(p.Messages) > 0 {
			syncH.Add(d)
			res.SyncMessages += int64(len(p.Messages))
		}
		if !p.HasMore || p.Cursor == "" {
			break
		}
		since = p.Cursor
	}
	phase.Store("conversations")
	for range cfg.Repeat {
		if _, d, err := get("/chat/conversations", url.Values{}); err != nil {
			return nil, err
		} else {
			convs.Add(d)
		}
		done.Add(1)
	}
	res.Newest, res.Paging, res.Sync, res.Conversations = newest.Summary(), paging.Summary(), syncH.Summary(), convs.Summary()
	if len(cfg.PIDs) > 0 {
		res.ServerRSSKB, _ = readRSSSum(cfg.PIDs)
	}
	return res, nil
}

// fillHistory sends cfg.Stored messages from sender (over cfg.Devices
// connections, closed loop) to reader and waits for every PUBACK.
func fillHistory(ctx context.Context, cfg HistoryConfig, env Env, sender, reader, token string, res *HistoryResult) error {
	conns := make([]*paho.Client, cfg.Devices)
	defer func() {
		for _, c := range conns {
			if c != nil {
				_ = c.Disconnect(&paho.Disconnect{})
			}
		}
	}()
	for i := range conns {
		c, err := dial(ctx, dialOptions{Addr: cfg.Addr, User: sender, Device: "fill" + strconv.Itoa(i), Token: token, ReceiveMaximum: 16})
		if err != nil {
			return err
		}
		conns[i] = c
	}
	var rb [4]byte
	_, _ = rand.Read(rb[:])
	runID := hex.EncodeToString(rb[:])
	var next, acked, failed atomic.Int64
	var errMu sync.Mutex
	var firstErr string
	stop := env.progress(ctx, func(el time.Duration) string {
		return fmt.Sprintf("history: filling, %d/%d acknowledged (%.0f msg/s), %d failed", acked.Load(), cfg.Stored, float64(acked.Load())/el.Seconds(), failed.Load())
	})
	cpu0, _ := readCPUTimes(cfg.PIDs)
	t0 := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	for _, c := range conns {
		for range cfg.InFlight {
			g.Go(func() error {
				for gctx.Err() == nil {
					k := next.Add(1) - 1
					if k >= int64(cfg.Stored) {
						return nil
					}
					payload := messagePayload(runID+"-"+strconv.FormatInt(k, 10), time.Now(), cfg.Size)
					resp, err := c.Publish(gctx, &paho.Publish{QoS: 1, Topic: "user/" + reader + "/newMessage", Payload: payload})
					if err == nil && resp != nil && resp.ReasonCode >= 0x80 {
						err = fmt.Errorf("PUBACK 0x%02x %s", resp.ReasonCode, pubackReason(resp))
					}
					if err != nil {
						errMu.Lock()
						if firstErr == "" {
							firstErr = err.Error()
						}
						errMu.Unlock()
						if failed.Add(1) > int64(max(10, cfg.Stored/100)) {
							return fmt.Errorf("filling the history: too many failed publishes; first: %s", firstErr)
						}
						continue
					}
					acked.Add(1)
				}
				return nil
			})
		}
	}
	err := g.Wait()
	stop()
	if err != nil {
		return err
	}
	el := time.Since(t0)
	res.Stored, res.FillFailed = acked.Load(), failed.Load()
	res.FillSeconds = el.Seconds()
	res.FillRate = float64(res.Stored) / el.Seconds()
	if cpu1, err := readCPUTimes(cfg.PIDs); err == nil && len(cfg.PIDs) > 0 && res.Stored > 0 {
		res.FillCPUPerMsg = float64((cpu1 - cpu0).Nanoseconds()) / 1e3 / float64(res.Stored)
	}
	if firstErr != "" {
		res.Errors = append(res.Errors, firstErr)
	}
	return nil
}
