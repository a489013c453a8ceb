package broker

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics of the MQTT node; class is the topic kind (wire.TopicKind).
type metrics struct {
	in      *prometheus.CounterVec // class
	out     *prometheus.CounterVec // class
	dropped *prometheus.CounterVec // class, reason
	refused *prometheus.CounterVec // reason
}

func newMetrics(reg prometheus.Registerer, conns func() int64) (*metrics, error) {
	m := &metrics{
		in: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgechat_mqtt_messages_in_total",
			Help: "PUBLISH packets received from clients, by topic class.",
		}, []string{"class"}),
		out: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgechat_mqtt_messages_out_total",
			Help: "PUBLISH packets written to clients, by topic class.",
		}, []string{"class"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgechat_mqtt_messages_dropped_total",
			Help: "Messages not delivered: refused publishes and full client queues, by topic class and reason.",
		}, []string{"class", "reason"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgechat_mqtt_refused_total",
			Help: "Refused connections, publishes and subscriptions, by reason.",
		}, []string{"reason"}),
	}
	if reg == nil {
		return m, nil
	}
	gauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "edgechat_mqtt_connections",
		Help: "Established MQTT connections.",
	}, func() float64 { return float64(conns()) })
	for _, c := range []prometheus.Collector{m.in, m.out, m.dropped, m.refused, gauge} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("broker: metrics already registered (one broker per registry): %w", err)
			}
			return nil, fmt.Errorf("broker: register metrics: %w", err)
		}
	}
	return m, nil
}
