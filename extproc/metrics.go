package extproc

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/augur-llm/augur/pool"
	"github.com/augur-llm/augur/requestcontrol"
)

// Metrics are the picker's request-path metrics. A nil *Metrics records nothing.
type Metrics struct {
	requests  *prometheus.CounterVec
	decisions prometheus.Histogram
	ttft      *prometheus.HistogramVec
	tpot      *prometheus.HistogramVec
}

// NewMetrics creates the metrics and registers them, with per-replica in-flight gauges read
// from p at scrape time.
func NewMetrics(reg prometheus.Registerer, p *pool.Pool) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "augur_requests_total", Help: "Requests handled by the picker, by outcome.",
		}, []string{"outcome"}),
		decisions: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "augur_decision_duration_seconds",
			Help:    "Time from the end of the request body to the routing decision being sent.",
			Buckets: prometheus.ExponentialBuckets(10e-6, 2, 16),
		}),
		ttft: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "augur_ttft_seconds",
			Help:    "Time to first token measured by the picker, from dispatch, by replica.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 16),
		}, []string{"endpoint"}),
		tpot: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "augur_tpot_seconds",
			Help:    "Time per output token measured by the picker, by replica.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}, []string{"endpoint"}),
	}
	reg.MustRegister(m.requests, m.decisions, m.ttft, m.tpot, &loadCollector{pool: p})
	return m
}

func (m *Metrics) request(o Outcome) {
	if m != nil {
		m.requests.WithLabelValues(string(o)).Inc()
	}
}

func (m *Metrics) decision(d time.Duration) {
	if m != nil {
		m.decisions.Observe(d.Seconds())
	}
}

// Observe implements requestcontrol.Observer: it counts the completion and its latencies.
func (m *Metrics) Observe(c requestcontrol.Completion) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(string(c.Outcome)).Inc()
	if c.TTFT > 0 {
		m.ttft.WithLabelValues(c.Target.Name).Observe(c.TTFT.Seconds())
	}
	if c.TPOT > 0 {
		m.tpot.WithLabelValues(c.Target.Name).Observe(c.TPOT.Seconds())
	}
}

var (
	inflightDesc = prometheus.NewDesc("augur_inflight_requests",
		"Requests this picker dispatched to a replica and has not seen finish.", []string{"endpoint"}, nil)
	prefillDesc = prometheus.NewDesc("augur_inflight_prefill_tokens",
		"Prompt tokens dispatched to a replica whose first token has not been seen.", []string{"endpoint"}, nil)
	freshDesc = prometheus.NewDesc("augur_endpoint_metrics_fresh",
		"1 when the replica's scraped metrics are fresh enough to route on, else 0.", []string{"endpoint"}, nil)
)

// loadCollector reads the pool when scraped, so membership changes need no bookkeeping.
type loadCollector struct{ pool *pool.Pool }

func (c *loadCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- inflightDesc
	ch <- prefillDesc
	ch <- freshDesc
}

func (c *loadCollector) Collect(ch chan<- prometheus.Metric) {
	for _, r := range c.pool.Replicas() {
		l := r.Load()
		ch <- prometheus.MustNewConstMetric(inflightDesc, prometheus.GaugeValue, float64(l.Requests), r.Name)
		ch <- prometheus.MustNewConstMetric(prefillDesc, prometheus.GaugeValue, float64(l.PrefillTokens), r.Name)
		fresh := 0.0
		if c.pool.Fresh(r) {
			fresh = 1
		}
		ch <- prometheus.MustNewConstMetric(freshDesc, prometheus.GaugeValue, fresh, r.Name)
	}
}
