package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// ScenarioResult is the outcome of dm, rooms or durable: one step at a
// fixed rate, or the steps of a sweep.
type ScenarioResult struct {
	Scenario  string         `json:"scenario"`
	Target    string         `json:"target,omitempty"` // a label: the broker measured
	Transport string         `json:"transport"`        // tcp or ws
	Params    map[string]any `json:"params"`
	Steps     []Step         `json:"steps"`
	Sweep     *SweepResult   `json:"sweep,omitempty"`
}

// scenarioFlags are the flags dm, rooms and durable share.
type scenarioFlags struct {
	rate, sweep             string
	p99Max                  time.Duration
	duration, warmup, drain time.Duration
	size, inflight          int
	ws                      bool
	target                  string
	stopAfter               int
}

func (s *scenarioFlags) register(fs *flag.FlagSet, defSize int) {
	fs.StringVar(&s.rate, "rate", "1000", "total publishes per second (fixed rate, open loop)")
	fs.StringVar(&s.sweep, "sweep", "", "rate sweep instead of --rate: 1000,2000,5000 or START/FACTOR/MAX (e.g. 1000/2/64000); stops at the first rate over --p99-max or with loss")
	fs.IntVar(&s.stopAfter, "stop-after", 1, "the sweep stops after this many steps in a row over the bar")
	fs.DurationVar(&s.p99Max, "p99-max", 10*time.Millisecond, "the sweep's bar: highest rate whose p99 stays at or under this, with nothing lost")
	fs.DurationVar(&s.duration, "duration", 10*time.Second, "measured time per rate")
	fs.DurationVar(&s.warmup, "warmup", 2*time.Second, "unmeasured time before it, per rate")
	fs.DurationVar(&s.drain, "drain", 3*time.Second, "how long to wait for the last deliveries")
	fs.IntVar(&s.size, "size", defSize, "payload (dm, rooms) or message body (durable) bytes")
	fs.IntVar(&s.inflight, "inflight", 16, "QoS 1: outstanding publishes per publisher")
	fs.BoolVar(&s.ws, "ws", false, "MQTT over WebSocket: the node's /mqtt at --http (or give ws:// URLs in --mqtt)")
	fs.StringVar(&s.target, "target", "", "label of the broker measured, for the report (e.g. mosquitto)")
}

// rates returns the rates to run: the sweep's or the one fixed rate.
func (s *scenarioFlags) rates() ([]float64, error) {
	if s.sweep != "" {
		r, err := ParseSweep(s.sweep)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		return r, nil
	}
	r, err := strconv.ParseFloat(s.rate, 64)
	if err != nil || !(r > 0) {
		return nil, fmt.Errorf("%w: --rate must be a positive number", errUsage)
	}
	return []float64{r}, nil
}

// addrs resolves --mqtt (and --ws) to the list of addresses to dial.
func (s *scenarioFlags) addrs(c *common) ([]string, error) {
	if s.ws && !strings.Contains(c.mqtt, "ws://") {
		var out []string
		for _, h := range strings.Split(c.httpURL, ",") {
			u, err := wsURL(strings.TrimSpace(h))
			if err != nil {
				return nil, fmt.Errorf("%w: %v", errUsage, err)
			}
			out = append(out, u)
		}
		return out, nil
	}
	a, err := mqttAddrs(c.mqtt)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	return a, nil
}

func transportOf(addrs []string) string {
	if isWS(addrs[0]) {
		return "ws"
	}
	return "tcp"
}

// runSteps runs step at each rate (a sweep when s.sweep is set).
func runSteps(ctx context.Context, s *scenarioFlags, rates []float64, step func(context.Context, float64) (Step, error), res *ScenarioResult) error {
	if s.sweep == "" {
		st, err := step(ctx, rates[0])
		if err != nil {
			return err
		}
		res.Steps = []Step{st}
		return nil
	}
	sw, err := Sweep(ctx, rates, s.p99Max, s.stopAfter, step)
	res.Steps = sw.Steps
	res.Sweep = &sw
	return err
}

