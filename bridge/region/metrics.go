package region

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	sent      *prometheus.CounterVec // link, result
	received  *prometheus.CounterVec // link, result
	connects  *prometheus.CounterVec // link, result
	auth      *prometheus.CounterVec // result
	ephemeral *prometheus.CounterVec // link, kind
	profiles  *prometheus.CounterVec // link, result
}

func newMetrics(reg prometheus.Registerer, b *Bridge) (*metrics, error) {
	m := &metrics{
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgechat_region_link_sent_total",
			Help: "Messages this region's links sent to other regions, by link and result (acknowledged, refused, unreadable)."}, []string{"link", "result"}),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgechat_region_link_received_total",
			Help: "Messages other regions' links brought, by link and result (stored, duplicate, forged, misrouted, invalid, no_such_user, forbidden, unavailable)."}, []string{"link", "result"}),
		connects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgechat_region_link_connects_total",
			Help: "Connection attempts of this region's links, by link and result (connected, dial_failed, refused)."}, []string{"link", "result"}),
		auth: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgechat_region_link_auth_total",
			Help: "CONNECTs of other regions' links, by result (ok, bad_secret, unknown_region, bad_id)."}, []string{"result"}),
		ephemeral: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgechat_region_link_ephemeral_total",
			Help: "Ephemeral messages (presence, typing, receipts) this region's links received from the regions they subscribe to, by link and kind (presence, typing, receipts, blocked, invalid)."}, []string{"link", "kind"}),
		profiles: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgechat_region_profile_lookups_total",
			Help: "Look-ups of profiles of other regions' users, by link and result (cached, fetched, stale, unavailable)."}, []string{"link", "result"}),
	}
	if reg == nil {
		return m, nil
	}
	backlog := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "edgechat_region_link_backlog",
		Help: "Messages committed here and not yet acknowledged by the other region, by link."}, []string{"link"})
	for _, c := range []prometheus.Collector{m.sent, m.received, m.connects, m.auth, m.ephemeral, m.profiles, backlogCollector{b, backlog}} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("region: metrics: %w", err)
		}
	}
	return m, nil
}

// backlogCollector reads each link's backlog at scrape time.
type backlogCollector struct {
	b *Bridge
	g *prometheus.GaugeVec
}

func (c backlogCollector) Describe(ch chan<- *prometheus.Desc) { c.g.Describe(ch) }

func (c backlogCollector) Collect(ch chan<- prometheus.Metric) {
	for _, name := range c.b.Links() {
		if n, err := c.b.Backlog(name); err == nil {
			c.g.WithLabelValues(name).Set(float64(n))
		}
	}
	c.g.Collect(ch)
}
