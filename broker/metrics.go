package broker

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgechat/edgechat/internal/peerqueue"
	"github.com/edgechat/edgechat/internal/wire"
)

// metrics of the MQTT node; class is the topic kind (wire.TopicKind).
type metrics struct {
	in      *prometheus.CounterVec                              // class
	inBy    [kindUnknown + 1]atomic.Pointer[prometheus.Counter] // in by kind, resolved once: OnPublish runs per message
	out     *prometheus.CounterVec                              // class
	outBy   [kindUnknown + 1]atomic.Pointer[prometheus.Counter] // out by kind, resolved once: OnPacketSent runs per delivery
	dropped *prometheus.CounterVec                              // class, reason
	refused *prometheus.CounterVec                              // reason

	routeProposals    *prometheus.CounterVec // op, result
	registryProposals *prometheus.CounterVec // op, result
	takeovers         prometheus.Counter
	pubackWrites      prometheus.Counter // writes of pipelined PUBACKs ...
	pubacks           prometheus.Counter // ... and the PUBACKs in them
	fwd               *peerqueue.Metrics // edgechat_forward_{queued,sent,batches,retries,dropped}_total, _pending by peer
	fwdReceived       prometheus.Counter
	fwdDuplicates     prometheus.Counter
	ackUnwatched      prometheus.Counter // deliveries the full ack watch did not take (unacked.go)
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
		routeProposals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgechat_route_proposals_total",
			Help: "Route additions and withdrawals proposed by this node, by op (add, del) and result (ok, error).",
		}, []string{"op", "result"}),
		registryProposals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgechat_client_registry_proposals_total",
			Help: "Client registry registrations and withdrawals proposed by this node, by op (register, withdraw) and result (ok, error).",
		}, []string{"op", "result"}),
		ackUnwatched: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgechat_push_ack_unwatched_total",
			Help: "QoS 1 chat deliveries to a device that may be pushed, not watched for their acknowledgement because the node's watch was full: such a device whose connection is half-open gets no push for them.",
		}),
		takeovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgechat_session_takeovers_total",
			Help: "Connections this node closed because their client ID connected to another node.",
		}),
		pubackWrites: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgechat_mqtt_puback_writes_total",
			Help: "Writes to clients that carried PUBACKs of durable chat publishes (several PUBACKs whose commits landed together go in one write).",
		}),
		pubacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgechat_mqtt_pubacks_total",
			Help: "PUBACKs of durable chat publishes written to clients.",
		}),
		fwdReceived: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgechat_forward_received_total",
			Help: "Publishes received from other nodes (not counting duplicates of a resent batch).",
		}),
		fwdDuplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgechat_forward_duplicates_total",
			Help: "Received forwarded publishes skipped as resent duplicates.",
		}),
	}
	fwd, err := peerqueue.NewMetrics(reg, "edgechat_forward", "Forwarded publishes")
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	m.fwd = fwd
	if reg == nil {
		return m, nil
	}
	gauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "edgechat_mqtt_connections",
		Help: "Established MQTT connections.",
	}, func() float64 { return float64(conns()) })
	for _, c := range []prometheus.Collector{m.in, m.out, m.dropped, m.refused, gauge,
		m.routeProposals, m.registryProposals, m.takeovers, m.pubackWrites, m.pubacks, m.fwdReceived, m.fwdDuplicates, m.ackUnwatched} {
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

// kindUnknown is the out class of a publish whose topic name an outbound
// topic alias hides; the other indexes of metrics.outBy are wire kinds.
const kindUnknown = wire.KindChatInvalid + 1

// outCounter is out's counter for a topic kind (the label lookup hashes
// the label values: once per kind, not once per delivery). Series appear
// on first use, as with WithLabelValues.
func (m *metrics) outCounter(k wire.TopicKind) prometheus.Counter {
	return counterByKind(m.out, &m.outBy, k)
}

// inCounter is in's counter for a topic kind, as outCounter.
func (m *metrics) inCounter(k wire.TopicKind) prometheus.Counter {
	return counterByKind(m.in, &m.inBy, k)
}

func counterByKind(vec *prometheus.CounterVec, by *[kindUnknown + 1]atomic.Pointer[prometheus.Counter], k wire.TopicKind) prometheus.Counter {
	if k < 0 || k > kindUnknown {
		k = kindUnknown
	}
	if c := by[k].Load(); c != nil {
		return *c
	}
	c := vec.WithLabelValues(k.String()) // kindUnknown: "unknown"
	by[k].Store(&c)
	return c
}
