package peerqueue

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Reasons for dropped items (the reason label of <prefix>_dropped_total).
const (
	ReasonFull    = "queue_full" // Push over MaxItems
	ReasonClosed  = "closed"     // pending when the queue was closed
	ReasonRefused = "refused"    // the Sender returned a Permanent error
	ReasonPruned  = "pruned"     // the Keep hook removed them
	// ReasonOverflow: a DropOldest queue made room for newer items.
	ReasonOverflow = "overflow"
)

// Metrics are a queue family's counters, labelled by peer. Several
// queues (a Set, or the Persistent queues of a bridge) share one.
type Metrics struct {
	queued  *prometheus.CounterVec // peer
	sent    *prometheus.CounterVec // peer
	batches *prometheus.CounterVec // peer
	retries *prometheus.CounterVec // peer
	dropped *prometheus.CounterVec // peer, reason
	pending *prometheus.GaugeVec   // peer
}

// NewMetrics makes the metrics <prefix>_queued_total, _sent_total,
// _batches_total, _retries_total, _dropped_total (peer, reason) and
// _pending (peer); what names the items in the help texts ("forwarded
// publishes"). A nil reg registers nothing (several nodes in one test
// process each have their own).
func NewMetrics(reg prometheus.Registerer, prefix, what string) (*Metrics, error) {
	peer := []string{"peer"}
	m := &Metrics{
		queued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: prefix + "_queued_total",
			Help: fmt.Sprintf("%s queued for a peer, by peer.", what),
		}, peer),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: prefix + "_sent_total",
			Help: fmt.Sprintf("%s acknowledged by their peer, by peer.", what),
		}, peer),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: prefix + "_batches_total",
			Help: fmt.Sprintf("Batches of %s acknowledged, by peer.", what),
		}, peer),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: prefix + "_retries_total",
			Help: fmt.Sprintf("Failed sends of %s (retried), by peer.", what),
		}, peer),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: prefix + "_dropped_total",
			Help: fmt.Sprintf("%s given up, by peer and reason (queue_full, closed, refused, pruned, or the owner's: not_member, invalid).", what),
		}, []string{"peer", "reason"}),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: prefix + "_pending",
			Help: fmt.Sprintf("%s waiting for their peer's acknowledgement, by peer.", what),
		}, peer),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.queued, m.sent, m.batches, m.retries, m.dropped, m.pending} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("peerqueue: register %s metrics: %w", prefix, err)
		}
	}
	return m, nil
}

// Dropped counts n items for peer given up for reason; owners count
// there what they refuse before queueing (a peer that is not a member) or
// on receipt (an invalid item), so that one metric has every loss.
func (m *Metrics) Dropped(peer, reason string, n int) {
	if n > 0 {
		m.dropped.WithLabelValues(peer, reason).Add(float64(n))
	}
}

// peerMetrics are Metrics curried for one peer.
type peerMetrics struct {
	m                              *Metrics
	peer                           string
	queued, sent, batches, retries prometheus.Counter
	pending                        prometheus.Gauge
}

func (m *Metrics) forPeer(peer string) *peerMetrics {
	return &peerMetrics{m: m, peer: peer,
		queued: m.queued.WithLabelValues(peer), sent: m.sent.WithLabelValues(peer),
		batches: m.batches.WithLabelValues(peer), retries: m.retries.WithLabelValues(peer),
		pending: m.pending.WithLabelValues(peer)}
}

func (p *peerMetrics) dropped(reason string, n int) { p.m.Dropped(p.peer, reason, n) }

// gone removes the peer's pending gauge: a peer that left is not "0
// pending" forever. Counters stay (their totals are history).
func (p *peerMetrics) gone() { p.m.pending.DeleteLabelValues(p.peer) }
