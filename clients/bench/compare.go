package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// ReportConfig says where bench-compare's results are and where the
// report goes.
type ReportConfig struct {
	Dir      string // {target}__{name}.json files, versions.txt
	Out      string // Markdown file; SVG charts are written next to it
	Commands string // file with the commands that were run
	Note     string // conditions of the run
}

// The targets of a comparison, in column order, and their labels.
var compareTargets = []struct{ id, label string }{
	{"edgechat", "edgechat (1 node)"},
	{"mosquitto", "Mosquitto"},
	{"mochi", "plain mochi-mqtt"},
	{"edgechat3", "edgechat (3 nodes)"},
}

// throughputBothName names the result files of the closed-loop run in
// which neither the broker nor the generator is pinned: the machine's
// whole capacity, as a deployment on this box would have it.
const throughputBothName = "throughput-both"

// compareData is every result file of a directory, by target and name.
type compareData struct {
	idle    map[string]*ConnsResult
	scen    map[string]map[string]*ScenarioResult // name → target → result
	history map[string]*HistoryResult
	// throughput: closed-loop durable runs (bench throughput) with the
	// broker on CPU 0; throughputBoth: the same with the broker and the
	// generator free to use both CPUs (files named "throughput-both").
	throughput, throughputBoth map[string]*LoadResult
	names                      []string // scenario names in file order
}

