package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/node"
	"github.com/edgechat/edgechat/node/nodetest"
)

// TestModesAgainstARealNode runs every mode in a tiny configuration
// against an in-process node, through the same code paths as the CLI.
func TestModesAgainstARealNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	n := nodetest.StartNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := Env{Stderr: &testutil.SyncBuffer{}, Tokens: &Accounts{HTTPURL: n.HTTPURL, Password: "bench-password"}, ProgressEvery: 100 * time.Millisecond}
	addr, err := mqttAddr(n.MQTTURL)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("conns", func(t *testing.T) {
		// The node runs in this process, so its RSS is ours: the figure is
		// meaningless here, but every reading must have been taken.
		res, err := RunConns(ctx, ConnsConfig{
			MQTTAddr: addr, PID: os.Getpid(), Prefix: "it", N: 20, Users: 4, Step: 10,
			Concurrency: 4, KeepAlive: 30, Subscribe: true,
		}, env)
		if err != nil {
			t.Fatal(err)
		}
		if res.Opened != 20 || res.Failed != 0 {
			t.Fatalf("opened %d, failed %d (%s)", res.Opened, res.Failed, res.FirstError)
		}
		if len(res.Samples) != 3 || res.Samples[2].Conns != 20 || res.RSSBeforeKB <= 0 || res.RSSSettledKB <= 0 {
			t.Fatalf("samples %+v, before %d, settled %d", res.Samples, res.RSSBeforeKB, res.RSSSettledKB)
		}
		if !strings.Contains(env.Stderr.(*testutil.SyncBuffer).String(), "conns: 20/20 open") {
			t.Fatalf("no final progress line in %q", env.Stderr.(*testutil.SyncBuffer).String())
		}
	})

	t.Run("conns refused with a forged token", func(t *testing.T) {
		bad := Env{Tokens: StaticTokens{"itxc0": "not-a-token"}}
		_, err := RunConns(ctx, ConnsConfig{MQTTAddr: addr, Prefix: "itx", N: 20, Users: 1, Step: 20, Concurrency: 2, KeepAlive: 30}, bad)
		if !errors.Is(err, ErrTooManyFailures) || !strings.Contains(err.Error(), "0x86") {
			t.Fatalf("err = %v, want too many failures with reason 0x86", err)
		}
	})

	dir := t.TempDir()
	t.Run("latency", func(t *testing.T) {
		out, chart := filepath.Join(dir, "lat.json"), filepath.Join(dir, "lat.svg")
		var stdout, stderr testutil.SyncBuffer
		err := run(ctx, []string{"latency", "--http", n.HTTPURL, "--mqtt", n.MQTTURL, "--prefix", "it",
			"--senders", "2", "--receivers", "2", "--rate", "40", "--duration", "1s", "--warmup", "0s",
			"--deliver", "--progress", "200ms", "--out", out, "--chart", chart}, &stdout, &stderr)
		if err != nil {
			t.Fatalf("%v\n%s", err, stderr.String())
		}
		var res LoadResult
		readJSON(t, out, &res)
		// 40 msg/s for 1 s; the last slots may fall after the deadline.
		if res.Committed < 30 || res.Committed > 41 || res.Failed != 0 {
			t.Fatalf("committed %d, failed %d (%v)", res.Committed, res.Failed, res.Errors)
		}
		if res.PubAck.Count != int(res.Committed) || res.PubAck.P50 <= 0 || res.PubAck.P99 < res.PubAck.P50 {
			t.Fatalf("puback summary %+v", res.PubAck)
		}
		if res.RaftBatchAvg < 1 {
			t.Fatalf("no Raft batch figure from the node's /metrics: %v", res.RaftBatchAvg)
		}
		if res.Delivery == nil || res.Delivered != res.Committed || res.Delivery.Count != int(res.Delivered) {
			t.Fatalf("delivered %d of %d: %+v", res.Delivered, res.Committed, res.Delivery)
		}
		if !strings.Contains(stdout.String(), "publish→PUBACK ms") || !strings.Contains(stderr.String(), "latency: ") {
			t.Fatalf("summary or progress missing:\n%s\n%s", stdout.String(), stderr.String())
		}
		svg, err := os.ReadFile(chart)
		if err != nil || !bytes.Contains(svg, []byte("publish→delivery")) {
			t.Fatalf("chart: %v\n%.300s", err, svg)
		}
	})

	for _, client := range []string{"raw", "paho"} {
		t.Run("throughput with "+client, func(t *testing.T) {
			out := filepath.Join(dir, "tp-"+client+".json")
			var stdout, stderr testutil.SyncBuffer
			err := run(ctx, []string{"throughput", "--http", n.HTTPURL, "--mqtt", n.MQTTURL, "--prefix", "it", "--client", client,
				"--senders", "2", "--receivers", "2", "--inflight", "4", "--duration", "1s", "--warmup", "0s", "--out", out}, &stdout, &stderr)
			if err != nil {
				t.Fatalf("%v\n%s", err, stderr.String())
			}
			var res LoadResult
			readJSON(t, out, &res)
			if res.Mode != "throughput" || res.Client != client || res.Committed < 10 || res.Failed != 0 || res.Rate <= 0 || res.GenCPUPerMsg <= 0 {
				t.Fatalf("result %+v", res)
			}
			if res.PubAck.Count != int(res.Committed) || res.AckOutOfOrder != 0 || res.StrayAcks != 0 {
				t.Fatalf("%d latencies for %d commits; %d PUBACKs out of order, %d stray", res.PubAck.Count, res.Committed, res.AckOutOfOrder, res.StrayAcks)
			}
			if !strings.Contains(stdout.String(), "generator ("+client+" client)") {
				t.Fatalf("no generator CPU line:\n%s", stdout.String())
			}
		})
	}
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// startRefServer serves a plain mochi-mqtt broker on 127.0.0.1:0 for the
// test and returns its address.
func startRefServer(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out testutil.SyncBuffer
	done := make(chan error, 1)
	go func() { done <- RunRefServer(ctx, "127.0.0.1:0", &out) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("refserver: %v", err)
		}
	})
	for range 500 {
		if _, rest, ok := strings.Cut(out.String(), "mqtt="); ok {
			addr, _, _ := strings.Cut(rest, " ")
			return addr
		}
		select {
		case err := <-done:
			t.Fatalf("refserver ended: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatalf("refserver did not start: %q", out.String())
	return ""
}

// runJSON runs the CLI with args plus --out and decodes the result.
func runJSON(t *testing.T, ctx context.Context, v any, args ...string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out.json")
	var stdout, stderr testutil.SyncBuffer
	if err := run(ctx, append(args, "--out", out, "--progress", "100ms"), &stdout, &stderr); err != nil {
		t.Fatalf("%v: %v\n%s", args, err, stderr.String())
	}
	readJSON(t, out, v)
	return stdout.String() + stderr.String()
}

// checkSteps asserts what must hold whatever the machine's speed: every
// message sent was delivered exactly once and measured.
func checkSteps(t *testing.T, res *ScenarioResult, perMsg int64) {
	t.Helper()
	if len(res.Steps) == 0 {
		t.Fatal("no steps")
	}
	for _, s := range res.Steps {
		if s.Sent == 0 || s.Expected != s.Sent*perMsg || s.Delivered != s.Expected || s.Lost != 0 || s.Duplicates != 0 || s.Failed != 0 {
			t.Fatalf("step %+v", s)
		}
		if s.Latency.Count == 0 || s.Latency.P99 < s.Latency.P50 || s.Latency.Max < s.Latency.P99 {
			t.Fatalf("latency %+v", s.Latency)
		}
	}
}

// TestPlainScenariosAgainstRefServer runs idle, dm (QoS 0 as a sweep, QoS
// 1) and rooms briefly against a plain mochi-mqtt broker in this process.
// The p99 bar is generous and every step runs: nothing here is timed.
func TestPlainScenariosAgainstRefServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a broker")
	}
	addr := startRefServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pid := strconv.Itoa(os.Getpid())
	short := []string{"--duration", "500ms", "--warmup", "100ms", "--drain", "10s", "--p99-max", "10s", "--stop-after", "9"}

	t.Run("idle", func(t *testing.T) {
		var res ConnsResult
		runJSON(t, ctx, &res, "idle", "--anon", "--mqtt", addr, "--pid", pid, "-n", "20", "--step", "10", "--settle", "0s", "--target", "mochi")
		if res.Mode != "idle" || res.Target != "mochi" || res.Opened != 20 || res.Failed != 0 || len(res.Samples) < 3 {
			t.Fatalf("idle %+v", res)
		}
	})
	t.Run("dm qos0 sweep", func(t *testing.T) {
		var res ScenarioResult
		out := runJSON(t, ctx, &res, append([]string{"dm", "--anon", "--mqtt", addr, "--pid", pid, "--pairs", "3", "--qos", "0", "--sweep", "30,60"}, short...)...)
		checkSteps(t, &res, 1)
		// The broker is this process: a short step may use less CPU than
		// one clock tick of /proc, so one step with a reading will do.
		if res.Sweep == nil || len(res.Steps) != 2 || res.Steps[1].OfferedRate != 60 || res.Sweep.Best != 60 || res.Steps[0].CPUPerMsg+res.Steps[1].CPUPerMsg <= 0 {
			t.Fatalf("sweep %+v steps %+v", res.Sweep, res.Steps)
		}
		if !strings.Contains(out, "highest rate with p99") || !strings.Contains(out, "dm: rate 60/s") {
			t.Fatalf("no sweep line or progress:\n%s", out)
		}
	})
	t.Run("dm qos1", func(t *testing.T) {
		var res ScenarioResult
		runJSON(t, ctx, &res, append([]string{"dm", "--anon", "--mqtt", addr, "--pairs", "2", "--qos", "1", "--rate", "40"}, short...)...)
		checkSteps(t, &res, 1)
		if res.Sweep != nil || res.Steps[0].Ack == nil || res.Steps[0].Ack.Count == 0 {
			t.Fatalf("qos1 %+v", res.Steps[0])
		}
	})
	t.Run("rooms", func(t *testing.T) {
		var res ScenarioResult
		runJSON(t, ctx, &res, append([]string{"rooms", "--anon", "--mqtt", addr, "--topics", "2", "--subs", "4", "--rate", "40", "--size", "200"}, short...)...)
		checkSteps(t, &res, 4)
		if res.Params["subs"] != float64(4) {
			t.Fatalf("params %v", res.Params)
		}
	})
}