// PrintScenario writes the summary table of dm, rooms or durable.
func PrintScenario(w io.Writer, r *ScenarioResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "scenario\t%s over %s %s\n", r.Scenario, r.Transport, paramsLine(r.Params))
	if r.Target != "" {
		fmt.Fprintf(tw, "target\t%s\n", r.Target)
	}
	fmt.Fprintf(tw, "rate/s\tsent\tdelivered\tlost\tdup\tfailed\tlate\tdeliv/s\tp50\tp90\tp99\tp99.9\tmax ms\tack p50\tack p99\tCPU µs/msg\tgen µs/msg\tCPU %%\tRSS MB\n")
	for _, s := range r.Steps {
		ack50, ack99 := "-", "-"
		if s.Ack != nil {
			ack50, ack99 = fmt.Sprintf("%.2f", s.Ack.P50), fmt.Sprintf("%.2f", s.Ack.P99)
		}
		fmt.Fprintf(tw, "%.0f\t%d\t%d\t%d\t%d\t%d\t%d\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%s\t%s\t%.1f\t%.1f\t%.0f\t%.1f\n",
			s.OfferedRate, s.Sent, s.Delivered, s.Lost, s.Duplicates, s.Failed, s.Late, s.Rate,
			s.Latency.P50, s.Latency.P90, s.Latency.P99, s.Latency.P999, s.Latency.Max, ack50, ack99,
			s.CPUPerMsg, s.GenCPUPerMsg, s.CPUPercent, float64(s.RSSKB)/1024)
	}
	if r.Sweep != nil {
		bar := "p99"
		if len(r.Steps) > 0 && r.Steps[0].BarOnAck {
			bar = "PUBACK p99"
		}
		fmt.Fprintf(tw, "sweep\thighest rate with %s ≤ %.1f ms and nothing lost: %.0f/s; peak %.0f delivered/s with nothing lost", bar, r.Sweep.P99MaxMs, r.Sweep.Best, r.Sweep.Peak)
		if r.Sweep.Stopped != "" {
			fmt.Fprintf(tw, " (stopped %s)", r.Sweep.Stopped)
		}
		fmt.Fprintln(tw)
	}
	for _, s := range r.Steps {
		for e, n := range s.Errors {
			fmt.Fprintf(tw, "error ×%d at %.0f/s\t%s\n", n, s.OfferedRate, e)
		}
		if s.Unsent > 0 {
			fmt.Fprintf(tw, "unsent at %.0f/s\t%d publishes due in the step were still waiting for a slot --drain after its end\n", s.OfferedRate, s.Unsent)
		}
		if s.Reordered > 0 || s.AckOutOfOrder > 0 || s.StrayAcks > 0 {
			fmt.Fprintf(tw, "order at %.0f/s\t%d deliveries after a later one of their sender, %d PUBACKs out of order, %d for nothing in flight\n",
				s.OfferedRate, s.Reordered, s.AckOutOfOrder, s.StrayAcks)
		}
	}
	return tw.Flush()
}

func paramsLine(p map[string]any) string {
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%v", k, p[k])
	}
	return strings.TrimSpace(b.String())
}

// RateChart is latency percentiles against offered rate for one run.
func RateChart(r *ScenarioResult) Chart {
	c := Chart{Title: fmt.Sprintf("%s: latency against offered rate", r.Scenario), XLabel: "offered publishes/s", YLabel: "latency (ms)"}
	for _, p := range []struct {
		name string
		get  func(Summary) float64
	}{{"p50", func(s Summary) float64 { return s.P50 }}, {"p99", func(s Summary) float64 { return s.P99 }}, {"p99.9", func(s Summary) float64 { return s.P999 }}} {
		s := Series{Name: p.name}
		for _, st := range r.Steps {
			if st.Latency.Count > 0 {
				s.Points = append(s.Points, Point{X: st.OfferedRate, Y: p.get(st.Latency)})
			}
		}
		c.Series = append(c.Series, s)
	}
	return c
}
