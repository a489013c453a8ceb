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