func loadCompare(dir string) (*compareData, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*__*.json"))
	if err != nil {
		return nil, err
	}
	slices.Sort(files)
	d := &compareData{idle: map[string]*ConnsResult{}, scen: map[string]map[string]*ScenarioResult{}, history: map[string]*HistoryResult{}, throughput: map[string]*LoadResult{}, throughputBoth: map[string]*LoadResult{}}
	for _, f := range files {
		target, name, _ := strings.Cut(strings.TrimSuffix(filepath.Base(f), ".json"), "__")
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var probe struct {
			Mode     string `json:"mode"`
			Scenario string `json:"scenario"`
		}
		if err := json.Unmarshal(b, &probe); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		switch {
		case probe.Mode == "idle" || probe.Mode == "conns":
			var r ConnsResult
			if err := json.Unmarshal(b, &r); err != nil {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			d.idle[target] = &r
		case probe.Mode == "throughput":
			var r LoadResult
			if err := json.Unmarshal(b, &r); err != nil {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			if name == throughputBothName {
				d.throughputBoth[target] = &r
			} else {
				d.throughput[target] = &r
			}
		case probe.Scenario == "history":
			var r HistoryResult
			if err := json.Unmarshal(b, &r); err != nil {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			d.history[target] = &r
		case probe.Scenario != "":
			var r ScenarioResult
			if err := json.Unmarshal(b, &r); err != nil {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			if d.scen[name] == nil {
				d.scen[name] = map[string]*ScenarioResult{}
				d.names = append(d.names, name)
			}
			d.scen[name][target] = &r
		}
	}
	return d, nil
}

// bestRate is the sweep's best (or the fixed rate when it passed).
func bestRate(r *ScenarioResult, p99Max time.Duration) float64 {
	if r.Sweep != nil {
		return r.Sweep.Best
	}
	if len(r.Steps) == 1 && r.Steps[0].OK(p99Max) {
		return r.Steps[0].OfferedRate
	}
	return 0
}

// commonRate is the highest offered rate that every result ran without
// losing a message (nor leaving one unsent: its latency would be
// missing): the fair point to compare CPU and latency at (on a loaded
// machine no rate may pass the latency bar for every broker).
func commonRate(rs map[string]*ScenarioResult) float64 {
	best := -1.0
	for _, r := range rs {
		top := 0.0
		for _, s := range r.Steps {
			if s.Lost == 0 && s.Failed == 0 && s.Unsent == 0 && s.Latency.Count > 0 {
				top = math.Max(top, s.OfferedRate)
			}
		}
		if best < 0 || top < best {
			best = top
		}
	}
	return math.Max(best, 0)
}

// peak is the highest delivered rate without loss.
func peak(r *ScenarioResult) float64 {
	if r.Sweep != nil {
		return r.Sweep.Peak
	}
	if len(r.Steps) == 1 && r.Steps[0].Lost == 0 && r.Steps[0].Failed == 0 {
		return r.Steps[0].Rate
	}
	return 0
}

func stepAt(r *ScenarioResult, rate float64) *Step {
	for i := range r.Steps {
		if r.Steps[i].OfferedRate == rate {
			return &r.Steps[i]
		}
	}
	return nil
}

// row is one line of the ratio table; higher says which way is better.
type row struct {
	what   string
	vals   map[string]float64 // target → value; absent: not measured
	marks  map[string]string  // target → a caveat printed after the value
	unit   string
	higher bool
}

func (rw row) cell(t string) string {
	v, ok := rw.vals[t]
	if !ok || math.IsNaN(v) {
		return "—"
	}
	return fmtNum(v) + rw.unit + rw.marks[t]
}

// mergeRows joins rows with the same label (one per target, as the
// closed-loop figures come) into one, keeping the first one's order.
func mergeRows(rows []row) []row {
	var out []row
	at := map[string]int{}
	for _, rw := range rows {
		i, ok := at[rw.what]
		if !ok {
			at[rw.what] = len(out)
			out = append(out, rw)
			continue
		}
		for t, v := range rw.vals {
			out[i].vals[t] = v
		}
	}
	return out
}

// referenceRates are the offered rates at which issue 10's table states
// its figures: 1:1 QoS 0 at 20k msg/s; rooms of 10 and of 100 at 60k
// deliveries/s (6,000 and 600 publishes/s); durable at 1,000 and 10,000.
var referenceRates = map[string][]float64{
	"dm-qos0":  {20000},
	"rooms10":  {6000},
	"rooms100": {600},
	"durable":  {1000, 10000},
}

// windowRates are the median and the slowest rate of a closed loop's
// progress intervals after its warm-up: a compaction that stalls the
// store for a few seconds moves the run's mean by chance (whether it
// falls inside the window), and these rows show whether one did.
func windowRates(lr *LoadResult) (median, slowest, every float64, ok bool) {
	every = lr.ProgressSeconds
	if every <= 0 {
		return 0, 0, 0, false
	}
	skip := int(math.Ceil(lr.WarmupSeconds / every)) // those that hold warm-up
	if len(lr.PerSecond) <= skip {
		return 0, 0, 0, false
	}
	rates := make([]float64, 0, len(lr.PerSecond)-skip)
	for _, n := range lr.PerSecond[skip:] {
		rates = append(rates, float64(n)/every)
	}
	slices.Sort(rates)
	return rates[(len(rates)-1)/2], rates[0], every, true
}

func fmtNum(v float64) string {
	switch {
	case v == 0:
		return "0"
	case math.Abs(v) >= 100:
		return addCommas(fmt.Sprintf("%.0f", v))
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func addCommas(s string) string {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// ratio is edgechat's value over other's, worded so that > 1 is
// edgechat doing better.
func (rw row) ratio(other string) string {
	e, ok1 := rw.vals["edgechat"]
	o, ok2 := rw.vals[other]
	if !ok1 || !ok2 || e == 0 || o == 0 {
		return "—"
	}
	if rw.higher {
		return fmt.Sprintf("%.2f×", e/o)
	}
	return fmt.Sprintf("%.2f×", o/e)
}

// WriteReport writes the Markdown report and its charts.
func WriteReport(rc ReportConfig) error {
	d, err := loadCompare(rc.Dir)
	if err != nil {
		return err
	}
	outDir := filepath.Dir(rc.Out)
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	p99Max := 10 * time.Millisecond
	for _, rs := range d.scen {
		for _, r := range rs {
			if r.Sweep != nil && r.Sweep.P99MaxMs > 0 {
				p99Max = time.Duration(r.Sweep.P99MaxMs * float64(time.Millisecond))
			}
		}
	}
	var b bytes.Buffer
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# edgechat performance: side by side with Mosquitto and plain mochi-mqtt\n\n")
	w("Generated by `make bench-compare` (clients/bench/compare.sh, then `bench report`) on %s. ", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	w("Every broker ran with all its threads pinned to CPU 0 (`taskset`), the load generator (`clients/bench`) on CPU 1, ")
	w("on 127.0.0.1, each with a fresh data directory; the same scenarios ran against each in turn.\n\n")
	if rc.Note != "" {
		w("**Conditions.** %s\n\n", rc.Note)
	}
	w("## Machine\n\n")
	for _, l := range machineLines() {
		w("- %s\n", l)
	}
	if v, err := os.ReadFile(filepath.Join(rc.Dir, "versions.txt")); err == nil {
		for _, l := range strings.Split(strings.TrimSpace(string(v)), "\n") {
			w("- %s\n", l)
		}
	}
	w("\n## Ratios\n\n")
	w("Sweeps step the offered rate up and stop once steps in a row (`--stop-after`) have a p99 over %s or lose a message; ", p99Max)
	w("\"highest rate\" is the highest rate that passed; \"peak\" the most delivered per second in a step that lost nothing, whatever the latency. ")
	w("CPU and latency are compared at the highest offered rate that every broker ran without loss (named in the row). ")
	w("Ratios are worded so that **above 1× means edgechat does better**. edgechat runs the plain-MQTT scenarios (idle, dm, rooms) as `serve --dev` ")
	w("(anonymous clients, non-chat topics); `durable` and `history` are edgechat's own (signed-in users, chat envelopes, fsync'd Raft commit before PUBACK) and have no counterpart on the other brokers.\n\n")
	var rows []row
	if len(d.idle) > 0 {
		rw := row{what: "idle connection: RSS per connection", unit: " KB", vals: map[string]float64{}}
		n := 0
		for t, r := range d.idle {
			if r.PerConnKB > 0 {
				rw.vals[t] = r.PerConnKB
			}
			n = r.Opened
		}
		rw.what = fmt.Sprintf("idle connections (%s): RSS per connection, settled", addCommas(fmt.Sprint(n)))
		rows = append(rows, rw)
	}
	for _, name := range d.names {
		rs := d.scen[name]
		first := anyResult(rs)
		unitRate := "msg/s"
		mult := 1.0
		if first.Scenario == "rooms" {
			if k, ok := first.Params["subs"].(float64); ok && k > 0 {
				mult = k
			}
			unitRate = "deliveries/s"
		}
		if first.Scenario == "durable" {
			unitRate = "acked msg/s"
		}
		best := row{what: fmt.Sprintf("%s: highest %s with p99 ≤ %s, no loss", name, unitRate, p99Max), vals: map[string]float64{}, higher: true}
		if first.Scenario == "durable" {
			best.what = fmt.Sprintf("%s: highest %s with PUBACK p99 ≤ %s, nothing lost", name, unitRate, p99Max)
		}
		pk := row{what: fmt.Sprintf("%s: peak %s with nothing lost, any latency", name, map[bool]string{true: "acked msg/s", false: "deliveries/s"}[first.Scenario == "durable"]), vals: map[string]float64{}, higher: true}
		for t, r := range rs {
			best.vals[t] = bestRate(r, p99Max) * mult
			pk.vals[t] = peak(r)
		}
		rows = append(rows, best, pk)
		ats := append(slices.Clone(referenceRates[name]), commonRate(rs))
		slices.Sort(ats)
		for _, at := range slices.Compact(ats) {
			if at <= 0 {
				continue
			}
			cpu := row{what: fmt.Sprintf("%s: broker CPU per %s at %s/s", name, map[bool]string{true: "committed message", false: "delivery"}[first.Scenario == "durable"], fmtNum(at)), unit: " µs", vals: map[string]float64{}, marks: map[string]string{}}
			p99 := row{what: fmt.Sprintf("%s: delivery p99 at %s/s", name, fmtNum(at)), unit: " ms", vals: map[string]float64{}, marks: map[string]string{}}
			ack := row{what: fmt.Sprintf("%s: PUBACK p99 at %s/s", name, fmtNum(at)), unit: " ms", vals: map[string]float64{}, marks: map[string]string{}}
			if first.Scenario == "rooms" {
				cpu.what += fmt.Sprintf(" (%s deliveries/s)", fmtNum(at*mult))
				p99.what += fmt.Sprintf(" (%s deliveries/s)", fmtNum(at*mult))
			}
			for t, r := range rs {
				s := stepAt(r, at)
				if s == nil {
					continue
				}
				if s.CPUPerMsg > 0 {
					cpu.vals[t] = s.CPUPerMsg
				}
				p99.vals[t] = s.Latency.P99
				if s.Ack != nil && s.Ack.Count > 0 {
					ack.vals[t] = s.Ack.P99
				}
				if s.Lost > 0 || s.Failed > 0 || s.Unsent > 0 {
					mark := fmt.Sprintf(" (%d lost, %d failed)", s.Lost, s.Failed)
					if s.Unsent > 0 {
						mark = fmt.Sprintf(" (%d lost, %d failed, %d never sent)", s.Lost, s.Failed, s.Unsent)
					}
					for _, rw := range []*row{&cpu, &p99, &ack} {
						rw.marks[t] = mark
					}
				}
			}
			if len(cpu.vals)+len(p99.vals) == 0 {
				continue
			}
			rows = append(rows, cpu, p99)
			if first.Scenario == "durable" {
				rows = append(rows, ack)
			}
		}
	}
	for _, run := range []struct {
		results            map[string]*LoadResult
		what, windows, cpu string
	}{
		{d.throughput, "durable, closed loop (%d senders × %d in flight): committed msg/s", "durable, closed loop: committed msg/s in", "durable, closed loop: server CPU per committed message"},
		{d.throughputBoth, "durable, closed loop on both CPUs, not pinned (%d senders × %d in flight): committed msg/s", "durable, closed loop on both CPUs: committed msg/s in", "durable, closed loop on both CPUs: server CPU per committed message"},
	} {
		for _, t := range compareTargets {
			lr, ok := run.results[t.id]
			if !ok {
				continue
			}
			rows = append(rows, row{what: fmt.Sprintf(run.what, lr.Senders, lr.InFlight), vals: map[string]float64{t.id: lr.Rate}, higher: true})
			if median, slowest, every, ok := windowRates(lr); ok {
				rows = append(rows,
					row{what: fmt.Sprintf("%s the median %gs window", run.windows, every), vals: map[string]float64{t.id: median}, higher: true},
					row{what: fmt.Sprintf("%s the slowest %gs window", run.windows, every), vals: map[string]float64{t.id: slowest}, higher: true})
			}
			rows = append(rows, row{what: run.cpu, unit: " µs", vals: map[string]float64{t.id: lr.ServerCPUPerMsg}})
		}
	}
	rows = mergeRows(rows)
	for t, h := range d.history {
		_ = t
		rows = append(rows,
			row{what: fmt.Sprintf("history (%s stored): newest page of %d, p99", addCommas(fmt.Sprint(h.Stored)), h.PageSize), unit: " ms", vals: map[string]float64{t: h.Newest.P99}},
			row{what: fmt.Sprintf("history: deep paging (%d pages), p99", h.PagesWalked), unit: " ms", vals: map[string]float64{t: h.Paging.P99}},
			row{what: fmt.Sprintf("history: sync page of up to %d, p99", h.SyncLimit), unit: " ms", vals: map[string]float64{t: h.Sync.P99}},
			row{what: "history: conversation list, p99", unit: " ms", vals: map[string]float64{t: h.Conversations.P99}},
		)
	}
	w("| figure |")
	for _, t := range compareTargets {
		w(" %s |", t.label)
	}
	w(" edgechat vs Mosquitto | edgechat vs mochi |\n|---|")
	for range compareTargets {
		w("---:|")
	}
	w("---:|---:|\n")
	for _, rw := range rows {
		w("| %s |", rw.what)
		for _, t := range compareTargets {
			w(" %s |", rw.cell(t.id))
		}
		w(" %s | %s |\n", rw.ratio("mosquitto"), rw.ratio("mochi"))
	}
	w("\n## Charts\n\n")
	for _, name := range d.names {
		rs := d.scen[name]
		lat, tput := compareCharts(name, rs, p99Max)
		for _, ch := range []struct {
			file string
			c    Chart
		}{{name + "-latency.svg", lat}, {name + "-throughput.svg", tput}} {
			if err := WriteChart(filepath.Join(outDir, ch.file), ch.c); err != nil {
				if err == ErrEmptyChart {
					continue
				}
				return err
			}
			w("![%s](%s)\n\n", ch.c.Title, ch.file)
		}
	}
	w("## Every step\n\n")
	for _, name := range d.names {
		w("### %s\n\n", name)
		for _, t := range compareTargets {
			r, ok := d.scen[name][t.id]
			if !ok {
				continue
			}
			w("**%s** — %s over %s, %s", t.label, r.Scenario, r.Transport, paramsLine(r.Params))
			if r.Sweep != nil && r.Sweep.Stopped != "" {
				w("; sweep stopped %s", r.Sweep.Stopped)
			}
			w("\n\n| offered/s | sent | delivered | lost | dup | failed | late sends | delivered/s | p50 | p90 | p99 | p99.9 | max | PUBACK p50 / p99 | CPU µs/msg | CPU %% | RSS MB |\n")
			w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
			for _, s := range r.Steps {
				lateCell := fmt.Sprint(s.Late)
				if s.Unsent > 0 {
					lateCell += fmt.Sprintf(" (+%d never sent)", s.Unsent)
				}
				ack := "—"
				if s.Ack != nil {
					ack = fmt.Sprintf("%.2f / %.2f", s.Ack.P50, s.Ack.P99)
				}
				w("| %s | %d | %d | %d | %d | %d | %s | %s | %.2f | %.2f | %.2f | %.2f | %.2f | %s | %.1f | %.0f | %.1f |\n",
					fmtNum(s.OfferedRate), s.Sent, s.Delivered, s.Lost, s.Duplicates, s.Failed, lateCell, fmtNum(s.Rate),
					s.Latency.P50, s.Latency.P90, s.Latency.P99, s.Latency.P999, s.Latency.Max, ack, s.CPUPerMsg, s.CPUPercent, float64(s.RSSKB)/1024)
			}
			w("\n")
		}
	}
	if len(d.idle) > 0 {
		w("### idle\n\n| broker | opened | RSS before → settled | per connection (settled / right after / slope) |\n|---|---:|---:|---:|\n")
		for _, t := range compareTargets {
			if r, ok := d.idle[t.id]; ok {
				w("| %s | %d | %.1f → %.1f MB | %.2f / %.2f / %.2f KB |\n", t.label, r.Opened, float64(r.RSSBeforeKB)/1024, float64(r.RSSSettledKB)/1024, r.PerConnKB, r.PerConnAfter, r.SlopeKB)
			}
		}
		w("\n")
	}
	for t, h := range d.history {
		w("### history (%s)\n\n", t)
		w("Filled with %s messages from one user to another (%.0f msg/s, %.0f µs server CPU each), then:\n\n", addCommas(fmt.Sprint(h.Stored)), h.FillRate, h.FillCPUPerMsg)
		w("| request | n | p50 | p90 | p99 | p99.9 | max (ms) |\n|---|---:|---:|---:|---:|---:|---:|\n")
		for _, x := range []struct {
			n string
			s Summary
		}{{fmt.Sprintf("`GET /chat/history?with=…&limit=%d` (newest)", h.PageSize), h.Newest}, {"the same, paging back with `before=`", h.Paging}, {fmt.Sprintf("`GET /chat/sync?since=…&limit=%d`", h.SyncLimit), h.Sync}, {"`GET /chat/conversations`", h.Conversations}} {
			w("| %s | %d | %.2f | %.2f | %.2f | %.2f | %.2f |\n", x.n, x.s.Count, x.s.P50, x.s.P90, x.s.P99, x.s.P999, x.s.Max)
		}
		w("\n")
	}
	// The other notes of the directory, so that the index stays whole.
	if others, _ := filepath.Glob(filepath.Join(outDir, "*")); len(others) > 0 {
		var notes []string
		for _, f := range others {
			base := filepath.Base(f)
			if base == filepath.Base(rc.Out) || strings.HasSuffix(base, ".svg") {
				continue
			}
			notes = append(notes, fmt.Sprintf("[%s](%s)", base, base))
		}
		if len(notes) > 0 {
			w("## Other notes here\n\n%s\n\n", strings.Join(notes, ", "))
		}
	}
	if rc.Commands != "" {
		cmds, err := os.ReadFile(rc.Commands)
		if err != nil {
			return err
		}
		w("## Commands\n\nReproduce with `make bench-compare` (`QUICK=1` for a short run). The script ran exactly these:\n\n```sh\n%s\n```\n", strings.TrimSpace(string(cmds)))
	}
	// Dated sections written by hand (figures of scenarios the comparison
	// does not run) follow a marker and survive the regeneration.
	if old, err := os.ReadFile(rc.Out); err == nil {
		b.Write(keptSections(old))
	}
	if err := os.WriteFile(rc.Out, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", rc.Out, err)
	}
	return nil
}

func anyResult(rs map[string]*ScenarioResult) *ScenarioResult {
	for _, t := range compareTargets {
		if r, ok := rs[t.id]; ok {
			return r
		}
	}
	for _, r := range rs {
		return r
	}
	return nil
}

// latencyClip keeps an overloaded step's seconds-long p99 from flattening
// the lines that matter on the latency chart.
const latencyClip = 50.0

// compareCharts draws p50 (solid) and p99 (dashed) against offered rate
// for every target, and delivered against offered rate. Both
// percentiles come from the distribution the sweep's bar applies to:
// durable's are the PUBACK's (and its rate the acknowledged messages').
func compareCharts(name string, rs map[string]*ScenarioResult, p99Max time.Duration) (lat, tput Chart) {
	what, counted := "latency", "delivered"
	if r := anyResult(rs); r != nil && r.Scenario == "durable" {
		what, counted = "PUBACK latency", "acknowledged"
	}
	lat = Chart{Title: fmt.Sprintf("%s: p50 (solid) and p99 (dashed) %s vs offered rate, clipped at %.0f ms", name, what, latencyClip),
		XLabel: "offered rate (publishes/s)", YLabel: what + " (ms)"}
	tput = Chart{Title: fmt.Sprintf("%s: %s vs offered rate", name, counted), XLabel: "offered rate (publishes/s)", YLabel: counted + " per second"}
	for i, t := range compareTargets {
		r, ok := rs[t.id]
		if !ok {
			continue
		}
		p50 := Series{Name: t.label + " p50", Color: palette[i%len(palette)]}
		p99 := Series{Name: t.label + " p99", Color: palette[i%len(palette)], Dashed: true}
		del := Series{Name: t.label, Color: palette[i%len(palette)]}
		for _, s := range r.Steps {
			if s.Latency.Count == 0 {
				continue
			}
			p50v := s.Latency.P50
			if s.BarOnAck && s.Ack != nil {
				p50v = s.Ack.P50
			}
			p50.Points = append(p50.Points, Point{X: s.OfferedRate, Y: math.Min(p50v, latencyClip)})
			bar := s.BarP99()
			p99.Points = append(p99.Points, Point{X: s.OfferedRate, Y: math.Min(bar, latencyClip)})
			del.Points = append(del.Points, Point{X: s.OfferedRate, Y: s.Rate})
		}
		if r.Scenario == "durable" {
			p50.Name, p99.Name = t.label+" PUBACK p50", t.label+" PUBACK p99"
		}
		if len(p50.Points) > 0 {
			lat.Series = append(lat.Series, p50, p99)
			tput.Series = append(tput.Series, del)
		}
	}
	// The sweep's bar, across the offered rates.
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range lat.Series {
		for _, p := range s.Points {
			lo, hi = math.Min(lo, p.X), math.Max(hi, p.X)
		}
	}
	if lo <= hi {
		lat.Series = append(lat.Series, Series{Name: fmt.Sprintf("p99 bar (%s)", p99Max), Color: "#999999", Dashed: true,
			Points: []Point{{X: lo, Y: ms(p99Max)}, {X: hi, Y: ms(p99Max)}}})
	}
	return lat, tput
}

// machineLines describe the machine: CPU model and count, kernel, Go.
func machineLines() []string {
	var out []string
	if b, err := exec.Command("lscpu").Output(); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(l, ":")
			if !ok {
				continue
			}
			switch strings.TrimSpace(k) {
			case "Model name", "CPU(s)", "Thread(s) per core", "Architecture", "Hypervisor vendor":
				out = append(out, fmt.Sprintf("%s: %s", strings.TrimSpace(k), strings.TrimSpace(v)))
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		out = append(out, "kernel: Linux "+strings.TrimSpace(string(b)))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if l, _, ok := strings.Cut(string(b), "\n"); ok {
			out = append(out, "memory: "+strings.Join(strings.Fields(strings.TrimPrefix(l, "MemTotal:")), " "))
		}
	}
	out = append(out, "Go: "+runtime.Version())
	return out
}

// keptMarker starts the part of docs/perf/README.md that bench report
// keeps when it rewrites the file.
const keptMarker = "<!-- kept by bench report: hand-written sections below -->"

// keptSections returns the marker and what follows it in an earlier
// report, or nothing.
func keptSections(old []byte) []byte {
	i := bytes.Index(old, []byte(keptMarker))
	if i < 0 {
		return nil
	}
	return append([]byte("\n"), old[i:]...)
}
