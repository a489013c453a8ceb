package main

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgechat/edgechat/internal/testutil"
)

func durs(ns ...int) []time.Duration {
	out := make([]time.Duration, len(ns))
	for i, n := range ns {
		out[i] = time.Duration(n) * time.Millisecond
	}
	return out
}

func TestPercentileNearestRank(t *testing.T) {
	// 1..100 ms: the p-th percentile by nearest rank is exactly p ms.
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	ds := durs(hundred...)
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{
		{0, 1 * time.Millisecond}, {1, 1 * time.Millisecond}, {50, 50 * time.Millisecond},
		{90, 90 * time.Millisecond}, {99, 99 * time.Millisecond}, {99.5, 100 * time.Millisecond},
		{100, 100 * time.Millisecond}, {-3, 1 * time.Millisecond}, {250, 100 * time.Millisecond},
	} {
		if got := Percentile(ds, c.p); got != c.want {
			t.Errorf("Percentile(1..100, %v) = %v, want %v", c.p, got, c.want)
		}
	}
	// Small samples: p50 of 4 values is the 2nd, p99 the 4th.
	four := durs(10, 20, 30, 40)
	if got := Percentile(four, 50); got != 20*time.Millisecond {
		t.Errorf("p50 of 4 = %v, want 20ms", got)
	}
	if got := Percentile(four, 99); got != 40*time.Millisecond {
		t.Errorf("p99 of 4 = %v, want 40ms", got)
	}
	if got := Percentile(nil, 50); got != 0 {
		t.Errorf("Percentile(nil) = %v, want 0", got)
	}
	one := durs(7)
	if got := Percentile(one, 99.9); got != 7*time.Millisecond {
		t.Errorf("p99.9 of one = %v", got)
	}
}

func TestSummarizeSortsAndSummarizes(t *testing.T) {
	ds := durs(5, 1, 4, 2, 3, 10, 9, 8, 7, 6) // unsorted on purpose
	s := Summarize(ds)
	want := Summary{Count: 10, Min: 1, Mean: 5.5, P50: 5, P90: 9, P99: 10, P999: 10, Max: 10}
	if s != want {
		t.Fatalf("Summarize = %+v, want %+v", s, want)
	}
	if (Summarize(nil) != Summary{}) {
		t.Fatal("Summarize(nil) not zero")
	}
	// Sub-millisecond values keep microsecond precision.
	if got := Summarize([]time.Duration{1500 * time.Microsecond}).P50; got != 1.5 {
		t.Fatalf("P50 = %v, want 1.5", got)
	}
}

func TestRecorderConcurrent(t *testing.T) {
	var r Recorder
	done := make(chan struct{})
	for g := range 4 {
		go func() {
			for i := range 250 {
				r.Add(time.Duration(g*1000+i) * time.Microsecond)
			}
			done <- struct{}{}
		}()
	}
	for range 4 {
		<-done
	}
	s := r.Sorted()
	if len(s) != 1000 || r.Len() != 1000 {
		t.Fatalf("recorded %d, want 1000", len(s))
	}
	for i := 1; i < len(s); i++ {
		if s[i] < s[i-1] {
			t.Fatalf("Sorted not sorted at %d", i)
		}
	}
}

func TestPacerSchedule(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clk := testutil.NewFakeClock(t0)
	p, err := NewPacer(1000, 0, clk)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 5 {
		due, err := p.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := t0.Add(time.Duration(i) * time.Millisecond); !due.Equal(want) {
			t.Fatalf("event %d due %v, want %v", i, due.Sub(t0), want.Sub(t0))
		}
		if !clk.Now().Equal(due) {
			t.Fatalf("event %d released at %v, want at its due time %v", i, clk.Now().Sub(t0), due.Sub(t0))
		}
	}
	// The first event is immediate, then one sleep of 1ms per event.
	slept := clk.Slept()
	if len(slept) != 4 {
		t.Fatalf("slept %v, want 4 sleeps", slept)
	}
	for _, d := range slept {
		if d != time.Millisecond {
			t.Fatalf("slept %v, want 1ms each", slept)
		}
	}

	// Open loop: when the caller falls 10ms behind, the next 10 events are
	// released at once (no sleeping) and keep their original slots.
	clk.Advance(10 * time.Millisecond)
	for i := 5; i < 15; i++ {
		due, err := p.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := t0.Add(time.Duration(i) * time.Millisecond); !due.Equal(want) {
			t.Fatalf("late event %d due %v, want %v", i, due.Sub(t0), want.Sub(t0))
		}
	}
	if slept := clk.Slept(); len(slept) != 0 {
		t.Fatalf("pacer slept %v while behind schedule", slept)
	}
	if p.Released() != 15 {
		t.Fatalf("Released = %d, want 15", p.Released())
	}
}

