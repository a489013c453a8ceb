package main

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestHistogramBucketsCoverEveryValue(t *testing.T) {
	// Every value falls into a bucket whose upper edge is at or above it
	// and whose predecessor's edge is below it; edges only grow.
	vals := []uint64{0, 1, 127, 128, 129, 255, 256, 1000, 1 << 20, 1<<40 + 12345, 1<<63 - 1, 1<<64 - 1}
	for range 2000 {
		vals = append(vals, rand.Uint64()>>rand.IntN(64))
	}
	for _, v := range vals {
		i := histIndex(v)
		if i < 0 || i >= histBuckets {
			t.Fatalf("histIndex(%d) = %d, out of range", v, i)
		}
		if histUpper(i) < v {
			t.Fatalf("value %d in bucket %d whose upper edge is %d", v, i, histUpper(i))
		}
		if i > 0 && histUpper(i-1) >= v {
			t.Fatalf("value %d in bucket %d but bucket %d already reaches %d", v, i, i-1, histUpper(i-1))
		}
	}
	for i := 1; i < histBuckets; i++ {
		if histUpper(i) <= histUpper(i-1) {
			t.Fatalf("bucket edges not increasing at %d", i)
		}
	}
}

func TestHistogramPercentilesWithinResolution(t *testing.T) {
	var h Histogram
	var exact []time.Duration
	r := rand.New(rand.NewPCG(1, 2))
	for range 50000 {
		// Log-uniform from 10 µs to 1 s, as latencies are.
		d := time.Duration(10e3 * math.Pow(10, r.Float64()*5))
		h.Add(d)
		exact = append(exact, d)
	}
	slices.Sort(exact)
	for _, p := range []float64{1, 50, 90, 99, 99.9, 100} {
		want, got := Percentile(exact, p), h.Percentile(p)
		if got < want || float64(got-want) > float64(want)/64+1 {
			t.Errorf("p%v = %v, exact %v: beyond the 1/64 resolution", p, got, want)
		}
	}
	s := h.Summary()
	if s.Count != 50000 || s.Min != ms(exact[0]) || s.Max != ms(exact[len(exact)-1]) {
		t.Fatalf("summary %+v, exact min %v max %v", s, exact[0], exact[len(exact)-1])
	}
	if !(s.P50 <= s.P90 && s.P90 <= s.P99 && s.P99 <= s.P999 && s.P999 <= s.Max) {
		t.Fatalf("percentiles not ordered: %+v", s)
	}
}

func TestHistogramSmallExactAndEmpty(t *testing.T) {
	var h Histogram
	if (h.Summary() != Summary{}) || h.Percentile(50) != 0 {
		t.Fatal("empty histogram not zero")
	}
	for _, v := range []time.Duration{5, 100, 7, -3} { // below 128 ns: exact buckets
		h.Add(v)
	}
	if got := h.Percentile(50); got != 5 {
		t.Fatalf("p50 of {0,5,7,100} = %v, want 5ns", got)
	}
	if h.Percentile(0) != 0 || h.Percentile(100) != 100 {
		t.Fatalf("min/max: %v %v", h.Percentile(0), h.Percentile(100))
	}
}

