package push

import (
	"context"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the push bridge's counters:
//
//	edgechat_push_sent_total{provider,result}     sends by provider answer
//	edgechat_push_tokens_removed_total{provider}  dead registrations removed
//
// result is an Outcome's String (delivered, dead_token, retry, failed).
// A nil *Metrics counts nothing.
type Metrics struct {
	sent    *prometheus.CounterVec
	removed *prometheus.CounterVec
}

// NewMetrics registers the counters with reg (every platform and outcome
// starts at 0, so that rates work from the first scrape).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgechat_push_sent_total",
			Help: "Push notifications sent, by provider and its answer (delivered, dead_token, retry, failed)."},
			[]string{"provider", "result"}),
		removed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgechat_push_tokens_removed_total",
			Help: "Device registrations removed because the provider reported the token dead."},
			[]string{"provider"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.sent, m.removed} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("push: metrics: %w", err)
			}
		}
	}
	for _, p := range []Platform{APNs, FCM, WebPush} {
		for _, o := range []Outcome{Delivered, DeadToken, RetryLater, Failed} {
			m.sent.WithLabelValues(string(p), o.String())
		}
		m.removed.WithLabelValues(string(p))
	}
	return m, nil
}

// Sent counts one send's outcome.
func (m *Metrics) Sent(p Platform, o Outcome) {
	if m != nil {
		m.sent.WithLabelValues(string(p), o.String()).Inc()
	}
}

// TokenRemoved counts one dead registration removed.
func (m *Metrics) TokenRemoved(p Platform) {
	if m != nil {
		m.removed.WithLabelValues(string(p)).Inc()
	}
}

// Counted wraps a provider (a Router) so that every send is counted in
// m by the device's platform.
func Counted(p Provider, m *Metrics) Provider { return counted{p, m} }

type counted struct {
	p Provider
	m *Metrics
}

func (c counted) Name() string { return c.p.Name() }

func (c counted) Send(ctx context.Context, d Device, n Notification) (Result, error) {
	res, err := c.p.Send(ctx, d, n)
	c.m.Sent(d.Platform, res.Outcome)
	return res, err
}

// Reasons a push was given up (edgechat_push_given_up_total).
const (
	reasonRejected = "rejected" // the provider refused it for good
	reasonAttempts = "attempts" // transient failures until MaxAttempts or expiry
	reasonOverflow = "overflow" // the provider's queue and retries were full; older pushes went first
)

// verdictUnregistered: the device's registration was gone when it was
// decided (signed out, its token moved to another device, the account
// deleted). The sender finds it, not Decide, which is given registered
// devices only.
const verdictUnregistered Verdict = "unregistered"

// senderMetrics are the sender's own metrics (the queue's are
// edgechat_push_queue_*, per provider).
type senderMetrics struct {
	latency   prometheus.Histogram
	decisions *prometheus.CounterVec
	givenUpC  *prometheus.CounterVec
	retries   prometheus.Counter
	// retryWaiting counts per provider the pushes waiting for a retry.
	retryWaiting *prometheus.GaugeVec
	// unacked counts connected devices decided as offline because they
	// did not acknowledge the message's delivery.
	unacked prometheus.Counter
}

func newSenderMetrics(reg prometheus.Registerer) (*senderMetrics, error) {
	m := &senderMetrics{
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "edgechat_push_latency_seconds",
			Help:    "From a message's commit to the provider's answer to its push (the grace period included).",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 7.5, 10, 30, 60, 300}}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgechat_push_decisions_total",
			Help: "Devices decided at the end of the grace period, and again before a retry when that stops it, by verdict (push, connected, read, muted, dnd, blocked, expired, unregistered)."},
			[]string{"verdict"}),
		givenUpC: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgechat_push_given_up_total",
			Help: "Pushes not delivered, by reason (rejected; attempts; overflow: more pushes queued or waiting for a retry for a provider than the bound, the oldest went)."}, []string{"reason"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{Name: "edgechat_push_retries_total",
			Help: "Pushes queued again after a transient failure."}),
		retryWaiting: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "edgechat_push_retry_waiting",
			Help: "Pushes waiting for their retry, per provider (bounded together with the provider's queue)."}, []string{"provider"}),
		unacked: prometheus.NewCounter(prometheus.CounterOpts{Name: "edgechat_push_unacked_total",
			Help: "Devices connected at a message's commit that did not acknowledge its delivery in time (a half-open connection), decided as offline."}),
	}
	for _, p := range []Platform{APNs, FCM, WebPush} {
		m.retryWaiting.WithLabelValues(string(p))
	}
	for _, v := range []Verdict{PushNow, SkipConnected, SkipRead, SkipMuted, SkipDND, SkipBlocked, SkipExpired, verdictUnregistered} {
		m.decisions.WithLabelValues(string(v))
	}
	for _, r := range []string{reasonRejected, reasonAttempts, reasonOverflow} {
		m.givenUpC.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.latency, m.decisions, m.givenUpC, m.retries, m.retryWaiting, m.unacked} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("push: sender metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *senderMetrics) decided(v Verdict)     { m.decisions.WithLabelValues(string(v)).Inc() }
func (m *senderMetrics) givenUp(reason string) { m.givenUpC.WithLabelValues(reason).Inc() }