func TestPacerNoDriftAndOffset(t *testing.T) {
	t0 := time.Unix(1000, 0)
	clk := testutil.NewFakeClock(t0)
	p, err := NewPacer(3, 100*time.Millisecond, clk) // 333.33ms apart: a float step would drift
	if err != nil {
		t.Fatal(err)
	}
	var due time.Time
	for range 3001 {
		if due, err = p.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	// Event 3000 is exactly 1000 s after the first, which starts at the offset.
	if want := t0.Add(100*time.Millisecond + 1000*time.Second); due.Sub(want).Abs() > time.Microsecond {
		t.Fatalf("event 3000 due at %v, want %v", due.Sub(t0), want.Sub(t0))
	}
}

func TestPacerErrors(t *testing.T) {
	for _, r := range []float64{0, -1, math.NaN()} {
		if _, err := NewPacer(r, 0, testutil.NewFakeClock(time.Time{})); !errors.Is(err, ErrBadRate) {
			t.Errorf("NewPacer(%v) err = %v, want ErrBadRate", r, err)
		}
	}
	p, _ := NewPacer(10, 0, testutil.NewFakeClock(time.Time{}))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait on a cancelled ctx = %v", err)
	}
	if p.Released() != 0 {
		t.Fatal("a cancelled Wait released an event")
	}
}

const procStatus = `Name:	edgechat
Umask:	0022
State:	S (sleeping)
Tgid:	4242
VmPeak:	 2510260 kB
VmSize:	 2443700 kB
VmHWM:	  352312 kB
VmRSS:	  348108 kB
RssAnon:	  330000 kB
Threads:	12
`

func TestParseVmRSS(t *testing.T) {
	kb, err := ParseVmRSS(strings.NewReader(procStatus))
	if err != nil || kb != 348108 {
		t.Fatalf("ParseVmRSS = %d, %v; want 348108", kb, err)
	}
	if _, err := ParseVmRSS(strings.NewReader("Name:\tx\nVmSize:\t1 kB\n")); !errors.Is(err, ErrNoField) {
		t.Fatalf("missing VmRSS: err = %v, want ErrNoField", err)
	}
	for _, bad := range []string{"VmRSS:\tlots kB\n", "VmRSS:\t12 MB\n", "VmRSS:\n", "VmRSS:\t-5 kB\n"} {
		if _, err := ParseVmRSS(strings.NewReader(bad)); err == nil {
			t.Errorf("ParseVmRSS(%q) accepted", bad)
		}
	}
}

func TestReadRSSOwnProcess(t *testing.T) {
	kb, err := ReadRSS(osGetpid())
	if err != nil || kb <= 0 {
		t.Fatalf("ReadRSS(self) = %d, %v", kb, err)
	}
	if _, err := ReadRSS(-7); err == nil {
		t.Fatal("ReadRSS of a bogus pid succeeded")
	}
}

func TestParseMaxOpenFiles(t *testing.T) {
	limits := `Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            1024                 524288               files
Max locked memory         8388608              8388608              bytes
`
	n, err := ParseMaxOpenFiles(strings.NewReader(limits))
	if err != nil || n != 1024 {
		t.Fatalf("ParseMaxOpenFiles = %d, %v; want 1024", n, err)
	}
	n, err = ParseMaxOpenFiles(strings.NewReader("Max open files            unlimited            unlimited            files\n"))
	if err != nil || n != -1 {
		t.Fatalf("unlimited = %d, %v; want -1", n, err)
	}
	if _, err := ParseMaxOpenFiles(strings.NewReader("Max cpu time 1 1 s\n")); !errors.Is(err, ErrNoField) {
		t.Fatalf("missing line: %v", err)
	}
}

