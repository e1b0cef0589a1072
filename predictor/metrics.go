package predictor

import (
	"math"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/augur-llm/augur/models"
)

// Metrics are the predictor's Prometheus metrics: where predictions come from, the model
// version serving, model loads, live prediction error per target and replica class, so
// that drift shows within minutes of starting, and per replica the drift correction.
type Metrics struct {
	source   *prometheus.GaugeVec
	info     *prometheus.GaugeVec
	loads    *prometheus.CounterVec
	ape      *prometheus.HistogramVec
	coverage *prometheus.CounterVec

	driftRatio  *prometheus.GaugeVec
	driftActive *prometheus.GaugeVec
	driftOnsets *prometheus.CounterVec

	mu      sync.Mutex
	version string
}

// APEBuckets are the buckets of the live error histogram: absolute percentage error as a
// fraction (0.05 = 5%).
func APEBuckets() []float64 {
	return []float64{0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2, 5}
}

// NewMetrics registers the predictor's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		source: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "augur_predictor_source",
			Help: "1 for where each target's predictions come from: model (trained), online (prior fitted from this picker's samples) or default (no sample yet).",
		}, []string{"target", "source"}),
		info: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "augur_model_info", Help: "1 for the model version serving.",
		}, []string{"version"}),
		loads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "augur_model_loads_total",
			Help: "Published model sets the predictor read, by result: loaded, or refused (corrupt, truncated, another schema, insane predictions; the previous models keep serving).",
		}, []string{"result"}),
		ape: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "augur_prediction_error_ratio",
			Help:    "Absolute percentage error of the mean prediction against the observed latency, as a fraction, per target and replica class.",
			Buckets: APEBuckets(),
		}, []string{"target", "class"}),
		coverage: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "augur_prediction_upper_total",
			Help: "Observed latencies against the upper-quantile prediction, per target and class: result within (at or below it) or above.",
		}, []string{"target", "class", "result"}),
		driftRatio: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "augur_drift_ratio",
			Help: "Per replica and target, the exponentially weighted mean ratio of observed to predicted latency (the models' prediction, before any correction) since the serving models loaded: the replica's TPOT predictions are multiplied by it, its TTFT predictions while augur_drift_active is 1.",
		}, []string{"replica", "target"}),
		driftActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "augur_drift_active",
			Help: "1 while a replica's latency departs from the models' predictions (augur_drift_ratio beyond the threshold for a window of its completions); reset when new models load.",
		}, []string{"replica"}),
		driftOnsets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "augur_drift_onsets_total",
			Help: "Times a replica started drifting from the models' predictions, by the target whose error crossed the threshold.",
		}, []string{"replica", "target"}),
	}
	reg.MustRegister(m.source, m.info, m.loads, m.ape, m.coverage, m.driftRatio, m.driftActive, m.driftOnsets)
	return m
}

func (m *Metrics) setSource(t models.Target, src string) {
	for _, s := range []string{SourceModel, SourceOnline, SourceDefault} {
		v := 0.0
		if s == src {
			v = 1
		}
		m.source.WithLabelValues(string(t), s).Set(v)
	}
}

func (m *Metrics) setVersion(v string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.version != "" {
		m.info.DeleteLabelValues(m.version)
	}
	m.version = v
	m.info.WithLabelValues(v).Set(1)
}

func (m *Metrics) load(result string) { m.loads.WithLabelValues(result).Inc() }

func (m *Metrics) observe(t models.Target, class string, observed, mean float64, upper *float64) {
	if observed <= 0 || math.IsNaN(mean) {
		return
	}
	m.ape.WithLabelValues(string(t), class).Observe(math.Abs(mean-observed) / observed)
	if upper != nil {
		r := "within"
		if observed > *upper {
			r = "above"
		}
		m.coverage.WithLabelValues(string(t), class, r).Inc()
	}
}
