package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"text/tabwriter"
	"time"
)

// PrintConns writes the summary table of a conns run.
func PrintConns(w io.Writer, r *ConnsResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "connections opened\t%d of %d (%d failed)\n", r.Opened, r.Requested, r.Failed)
	fmt.Fprintf(tw, "users × devices\t%d × ~%d\n", r.Users, (r.Requested+r.Users-1)/r.Users)
	fmt.Fprintf(tw, "subscribed\t%v\n", r.Subscribed)
	fmt.Fprintf(tw, "time to open\t%.1f s (%.0f conn/s)\n", r.OpenSeconds, r.ConnsPerSec)
	if r.RSSBeforeKB > 0 {
		fmt.Fprintf(tw, "server RSS before\t%.1f MB\n", float64(r.RSSBeforeKB)/1024)
		fmt.Fprintf(tw, "server RSS after\t%.1f MB\n", float64(r.RSSAfterKB)/1024)
		fmt.Fprintf(tw, "server RSS settled\t%.1f MB\n", float64(r.RSSSettledKB)/1024)
		fmt.Fprintf(tw, "RSS per connection\t%.1f KB settled, %.1f KB right after opening, %.1f KB marginal (slope)\n", r.PerConnKB, r.PerConnAfter, r.SlopeKB)
	} else {
		fmt.Fprintf(tw, "RSS per connection\tnot measured (give --pid of the server)\n")
	}
	if r.FirstError != "" {
		fmt.Fprintf(tw, "first error\t%s\n", r.FirstError)
	}
	return tw.Flush()
}

// PrintLoad writes the summary table of a latency or throughput run.
func PrintLoad(w io.Writer, r *LoadResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "mode\t%s\n", r.Mode)
	fmt.Fprintf(tw, "senders → receivers\t%d → %d, %d in flight per sender, %d-byte bodies\n", r.Senders, r.Receivers, r.InFlight, r.BodyBytes)
	if r.TargetRate > 0 {
		fmt.Fprintf(tw, "target rate\t%.0f msg/s\n", r.TargetRate)
	}
	fmt.Fprintf(tw, "measured\t%.0f s after %.0f s warmup\n", r.DurationSeconds, r.WarmupSeconds)
	fmt.Fprintf(tw, "sent / committed / failed\t%d / %d / %d\n", r.Sent, r.Committed, r.Failed)
	fmt.Fprintf(tw, "committed rate\t%.0f msg/s\n", r.Rate)
	if r.Late > 0 {
		fmt.Fprintf(tw, "late sends\t%d (behind the schedule: the client was short of CPU or waited for an --inflight slot)\n", r.Late)
	}
	if r.Unsent > 0 {
		fmt.Fprintf(tw, "never sent\t%d due in the run, still waiting for a slot --drain after its end\n", r.Unsent)
	}
	fmt.Fprintf(tw, "publish→PUBACK ms\t%s\n", summaryLine(r.PubAck))
	if r.Delivery != nil {
		fmt.Fprintf(tw, "publish→delivery ms\t%s (%d delivered)\n", summaryLine(*r.Delivery), r.Delivered)
	}
	if r.ServerCPUPerMsg > 0 || r.GenCPUPerMsg > 0 {
		fmt.Fprintf(tw, "CPU per message\tserver %.1f µs, generator (%s client) %.1f µs\n", r.ServerCPUPerMsg, r.Client, r.GenCPUPerMsg)
	}
	if r.AckOutOfOrder > 0 || r.StrayAcks > 0 {
		fmt.Fprintf(tw, "PUBACK order\t%d out of order, %d for nothing in flight\n", r.AckOutOfOrder, r.StrayAcks)
	}
	if r.RaftBatchAvg > 0 {
		fmt.Fprintf(tw, "Raft batch (server)\t%.1f commands per entry on average\n", r.RaftBatchAvg)
	}
	if r.ServerRSSKB > 0 {
		fmt.Fprintf(tw, "server RSS at end\t%.1f MB\n", float64(r.ServerRSSKB)/1024)
	}
	keys := make([]string, 0, len(r.Errors))
	for k := range r.Errors {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(tw, "error ×%d\t%s\n", r.Errors[k], k)
	}
	return tw.Flush()
}

func summaryLine(s Summary) string {
	return fmt.Sprintf("p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f  (n=%d)", s.P50, s.P90, s.P99, s.P999, s.Max, s.Count)
}

// PrintHistory writes the summary table of a history run.
func PrintHistory(w io.Writer, r *HistoryResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if r.FillSeconds > 0 {
		fmt.Fprintf(tw, "fill	%d messages in %.1f s (%.0f msg/s, %d failed, %.0f µs server CPU per message)\n", r.Stored, r.FillSeconds, r.FillRate, r.FillFailed, r.FillCPUPerMsg)
	}
	fmt.Fprintf(tw, "history newest page of %d ms	%s\n", r.PageSize, summaryLine(r.Newest))
	fmt.Fprintf(tw, "history deep paging (%d pages) ms	%s\n", r.PagesWalked, summaryLine(r.Paging))
	fmt.Fprintf(tw, "sync page of up to %d ms	%s (%d messages)\n", r.SyncLimit, summaryLine(r.Sync), r.SyncMessages)
	fmt.Fprintf(tw, "conversations ms	%s\n", summaryLine(r.Conversations))
	if r.ServerRSSKB > 0 {
		fmt.Fprintf(tw, "server RSS at end	%.1f MB\n", float64(r.ServerRSSKB)/1024)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(tw, "fill error	%s\n", e)
	}
	return tw.Flush()
}

// WriteJSON writes v, indented, to path.
func WriteJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// ConnsChart is server RSS against open connections.
func ConnsChart(r *ConnsResult) Chart {
	s := Series{Name: "server RSS (MB)"}
	for _, p := range r.Samples {
		s.Points = append(s.Points, Point{X: float64(p.Conns), Y: float64(p.RSSKB) / 1024})
	}
	return Chart{
		Title:  fmt.Sprintf("Server RSS vs idle MQTT connections (%.1f KB per connection)", r.PerConnKB),
		XLabel: "open connections", YLabel: "RSS (MB)",
		Series: []Series{s},
	}
}

// LoadChart is the latency distribution on a "nines" axis.
func LoadChart(r *LoadResult) Chart {
	c := Chart{
		Title:  fmt.Sprintf("%s: %d senders, %.0f msg/s committed", r.Mode, r.Senders, r.Rate),
		XLabel: "percentile", YLabel: "latency (ms)",
		XTicks: ninesTicks,
	}
	add := func(name string, sorted []time.Duration) {
		if len(sorted) == 0 {
			return
		}
		s := Series{Name: name}
		for _, p := range distributionPercentiles {
			s.Points = append(s.Points, Point{X: ninesX(p), Y: ms(Percentile(sorted, p))})
		}
		c.Series = append(c.Series, s)
	}
	add("publish→PUBACK", r.pubackSorted)
	add("publish→delivery", r.deliverySorted)
	return c
}

// WriteChart writes c as SVG to path.
func WriteChart(path string, c Chart) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := WriteSVG(f, c); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return f.Close()
}
