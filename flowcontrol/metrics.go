package flowcontrol

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/augur-llm/augur/scheduler"
)

// Metrics are flow control's Prometheus metrics. A nil *Metrics records nothing.
type Metrics struct {
	outcomes  *prometheus.CounterVec
	waits     *prometheus.HistogramVec
	queued    *prometheus.GaugeVec
	bytes     *prometheus.GaugeVec
	saturated prometheus.Gauge
	waiting   prometheus.Gauge
	stale     prometheus.Gauge
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "augur_flow_requests_total", Help: "Requests leaving flow control, by priority band and outcome (dispatched, shed, band_full, ttl_expired, late, cancelled).",
		}, []string{"priority", "outcome"}),
		waits: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "augur_flow_queue_wait_seconds", Help: "Time requests spent in flow control, by priority band and outcome.",
			Buckets: prometheus.ExponentialBuckets(1e-4, 2.5, 16),
		}, []string{"priority", "outcome"}),
		queued: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "augur_flow_queued_requests", Help: "Requests waiting in flow control, by priority band.",
		}, []string{"priority"}),
		bytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "augur_flow_queued_bytes", Help: "Bytes of the requests waiting in flow control, by priority band.",
		}, []string{"priority"}),
		saturated: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "augur_flow_saturated", Help: "1 when the last check found the pool saturated.",
		}),
		waiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "augur_flow_replica_waiting_estimate", Help: "Requests estimated waiting in the replicas' own queues at the last check (scraped, plus dispatches since).",
		}),
		stale: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "augur_flow_stale_replicas", Help: "Replicas whose metrics were stale at the last check.",
		}),
	}
	reg.MustRegister(m.outcomes, m.waits, m.queued, m.bytes, m.saturated, m.waiting, m.stale)
	return m
}

func (m *Metrics) outcome(req *scheduler.Request, o Outcome, waited time.Duration, b *band) {
	if m == nil {
		return
	}
	m.outcomes.WithLabelValues(b.label, string(o)).Inc()
	m.waits.WithLabelValues(b.label, string(o)).Observe(waited.Seconds())
}

func (m *Metrics) queuedDelta(b *band, n int, bytes int64) {
	if m == nil {
		return
	}
	m.queued.WithLabelValues(b.label).Add(float64(n))
	m.bytes.WithLabelValues(b.label).Add(float64(bytes))
}

func (m *Metrics) saturation(s SaturationState) {
	if m == nil {
		return
	}
	v := 0.0
	if s.Saturated {
		v = 1
	}
	m.saturated.Set(v)
	m.waiting.Set(s.Waiting)
	m.stale.Set(float64(s.Stale))
}