// TestEdgechatScenariosAgainstRealNodes runs durable (over TCP and
// WebSocket) and history against an in-process node, and dm over
// WebSocket against a --dev node.
func TestEdgechatScenariosAgainstRealNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nodes")
	}
	n := nodetest.StartNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	short := []string{"--duration", "500ms", "--warmup", "100ms", "--drain", "10s", "--p99-max", "10s"}
	for _, tc := range []struct{ tr, client string }{{"tcp", "raw"}, {"ws", "raw"}, {"tcp", "paho"}} {
		tr := tc.tr
		t.Run("durable over "+tr+" with "+tc.client, func(t *testing.T) {
			args := []string{"durable", "--http", n.HTTPURL, "--mqtt", n.MQTTURL, "--prefix", "du" + tr + tc.client, "--senders", "3", "--receivers", "2",
				"--rate", "30", "--client", tc.client, "--inflight", "2", "--sweep", "30,60"}
			if tr == "ws" {
				args = append(args, "--ws")
			}
			var res ScenarioResult
			runJSON(t, ctx, &res, append(args, short...)...)
			checkSteps(t, &res, 1)
			for _, s := range res.Steps {
				if res.Transport != tr || res.Params["client"] != tc.client || !s.BarOnAck || s.Ack == nil || s.Ack.Count == 0 || s.Expected != s.Sent {
					t.Fatalf("durable over %s: %+v", tr, res)
				}
				// One node commits a connection's publishes in order and
				// delivers them in commit order.
				if s.Reordered != 0 || s.AckOutOfOrder != 0 || s.StrayAcks != 0 || s.GenCPUPerMsg <= 0 {
					t.Fatalf("durable over %s with %s: %+v", tr, tc.client, s)
				}
			}
		})
	}
	t.Run("history", func(t *testing.T) {
		var res HistoryResult
		runJSON(t, ctx, &res, "history", "--http", n.HTTPURL, "--mqtt", n.MQTTURL, "--prefix", "hi", "-n", "120", "--devices", "2",
			"--inflight", "4", "--pages", "10", "--sync-limit", "50", "--repeat", "3")
		if res.Stored != 120 || res.FillFailed != 0 || res.SyncMessages != 120 || res.Sync.Count != 3 {
			t.Fatalf("history %+v", res)
		}
		// 120 messages in pages of 50: three pages, the last one short.
		if res.PagesWalked != 3 || res.Paging.Count != 3 || res.Newest.Count != 3 || res.Conversations.Count != 3 {
			t.Fatalf("history reads %+v", res)
		}
	})
	t.Run("dm over ws, dev node", func(t *testing.T) {
		dev := nodetest.StartNode(t, nodetest.WithDev())
		var res ScenarioResult
		runJSON(t, ctx, &res, append([]string{"dm", "--http", dev.HTTPURL, "--ws", "--pairs", "2", "--qos", "1", "--rate", "20"}, short...)...)
		checkSteps(t, &res, 1)
		if res.Transport != "ws" {
			t.Fatalf("transport %q", res.Transport)
		}
	})
}