func TestParseCPUTime(t *testing.T) {
	// comm with a space and a parenthesis; utime 250 and stime 50 ticks.
	stat := "4242 (edge chat) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 12 0 100 2443700 87027 18446744073709551615\n"
	d, err := ParseCPUTime([]byte(stat))
	if err != nil || d != 3*time.Second {
		t.Fatalf("ParseCPUTime = %v, %v; want 3s", d, err)
	}
	if _, err := ParseCPUTime([]byte("4242 (x) S 1 2")); err == nil {
		t.Fatal("short stat accepted")
	}
	if _, err := ReadCPUTime(osGetpid()); err != nil {
		t.Fatalf("ReadCPUTime(self): %v", err)
	}
}

func TestRaiseNoFile(t *testing.T) {
	got, err := RaiseNoFile(64) // always below any real limit: no change needed
	if err != nil || got < 64 {
		t.Fatalf("RaiseNoFile(64) = %d, %v", got, err)
	}
}

// svgDoc is the part of an SVG document the tests look at.
type svgDoc struct {
	XMLName xml.Name `xml:"svg"`
	Texts   []string `xml:"text"`
	Groups  []struct {
		Title    string `xml:"title"`
		Polyline struct {
			Points string `xml:"points,attr"`
		} `xml:"polyline"`
	} `xml:"g"`
}

func TestWriteSVGIsValidAndHoldsTheSeries(t *testing.T) {
	c := Chart{
		Title: "RSS <vs> conns & more", XLabel: "connections", YLabel: "RSS (MB)",
		Series: []Series{
			{Name: "server", Points: []Point{{0, 50}, {1000, 80}, {2000, 110}}},
			{Name: "other \"one\"", Points: []Point{{0, 10}, {2000, 20}}},
		},
	}
	var buf bytes.Buffer
	if err := WriteSVG(&buf, c); err != nil {
		t.Fatal(err)
	}
	// Well-formed XML all the way through.
	dec := xml.NewDecoder(bytes.NewReader(buf.Bytes()))
	for {
		if _, err := dec.Token(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v\n%s", err, buf.String())
		}
	}
	var doc svgDoc
	if err := xml.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Groups) != 2 {
		t.Fatalf("%d series groups, want 2", len(doc.Groups))
	}
	if doc.Groups[0].Title != "server" || doc.Groups[1].Title != `other "one"` {
		t.Fatalf("series titles %q, %q", doc.Groups[0].Title, doc.Groups[1].Title)
	}
	if n := len(strings.Fields(doc.Groups[0].Polyline.Points)); n != 3 {
		t.Fatalf("first series has %d points, want 3", n)
	}
	if !strings.Contains(strings.Join(doc.Texts, "|"), "RSS <vs> conns & more") {
		t.Fatalf("title missing from texts %q", doc.Texts)
	}
	// Higher y is drawn higher up (smaller SVG y): 110 MB above 50 MB.
	pts := strings.Fields(doc.Groups[0].Polyline.Points)
	y := func(p string) string { return p[strings.IndexByte(p, ',')+1:] }
	if !(parseF(t, y(pts[2])) < parseF(t, y(pts[0]))) {
		t.Fatalf("y axis upside down: %v", pts)
	}
}

func TestWriteSVGRejectsBadInput(t *testing.T) {
	if err := WriteSVG(io.Discard, Chart{Series: []Series{{Name: "empty"}}}); !errors.Is(err, ErrEmptyChart) {
		t.Fatalf("empty chart: %v", err)
	}
	var buf bytes.Buffer
	err := WriteSVG(&buf, Chart{Series: []Series{{Name: "nan", Points: []Point{{1, math.NaN()}}}}})
	if err == nil || buf.Len() != 0 {
		t.Fatalf("NaN point: err %v, wrote %d bytes", err, buf.Len())
	}
}

func TestLoadChartUsesNinesAxis(t *testing.T) {
	r := &LoadResult{Mode: "latency", Senders: 2, Rate: 10, pubackSorted: durs(1, 2, 3, 4, 5, 6, 7, 8, 9, 100)}
	c := LoadChart(r)
	if len(c.Series) != 1 || c.Series[0].Name != "publish→PUBACK" {
		t.Fatalf("series %+v", c.Series)
	}
	pts := c.Series[0].Points
	last := pts[len(pts)-1]
	if last.X != 5 || last.Y != 100 {
		t.Fatalf("max point = %+v, want (5, 100)", last)
	}
	if got := ninesX(99); math.Abs(got-2) > 1e-9 {
		t.Fatalf("ninesX(99) = %v, want 2", got)
	}
	var buf bytes.Buffer
	if err := WriteSVG(&buf, c); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), ">99.9%<") {
		t.Fatal("nines tick labels missing")
	}
}

