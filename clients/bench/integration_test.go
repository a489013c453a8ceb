package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
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

	t.Run("throughput", func(t *testing.T) {
		out := filepath.Join(dir, "tp.json")
		var stdout, stderr testutil.SyncBuffer
		err := run(ctx, []string{"throughput", "--http", n.HTTPURL, "--mqtt", n.MQTTURL, "--prefix", "it",
			"--senders", "2", "--receivers", "2", "--inflight", "4", "--duration", "1s", "--warmup", "0s", "--out", out}, &stdout, &stderr)
		if err != nil {
			t.Fatalf("%v\n%s", err, stderr.String())
		}
		var res LoadResult
		readJSON(t, out, &res)
		if res.Mode != "throughput" || res.Committed < 10 || res.Failed != 0 || res.Rate <= 0 {
			t.Fatalf("result %+v", res)
		}
		if res.PubAck.Count != int(res.Committed) {
			t.Fatalf("%d latencies for %d commits", res.PubAck.Count, res.Committed)
		}
	})
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