// TestGroupScenario creates a group through the HTTP API, connects some
// of its members and checks that every message reached every online
// member once and that the last-delivery figures were taken.
func TestGroupScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	n := nodetest.StartNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var res GroupResult
	out := runJSON(t, ctx, &res, "group", "--http", n.HTTPURL, "--mqtt", n.MQTTURL, "--prefix", "gr", "--pid", strconv.Itoa(os.Getpid()),
		"--members", "1205", "--online", "12", "--messages", "6", "--rate", "30", "--qos", "1", "--concurrency", "32")
	if res.Members != 1205 || res.GroupID == "" || res.Acked != 6 || res.Failed != 0 || res.Expected != 72 || res.Delivered != 72 || res.Lost != 0 || res.Duplicates != 0 {
		t.Fatalf("group %+v", res)
	}
	if res.LastDelivery.Count != 6 || res.FirstDelivery.Count != 6 || res.Delivery.Count != 72 || res.LastDelivery.Max < res.FirstDelivery.Max ||
		res.Ack.Count != 6 || res.ServerCPUPerDelivery <= 0 || res.GenCPUPerDelivery <= 0 {
		t.Fatalf("figures %+v", res)
	}
	if len(res.PerMessage) != 6 {
		t.Fatalf("per message: %+v", res.PerMessage)
	}
	for _, m := range res.PerMessage {
		if m.Delivered != 12 || m.FirstMs <= 0 || m.LastMs < m.FirstMs || m.SentUnixMs <= 0 {
			t.Fatalf("per message: %+v", res.PerMessage)
		}
	}
	if !strings.Contains(out, "send → LAST member ms") || !strings.Contains(out, "1204/1204 members added") {
		t.Fatalf("summary or progress missing:\n%s", out)
	}
}

// TestSeedThenServe seeds accounts into a data directory, then serves it
// and finds them there.
func TestSeedThenServe(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nodes")
	}
	dir := t.TempDir()
	ports, err := FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(ports[0])
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for range 2 { // the second run finds them all
		var stderr testutil.SyncBuffer
		if err := run(ctx, []string{"seed", "--data", dir, "--cluster-addr", addr, "--members", "25", "--prefix", "sd", "--progress", "50ms"}, io.Discard, &stderr); err != nil {
			t.Fatalf("%v\n%s", err, stderr.String())
		}
	}
	n := nodetest.StartNode(t, nodetest.WithDataDir(dir), nodetest.WithConfig(func(c *node.Config) { c.ClusterAddr = addr }))
	for _, u := range []string{"sdo", "sdm0", "sdm23"} {
		if _, err := n.Auth.LookupAccount(u); err != nil {
			t.Fatalf("%s after seeding: %v", u, err)
		}
	}
	if _, err := n.Auth.LookupAccount("sdm24"); err == nil {
		t.Fatal("seeded one member too many")
	}
}