func TestNiceTicks(t *testing.T) {
	ts := niceTicks(0, 9.3)
	if ts[0].Value != 0 || ts[len(ts)-1].Value < 9.3 {
		t.Fatalf("ticks %+v do not cover [0, 9.3]", ts)
	}
	for _, tk := range niceTicks(0, 0.7) {
		if strings.Contains(tk.Label, "0000000") {
			t.Fatalf("float noise in label %q", tk.Label)
		}
	}
}

func TestMessagePayloadRoundTrip(t *testing.T) {
	sent := time.Unix(1700000000, 123456789)
	p := messagePayload("run-1-2", sent, 100)
	if !bytes.HasPrefix(p, []byte(`{"cid":"run-1-2","type":"text","body":"`)) {
		t.Fatalf("payload %s", p)
	}
	// The server adds fields around it; the body survives.
	delivered := `{"id":"7211938138472448001","from":"a","to":"b","cid":"run-1-2","type":"text",` + string(p[bytes.Index(p, []byte(`"body"`)):])
	got, ok := sentTime([]byte(delivered))
	if !ok || !got.Equal(sent) {
		t.Fatalf("sentTime = %v, %v; want %v", got, ok, sent)
	}
	if _, ok := sentTime([]byte(`{"body":"hello"}`)); ok {
		t.Fatal("sentTime accepted a foreign body")
	}
	// The body is padded to the requested size.
	body := string(p[bytes.Index(p, []byte(`"body":"`))+8 : len(p)-2])
	if len(body) != 100 {
		t.Fatalf("body is %d bytes, want 100", len(body))
	}
}

func TestArgsValidation(t *testing.T) {
	ctx := context.Background()
	for _, args := range [][]string{
		nil,
		{"nope"},
		{"conns", "-n", "0"},
		{"conns", "--keepalive", "0"},
		{"conns", "--prefix", "Bad"},
		{"latency", "--rate", "0"},
		{"latency", "--senders", "0"},
		{"throughput", "--size", "9000"},
		{"throughput", "extra"},
		{"conns", "--mqtt", "no-port"},
		{"latency", "--bogus"},
	} {
		err := run(ctx, args, io.Discard, io.Discard)
		if !errors.Is(err, errUsage) {
			t.Errorf("run(%q) = %v, want a usage error", args, err)
		}
	}
	if err := run(ctx, []string{"latency", "-h"}, io.Discard, io.Discard); err != nil {
		t.Errorf("-h: %v", err)
	}
}

func TestMQTTAddr(t *testing.T) {
	for in, want := range map[string]string{"tcp://127.0.0.1:1883": "127.0.0.1:1883", "localhost:1": "localhost:1", "mqtt://h:2": "h:2"} {
		if got, err := mqttAddr(in); err != nil || got != want {
			t.Errorf("mqttAddr(%q) = %q, %v", in, got, err)
		}
	}
}

func TestPrintTables(t *testing.T) {
	var buf bytes.Buffer
	_ = PrintConns(&buf, &ConnsResult{Requested: 10, Opened: 10, Users: 2, RSSBeforeKB: 1024, RSSAfterKB: 2048, RSSSettledKB: 2000, PerConnKB: 97.6})
	if !strings.Contains(buf.String(), "RSS per connection  97.6 KB settled") {
		t.Fatalf("conns table:\n%s", buf.String())
	}
	buf.Reset()
	_ = PrintLoad(&buf, &LoadResult{Mode: "latency", Rate: 999, PubAck: Summary{P50: 1.25, P99: 3.5, Count: 9}, Errors: map[string]int{"boom": 2}})
	for _, want := range []string{"999 msg/s", "p50 1.25", "p99 3.50", "error ×2", "boom"} {
		if !strings.Contains(buf.String(), want) {
			t.Fatalf("load table lacks %q:\n%s", want, buf.String())
		}
	}
}

