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
	expired   *prometheus.CounterVec // link
}

func newMetrics(reg prometheus.Registerer, b *Bridge) (*metrics, error) {
	m := &metrics{
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgechat_region_link_sent_total",
			Help: "Messages this region's links sent to other regions, by link and result (acknowledged; refused: in a batch the other region refused as a whole; expired: older than --link-retention, not sent; unreadable, too_large)."}, []string{"link", "result"}),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgechat_region_link_received_total",
			Help: "Messages other regions' links brought, by link and result (stored, duplicate, forged, misrouted, invalid, no_such_user, forbidden, unavailable; profile_request: a profile asked for and answered)."}, []string{"link", "result"}),
		connects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgechat_region_link_connects_total",
			Help: "Connection attempts of this region's links, by link and result (connected, dial_failed, refused, number_clash: the other region has this region's number)."}, []string{"link", "result"}),
		auth: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgechat_region_link_auth_total",
			Help: "CONNECTs of other regions' links, by result (ok, bad_secret, bad_cert, no_cert, unknown_region, bad_id)."}, []string{"result"}),
		ephemeral: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgechat_region_link_ephemeral_total",
			Help: "Ephemeral messages (presence, typing, group typing, receipts) this region's links received from the regions they subscribe to, by link and kind (presence, typing, group_typing, receipts, blocked, invalid; unwatched: presence of a user the link is not subscribed to, dropped)."}, []string{"link", "kind"}),
		profiles: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgechat_region_profile_lookups_total",
			Help: "Look-ups of profiles of other regions' users, by link and result (cached, fetched, stale, unavailable; search and search_unanswered: searches across regions)."}, []string{"link", "result"}),
		expired: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgechat_region_link_expired_total",
			Help: "Messages dropped from a link's outbox because they were older than --link-retention (they never reach the other region), by link."}, []string{"link"}),
	}
	if reg == nil {
		return m, nil
	}
	backlog := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "edgechat_region_link_backlog",
		Help: "Messages committed here and not yet acknowledged by the other region, by link."}, []string{"link"})
	for _, c := range []prometheus.Collector{m.sent, m.received, m.connects, m.auth, m.ephemeral, m.profiles, m.expired, backlogCollector{b, backlog}, statusCollector{b}} {
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

var (
	descUp = prometheus.NewDesc("edgechat_region_link_up",
		"1 when this node runs the link and it is connected, 0 when it runs it and it is down (only the Raft leader runs the links).", []string{"link"}, nil)
	descOldest = prometheus.NewDesc("edgechat_region_link_backlog_oldest_seconds",
		"Age of the oldest message waiting for the other region, by link (0: none).", []string{"link"}, nil)
	descMsgs = prometheus.NewDesc("edgechat_region_link_messages_total",
		"Messages over the link through this node, by link and direction (out: acknowledged by the other region; in: messages and ephemeral traffic from it).", []string{"link", "direction"}, nil)
	descBytes = prometheus.NewDesc("edgechat_region_link_bytes_total",
		"Payload and topic bytes of edgechat_region_link_messages_total.", []string{"link", "direction"}, nil)
)

// statusCollector reads Status at scrape time.
type statusCollector struct{ b *Bridge }

func (c statusCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descUp
	ch <- descOldest
	ch <- descMsgs
	ch <- descBytes
}

func (c statusCollector) Collect(ch chan<- prometheus.Metric) {
	for _, ls := range c.b.Status() {
		if ls.State != "standby" {
			up := 0.0
			if ls.State == "up" {
				up = 1
			}
			ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, up, ls.Name)
		}
		ch <- prometheus.MustNewConstMetric(descOldest, prometheus.GaugeValue, ls.OldestAgeSec, ls.Name)
		ch <- prometheus.MustNewConstMetric(descMsgs, prometheus.CounterValue, float64(ls.Sent.Messages), ls.Name, "out")
		ch <- prometheus.MustNewConstMetric(descMsgs, prometheus.CounterValue, float64(ls.Received.Messages), ls.Name, "in")
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(ls.Sent.Bytes), ls.Name, "out")
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(ls.Received.Bytes), ls.Name, "in")
	}
}