func TestHistogramConcurrentAddAndMerge(t *testing.T) {
	var a, b Histogram
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				if g%2 == 0 {
					a.Add(time.Duration(i+1) * time.Microsecond)
				} else {
					b.Add(time.Duration(i+1) * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	if a.Count() != 4000 || b.Count() != 4000 {
		t.Fatalf("counts %d %d", a.Count(), b.Count())
	}
	a.Merge(&b)
	s := a.Summary()
	if s.Count != 8000 || s.Min != 0.001 || s.Max != 1000 {
		t.Fatalf("merged summary %+v", s)
	}
	var empty Histogram
	empty.Merge(&a)
	if empty.Summary() != s {
		t.Fatalf("merge into empty: %+v, want %+v", empty.Summary(), s)
	}
}

func TestParseSweep(t *testing.T) {
	for in, want := range map[string][]float64{
		"1000,2000,5000":   {1000, 2000, 5000},
		"5000, 1000,1000,": {1000, 5000},
		"1k,2.5k":          {1000, 2500},
		"1000/2/8000":      {1000, 2000, 4000, 8000},
		"1000/2/9000":      {1000, 2000, 4000, 8000},
		"100/1.5/300":      {100, 150, 225},
		"7/2/7":            {7},
	} {
		got, err := ParseSweep(in)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("ParseSweep(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", ",", "abc", "0,100", "-5", "1000/1/8000", "1000/2", "0/2/10", "100/2/50", "1/2/1e300", "1/x/9"} {
		if _, err := ParseSweep(in); !errors.Is(err, ErrBadSweep) {
			t.Errorf("ParseSweep(%q) err = %v, want ErrBadSweep", in, err)
		}
	}
}

// fakeStep passes up to limit (p99 1 ms), then fails with a p99 of 50
// ms; lossAt and beyond lose a message. It records the rates it ran.
func fakeStep(limit, lossAt float64, ran *[]float64) func(context.Context, float64) (Step, error) {
	return func(_ context.Context, r float64) (Step, error) {
		*ran = append(*ran, r)
		st := Step{OfferedRate: r, Sent: 100, Rate: r, Latency: Summary{Count: 100, P99: 1}}
		if r > limit {
			st.Latency.P99 = 50
		}
		if lossAt > 0 && r >= lossAt {
			st.Lost = 1
		}
		return st, nil
	}
}

func TestSweepFindsTheHighestPassingRate(t *testing.T) {
	rates := []float64{1000, 2000, 4000, 8000, 16000}
	var ran []float64
	res, err := Sweep(context.Background(), rates, 10*time.Millisecond, 1, fakeStep(4000, 0, &ran))
	if err != nil || res.Best != 4000 || !slices.Equal(ran, []float64{1000, 2000, 4000, 8000}) {
		t.Fatalf("best %v, ran %v, err %v", res.Best, ran, err)
	}
	if res.Peak != 8000 || res.Stopped == "" || len(res.Steps) != 4 || res.P99MaxMs != 10 {
		t.Fatalf("result %+v", res)
	}

	// stop-after 2: one more step runs; loss at 16000 keeps it out of the peak.
	ran = nil
	res, _ = Sweep(context.Background(), rates, 10*time.Millisecond, 2, fakeStep(4000, 16000, &ran))
	if res.Best != 4000 || !slices.Equal(ran, rates) || res.Peak != 8000 {
		t.Fatalf("stop-after 2: best %v peak %v ran %v", res.Best, res.Peak, ran)
	}
	// Running out of rates is not a stop.
	if res.Stopped != "" {
		t.Fatalf("stopped %q after the last rate", res.Stopped)
	}

	// Loss fails a step whatever its latency.
	ran = nil
	res, _ = Sweep(context.Background(), rates, 10*time.Millisecond, 1, fakeStep(1e9, 2000, &ran))
	if res.Best != 1000 || !strings.Contains(res.Stopped, "1 lost") {
		t.Fatalf("loss: best %v, stopped %q", res.Best, res.Stopped)
	}

	// Nothing passes: best 0.
	ran = nil
	res, _ = Sweep(context.Background(), rates, 10*time.Millisecond, 1, fakeStep(10, 0, &ran))
	if res.Best != 0 || len(ran) != 1 {
		t.Fatalf("none passing: best %v ran %v", res.Best, ran)
	}

	// A step error ends the sweep and is returned.
	boom := errors.New("boom")
	_, err = Sweep(context.Background(), rates, time.Millisecond, 1, func(context.Context, float64) (Step, error) { return Step{}, boom })
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
}

func TestStepOKUsesTheAckBarForDurable(t *testing.T) {
	st := Step{Sent: 10, Latency: Summary{Count: 10, P99: 50}, Ack: &Summary{Count: 10, P99: 2}}
	if st.OK(10 * time.Millisecond) {
		t.Fatal("delivery p99 of 50 ms passed a 10 ms bar")
	}
	st.BarOnAck = true
	if !st.OK(10*time.Millisecond) || st.BarP99() != 2 {
		t.Fatal("durable step with PUBACK p99 2 ms failed a 10 ms bar")
	}
	st.Unsent = 1
	if st.OK(10 * time.Millisecond) {
		t.Fatal("a step that never sent a publish due in it passed")
	}
	st.Unsent = 0
	st.Failed = 1
	if st.OK(10 * time.Millisecond) {
		t.Fatal("a failed publish passed")
	}
	if (Step{}).OK(time.Second) {
		t.Fatal("an empty step passed")
	}
}

func TestFanoutPayloadAndSeqSet(t *testing.T) {
	due := time.Unix(1700000000, 123456789)
	b := make([]byte, 64)
	encodeFanout(b, due, 7, 3, 1<<40+5)
	gotDue, step, topic, seq, ok := decodeFanout(b)
	if !ok || !gotDue.Equal(due) || step != 7 || topic != 3 || seq != 1<<40+5 {
		t.Fatalf("decoded %v %d %d %d %v", gotDue, step, topic, seq, ok)
	}
	if _, _, _, _, ok := decodeFanout(b[:10]); ok {
		t.Fatal("short payload decoded")
	}
	var s seqSet
	for _, q := range []uint64{0, 63, 64, 5000} {
		if !s.add(q) {
			t.Fatalf("first add of %d reported a duplicate", q)
		}
	}
	if s.add(63) || s.add(5000) {
		t.Fatal("second add not reported as a duplicate")
	}
	s.reset()
	if !s.add(63) {
		t.Fatal("reset did not forget")
	}
}

func TestEnvelopeCID(t *testing.T) {
	cid, ok := envelopeCID([]byte(`{"id":"1","from":"a","cid":"run-1-2-3","type":"text","body":"x"}`))
	if !ok || string(cid) != "run-1-2-3" {
		t.Fatalf("cid %q %v", cid, ok)
	}
	for _, b := range []string{`{"id":"1"}`, `{"cid":"unterminated`} {
		if _, ok := envelopeCID([]byte(b)); ok {
			t.Fatalf("cid found in %s", b)
		}
	}
}

func TestAddressParsing(t *testing.T) {
	got, err := mqttAddrs("tcp://127.0.0.1:1, 127.0.0.1:2,ws://h:3/mqtt,")
	if err != nil || !slices.Equal(got, []string{"127.0.0.1:1", "127.0.0.1:2", "ws://h:3/mqtt"}) {
		t.Fatalf("mqttAddrs = %v, %v", got, err)
	}
	for _, bad := range []string{"", " , ", "nohost", "127.0.0.1:1,x"} {
		if _, err := mqttAddrs(bad); err == nil {
			t.Fatalf("mqttAddrs(%q) accepted", bad)
		}
	}
	for in, want := range map[string]string{"http://127.0.0.1:8080": "ws://127.0.0.1:8080/mqtt", "http://h:1/": "ws://h:1/mqtt", "ws://h:2/x": "ws://h:2/x"} {
		if got, err := wsURL(in); err != nil || got != want {
			t.Fatalf("wsURL(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := wsURL("https://h"); err == nil {
		t.Fatal("wsURL took https")
	}
}

func TestFreePortsAreDistinctAndFree(t *testing.T) {
	ports, err := FreePorts(5)
	if err != nil || len(ports) != 5 {
		t.Fatalf("%v %v", ports, err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p <= 0 || seen[p] {
			t.Fatalf("ports %v", ports)
		}
		seen[p] = true
	}
	// Released: binding one again works (nothing else should race for it
	// in a test process within microseconds).
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])))
	if err != nil {
		t.Fatalf("port %d not free after FreePorts: %v", ports[0], err)
	}
	l.Close()
}

func TestRunParsesScenarioFlags(t *testing.T) {
	ctx := context.Background()
	for _, args := range [][]string{
		{"dm", "--qos", "2"},
		{"dm", "--sweep", "abc"},
		{"rooms", "--rate", "0"},
		{"durable", "--mqtt", "nohost"},
		{"dm", "--pid", "x"},
		{"report"},
		{"history", "--page", "500", "--mqtt", "127.0.0.1:1"},
	} {
		var out, errb strings.Builder
		if err := run(ctx, args, &out, &errb); !errors.Is(err, errUsage) {
			t.Errorf("run(%v) = %v, want a usage error", args, err)
		}
	}
	var out, errb strings.Builder
	if err := run(ctx, []string{"freeport", "-n", "3"}, &out, &errb); err != nil || len(strings.Fields(out.String())) != 3 {
		t.Fatalf("freeport: %q %v", out.String(), err)
	}
}

func TestReportFromResults(t *testing.T) {
	dir := t.TempDir()
	mk := func(target string, p99s ...float64) *ScenarioResult {
		r := &ScenarioResult{Scenario: "dm", Target: target, Transport: "tcp", Params: map[string]any{"qos": 0, "pairs": 50}}
		var steps []Step
		for i, p := range p99s {
			steps = append(steps, Step{OfferedRate: float64(1000 * (i + 1)), Sent: 10, Delivered: 10, Rate: float64(1000 * (i + 1)),
				Latency: Summary{Count: 10, P50: p / 2, P99: p}, CPUPerMsg: 10 + float64(i)})
		}
		sw, _ := Sweep(context.Background(), []float64{1000, 2000, 3000}[:len(steps)], 10*time.Millisecond, 9,
			func(_ context.Context, r float64) (Step, error) { return steps[int(r/1000)-1], nil })
		r.Steps, r.Sweep = sw.Steps, &sw
		return r
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(WriteJSON(filepath.Join(dir, "edgechat__dm-qos0.json"), mk("edgechat", 1, 2, 30)))
	must(WriteJSON(filepath.Join(dir, "mosquitto__dm-qos0.json"), mk("mosquitto", 1, 20, 30)))
	must(WriteJSON(filepath.Join(dir, "mochi__dm-qos0.json"), mk("mochi", 1, 2, 3)))
	must(WriteJSON(filepath.Join(dir, "edgechat__idle.json"), &ConnsResult{Mode: "idle", Opened: 100, PerConnKB: 8}))
	must(WriteJSON(filepath.Join(dir, "mosquitto__idle.json"), &ConnsResult{Mode: "idle", Opened: 100, PerConnKB: 2}))
	must(WriteJSON(filepath.Join(dir, "edgechat__history.json"), &HistoryResult{Scenario: "history", Stored: 1000, PageSize: 50, SyncLimit: 1000, Newest: Summary{Count: 5, P99: 1.5}}))
	// Closed loop: pinned, and on both CPUs (its own rows, not mixed in).
	must(WriteJSON(filepath.Join(dir, "edgechat__throughput.json"), &LoadResult{Mode: "throughput", Senders: 200, InFlight: 4, Rate: 23000, ServerCPUPerMsg: 40,
		// 2 s intervals from the start: the first holds the 1 s warm-up.
		WarmupSeconds: 1, ProgressSeconds: 2, PerSecond: []int64{10, 50000, 10000, 60000, 52000}}))
	must(WriteJSON(filepath.Join(dir, "edgechat__throughput-both.json"), &LoadResult{Mode: "throughput", Senders: 200, InFlight: 4, Rate: 33000, ServerCPUPerMsg: 46}))
	must(os.WriteFile(filepath.Join(dir, "versions.txt"), []byte("Mosquitto: 2.0.11\n"), 0o644))
	cmds := filepath.Join(dir, "cmds.sh")
	must(os.WriteFile(cmds, []byte("bench dm --anon\n"), 0o644))
	out := filepath.Join(dir, "perf", "README.md")
	must(WriteReport(ReportConfig{Dir: dir, Out: out, Commands: cmds, Note: "loaded machine"}))
	b, err := os.ReadFile(out)
	must(err)
	md := string(b)
	for _, want := range []string{
		"loaded machine", "Mosquitto: 2.0.11", "bench dm --anon",
		// edgechat passed 2000, Mosquitto 1000, mochi 3000.
		"| dm-qos0: highest msg/s with p99 ≤ 10ms, no loss | 2,000 | 1,000 | 3,000 | — | 2.00× | 0.67× |",
		// idle: lower is better, so Mosquitto's 2 KB against 8 KB is 0.25×.
		"| 8.00 KB | 2.00 KB | — | — | 0.25× | — |",
		"history (1,000 stored): newest page of 50, p99 | 1.50 ms",
		"![dm-qos0: delivered vs offered rate](dm-qos0-throughput.svg)",
		"| durable, closed loop (200 senders × 4 in flight): committed msg/s | 23,000 |",
		"| durable, closed loop on both CPUs, not pinned (200 senders × 4 in flight): committed msg/s | 33,000 |",
		"| durable, closed loop on both CPUs: server CPU per committed message | 46.0 µs |",
		"| durable, closed loop: committed msg/s in the median 2s window | 25,000 |",
		"| durable, closed loop: committed msg/s in the slowest 2s window | 5,000 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "on both CPUs: committed msg/s in") {
		t.Error("window rows for a run without progress intervals")
	}
	// A hand-written section after the marker survives a rewrite; the
	// generated part is not repeated.
	must(os.WriteFile(out, append(b, []byte("\n"+keptMarker+"\n\n## 2026-12-03: group\n\nby hand\n")...), 0o644))
	must(WriteReport(ReportConfig{Dir: dir, Out: out, Commands: cmds, Note: "loaded machine"}))
	b2, err := os.ReadFile(out)
	must(err)
	if !strings.HasSuffix(string(b2), keptMarker+"\n\n## 2026-12-03: group\n\nby hand\n") || strings.Count(string(b2), "## Ratios") != 1 {
		t.Fatalf("kept section lost or doubled:\n%s", b2[max(0, len(b2)-400):])
	}
	for _, f := range []string{"dm-qos0-latency.svg", "dm-qos0-throughput.svg"} {
		svg, err := os.ReadFile(filepath.Join(dir, "perf", f))
		if err != nil || !strings.Contains(string(svg), "Mosquitto p99") && f == "dm-qos0-latency.svg" {
			t.Fatalf("%s: %v", f, err)
		}
	}
}

// TestDurableChartsPairPubackPercentiles: the durable latency chart
// draws its p50 and its p99 from the same distribution (the PUBACK's,
// the sweep's bar), named so, and its throughput chart says it counts
// acknowledged messages: the delivery p50 beside the PUBACK p99 read as
// one distribution whose p50 could exceed its p99.
func TestDurableChartsPairPubackPercentiles(t *testing.T) {
	r := &ScenarioResult{Scenario: "durable", Steps: []Step{{OfferedRate: 1000, Sent: 10, Delivered: 10, Rate: 1000, BarOnAck: true,
		Latency: Summary{Count: 10, P50: 30, P99: 40}, Ack: &Summary{Count: 10, P50: 2, P99: 5}}}}
	lat, tput := compareCharts("durable", map[string]*ScenarioResult{"edgechat": r}, 10*time.Millisecond)
	var p50, p99 *Series
	for i, s := range lat.Series {
		switch s.Name {
		case "edgechat (1 node) PUBACK p50":
			p50 = &lat.Series[i]
		case "edgechat (1 node) PUBACK p99":
			p99 = &lat.Series[i]
		}
	}
	if p50 == nil || p99 == nil {
		t.Fatalf("series %+v", lat.Series)
	}
	if p50.Points[0].Y != 2 || p99.Points[0].Y != 5 {
		t.Fatalf("PUBACK p50 %v, p99 %v; want 2 and 5 (the step's PUBACK percentiles)", p50.Points, p99.Points)
	}
	if !strings.Contains(lat.Title, "PUBACK") || !strings.Contains(tput.Title, "acknowledged") || !strings.Contains(tput.YLabel, "acknowledged") {
		t.Fatalf("titles %q / %q, y %q", lat.Title, tput.Title, tput.YLabel)
	}
}

// TestCommonRateSkipsStepsWithUnsentPublishes: the rate the report
// compares CPU and latency at is one every result ran in full.
func TestCommonRateSkipsStepsWithUnsentPublishes(t *testing.T) {
	ok := func(rate float64) Step { return Step{OfferedRate: rate, Sent: 10, Latency: Summary{Count: 10}} }
	a := &ScenarioResult{Steps: []Step{ok(1000), ok(2000)}}
	b := &ScenarioResult{Steps: []Step{ok(1000), ok(2000)}}
	b.Steps[1].Unsent = 5
	if got := commonRate(map[string]*ScenarioResult{"edgechat": a, "edgechat3": b}); got != 1000 {
		t.Fatalf("common rate %v, want 1000 (2000 left publishes unsent on one)", got)
	}
}
