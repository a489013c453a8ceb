package media

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics of the media service:
//
//	edgechat_media_uploads_total{result}          accepted, too_large, quota, failed, empty
//	edgechat_media_bytes_total{direction}         in (uploads), out (served by this node)
//	edgechat_media_processed_total{status,kind}   ready by kind, rejected by reason
//	edgechat_media_job_seconds{kind}              a job from claim to result
//	edgechat_media_jobs_running                   jobs this node's worker is processing now
//	edgechat_media_step_seconds{step,result}     each processing step
//	edgechat_media_jobs_pending                   jobs waiting or running (sweeper)
//	edgechat_media_stored_bytes{tier}             ready media per tier (sweeper)
//	edgechat_media_moved_cold_total               moves to the cold tier
//	edgechat_media_remote_*                       media of other regions (remote.go)
type metrics struct {
	uploads    *prometheus.CounterVec
	bytesIn    prometheus.Counter
	bytesOut   prometheus.Counter
	processed  *prometheus.CounterVec
	jobSeconds *prometheus.HistogramVec
	// jobsRunning: jobs this node's worker holds and processes now (0 or
	// 1: a worker does one at a time).
	jobsRunning prometheus.Gauge
	// stepSeconds times each processing step (detect, check_bomb, scan,
	// metadata, image, video) by result (ok, error).
	stepSeconds *prometheus.HistogramVec
	// From the sweeper (every SweepEvery): jobs waiting or running, bytes
	// of ready media per tier, moves to the cold tier.
	jobsPending prometheus.Gauge
	tierBytes   *prometheus.GaugeVec
	movedCold   prometheus.Counter
	// expired: media erased because every message that carried it
	// expired (retention; counted by the node that proposed it).
	expired prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	bytes := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgechat_media_bytes_total",
		Help: "Media bytes uploaded to this node (in) and served by it (out)."}, []string{"direction"})
	m := &metrics{
		uploads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgechat_media_uploads_total",
			Help: "Uploads by result (accepted, too_large, quota, failed, empty)."}, []string{"result"}),
		bytesIn:  bytes.WithLabelValues("in"),
		bytesOut: bytes.WithLabelValues("out"),
		processed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgechat_media_processed_total",
			Help: "Processing jobs ended on this node: status ready (by kind) or rejected (by reason)."},
			[]string{"status", "kind"}),
		jobSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "edgechat_media_job_seconds",
			Help:    "Processing jobs from claim to result, by kind.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}}, []string{"kind"}),
	}
	m.jobsRunning = prometheus.NewGauge(prometheus.GaugeOpts{Name: "edgechat_media_jobs_running",
		Help: "Processing jobs this node's worker is running now."})
	m.stepSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "edgechat_media_step_seconds",
		Help:    "Processing steps by step and result (ok, error).",
		Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}, []string{"step", "result"})
	m.jobsPending = prometheus.NewGauge(prometheus.GaugeOpts{Name: "edgechat_media_jobs_pending",
		Help: "Uploads waiting for or in processing, cluster-wide (updated by the sweeper)."})
	m.tierBytes = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "edgechat_media_stored_bytes",
		Help: "Bytes of ready media by tier, cluster-wide (updated by the sweeper)."}, []string{"tier"})
	m.movedCold = prometheus.NewCounter(prometheus.CounterOpts{Name: "edgechat_media_moved_cold_total",
		Help: "Media moved to the cold tier by this node's sweeper."})
	m.expired = prometheus.NewCounter(prometheus.CounterOpts{Name: "edgechat_media_expired_total",
		Help: "Media erased by retention (every message that carried it expired), proposed by this node."})
	for _, r := range []string{"accepted", "too_large", "quota", "failed"} {
		m.uploads.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.uploads, bytes, m.processed, m.jobSeconds, m.jobsRunning, m.stepSeconds, m.jobsPending, m.tierBytes, m.movedCold, m.expired} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("media: metrics: %w", err)
			}
		}
	}
	return m, nil
}
