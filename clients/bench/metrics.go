package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ParseMetrics reads the named unlabelled samples from a Prometheus text
// exposition; names not present are absent from the map.
func ParseMetrics(r io.Reader, names ...string) (map[string]float64, error) {
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || !want[f[0]] {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			return nil, fmt.Errorf("metric %s: %w", f[0], err)
		}
		out[f[0]] = v
	}
	return out, sc.Err()
}

// raftMetrics are the node's batching counters: commands per Raft entry
// tell whether proposals from many clients are being batched.
var raftMetrics = []string{"edgechat_raft_batch_commands_sum", "edgechat_raft_batch_commands_count"}

// scrapeMetrics fetches baseURL/metrics; errors yield nil (the figure is
// optional: other brokers have no such endpoint).
func scrapeMetrics(ctx context.Context, baseURL string, names ...string) map[string]float64 {
	if baseURL == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(baseURL, "/")+"/metrics", nil)
	if err != nil {
		return nil
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	m, err := ParseMetrics(resp.Body, names...)
	if err != nil {
		return nil
	}
	return m
}

// batchAverage is the mean commands per Raft batch between two scrapes.
func batchAverage(before, after map[string]float64) float64 {
	if before == nil || after == nil {
		return 0
	}
	n := after["edgechat_raft_batch_commands_count"] - before["edgechat_raft_batch_commands_count"]
	if n <= 0 {
		return 0
	}
	return (after["edgechat_raft_batch_commands_sum"] - before["edgechat_raft_batch_commands_sum"]) / n
}
