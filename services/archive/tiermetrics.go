package archive

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Results of a seal (edgechat_archive_seals_total).
const (
	sealDone   = "sealed"
	sealStale  = "stale"
	sealFailed = "failed"
)

// tierMetrics are the sealer's and the read-through's.
type tierMetrics struct {
	seals          *prometheus.CounterVec
	sealedMessages prometheus.Counter
	orphans        prometheus.Counter
	expired        prometheus.Counter
	storeMismatch  prometheus.Gauge
}

func newTierMetrics() tierMetrics {
	m := tierMetrics{
		seals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgechat_archive_seals_total",
			Help: "Segments the sealer tried to seal, by result (sealed, stale: the range changed and the object is an orphan, failed).",
		}, []string{"result"}),
		sealedMessages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgechat_archive_sealed_messages_total",
			Help: "Messages this node's sealer moved into segments.",
		}),
		orphans: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgechat_archive_segment_orphans_deleted_total",
			Help: "Segment objects no index entry referenced, deleted by the garbage collector.",
		}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgechat_archive_expired_messages_total",
			Help: "Hot messages deleted by retention commands this node's sweeper proposed (sealed ones go with their segments).",
		}),
		storeMismatch: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgechat_archive_store_mismatch",
			Help: "Members that keep sealed segments in another store than this node, as its last check before sealing found (sealing waits while it is above 0).",
		}),
	}
	for _, r := range []string{sealDone, sealStale, sealFailed} {
		m.seals.WithLabelValues(r)
	}
	return m
}

// register registers the metrics, with the segment cache's hits and
// misses read from the cache when t is set.
func (m tierMetrics) register(reg prometheus.Registerer, t *tierReader) error {
	cs := []prometheus.Collector{m.seals, m.sealedMessages, m.orphans, m.expired, m.storeMismatch}
	if t != nil {
		cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "edgechat_archive_segment_block_reads_total", Help: "Sealed blocks read, found in the cache (hit).",
			ConstLabels: prometheus.Labels{"result": "hit"},
		}, func() float64 { _, _, h, _ := t.blocks.Stats(); return float64(h) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "edgechat_archive_segment_block_reads_total", Help: "Sealed blocks read, found in the cache (hit).",
				ConstLabels: prometheus.Labels{"result": "miss"},
			}, func() float64 { _, _, _, m := t.blocks.Stats(); return float64(m) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "edgechat_archive_segment_cache_bytes", Help: "Bytes of decoded sealed blocks cached.",
			}, func() float64 { b, _, _, _ := t.blocks.Stats(); return float64(b) }))
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("archive: register metrics: %w", err)
		}
	}
	return nil
}