func TestSlope(t *testing.T) {
	// 30 KB per connection on top of 40 MB, plus a settle sample that
	// repeats the last count and must not bend the fit.
	samples := []ConnSample{{0, 40000, 0}, {1000, 70000, 0}, {2000, 100000, 0}, {3000, 130000, 0}, {3000, 190000, 0}}
	if got := Slope(samples); math.Abs(got-30) > 1e-9 {
		t.Fatalf("Slope = %v, want 30", got)
	}
	if got := Slope(samples[:1]); got != 0 {
		t.Fatalf("Slope of one sample = %v", got)
	}
}

func TestParseMetricsAndBatchAverage(t *testing.T) {
	text := `# HELP edgechat_raft_batch_commands Commands per entry.
# TYPE edgechat_raft_batch_commands histogram
edgechat_raft_batch_commands_bucket{le="1"} 3
edgechat_raft_batch_commands_sum 52143
edgechat_raft_batch_commands_count 27007
go_goroutines 41
`
	m, err := ParseMetrics(strings.NewReader(text), raftMetrics...)
	if err != nil || m["edgechat_raft_batch_commands_sum"] != 52143 || m["edgechat_raft_batch_commands_count"] != 27007 || len(m) != 2 {
		t.Fatalf("ParseMetrics = %v, %v", m, err)
	}
	after := map[string]float64{"edgechat_raft_batch_commands_sum": 52143 + 1000, "edgechat_raft_batch_commands_count": 27007 + 100}
	if got := batchAverage(m, after); got != 10 {
		t.Fatalf("batchAverage = %v, want 10", got)
	}
	if batchAverage(nil, after) != 0 || batchAverage(m, m) != 0 {
		t.Fatal("batchAverage without a window is not 0")
	}
	if _, err := ParseMetrics(strings.NewReader("edgechat_raft_batch_commands_sum x\n"), raftMetrics...); err == nil {
		t.Fatal("bad value accepted")
	}
}

// TestPacerBehind: a pacer is behind when its next event is already due.
func TestPacerBehind(t *testing.T) {
	t0 := time.Unix(1000, 0)
	clk := testutil.NewFakeClock(t0)
	p, err := NewPacer(1000, 0, clk) // events 1 ms apart from t0
	if err != nil {
		t.Fatal(err)
	}
	if !p.Behind() {
		t.Fatal("event 0 is due now: behind")
	}
	if _, err := p.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p.Behind() {
		t.Fatal("event 1 is 1 ms away: not behind")
	}
	clk.Advance(5 * time.Millisecond)
	if !p.Behind() {
		t.Fatal("event 1 was due 4 ms ago: behind")
	}
}

func TestWriteSamplesSortedBySendTime(t *testing.T) {
	path := filepath.Join(t.TempDir(), "samples")
	if err := writeSamples(path, [][2]int64{{30, 1}, {10, 2}, {20, 3}}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := "10 2\n20 3\n30 1\n"; string(got) != want {
		t.Errorf("samples file %q, want %q", got, want)
	}
}

// TestPacerDueBeforeAndUnrelease: the events not yet released that are
// due before a time, as a sender that stops behind its schedule counts
// what it never sent.
func TestPacerDueBeforeAndUnrelease(t *testing.T) {
	t0 := time.Unix(1000, 0)
	p, err := NewPacer(3, 0, testutil.NewFakeClock(t0)) // due at 0, 333.3, 666.7, 1000 ms, ...
	if err != nil {
		t.Fatal(err)
	}
	if n := p.DueBefore(t0.Add(time.Second)); n != 3 {
		t.Fatalf("due before 1 s: %d, want 3 (the one at 1 s is not before it)", n)
	}
	if n := p.DueBefore(t0); n != 0 {
		t.Fatalf("due before the start: %d", n)
	}
	if _, err := p.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := p.DueBefore(t0.Add(time.Second + time.Nanosecond)); n != 3 {
		t.Fatalf("after one release, due before 1 s + 1 ns: %d, want 3", n)
	}
	p.Unrelease()
	if p.Released() != 0 || p.DueBefore(t0.Add(time.Second)) != 3 {
		t.Fatalf("after Unrelease: released %d, due before 1 s %d", p.Released(), p.DueBefore(t0.Add(time.Second)))
	}
}
