package testutil

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestMetricValue(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "t_requests_total"}, []string{"route", "status"})
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "t_users"})
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "t_seconds"})
	reg.MustRegister(c, g, h)
	c.WithLabelValues("/a", "200").Add(3)
	c.WithLabelValues("/a", "500").Add(1)
	g.Set(7)
	h.Observe(0.1)
	h.Observe(0.2)

	cases := []struct {
		name   string
		labels map[string]string
		want   float64
		ok     bool
	}{
		{"t_requests_total", map[string]string{"route": "/a", "status": "500"}, 1, true},
		{"t_requests_total", map[string]string{"status": "200"}, 3, true},
		{"t_requests_total", map[string]string{"status": "404"}, 0, false},
		{"t_users", nil, 7, true},
		{"t_seconds", nil, 2, true},
		{"t_missing", nil, 0, false},
	}
	for _, tc := range cases {
		if v, ok := MetricValue(t, reg, tc.name, tc.labels); v != tc.want || ok != tc.ok {
			t.Errorf("MetricValue(%s %v) = %v, %v; want %v, %v", tc.name, tc.labels, v, ok, tc.want, tc.ok)
		}
	}
}

func TestCounterValue(t *testing.T) {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "t_total"})
	if v := CounterValue(t, c); v != 0 {
		t.Fatalf("fresh counter = %v", v)
	}
	c.Add(2.5)
	if v := CounterValue(t, c); v != 2.5 {
		t.Fatalf("counter = %v, want 2.5", v)
	}
}
