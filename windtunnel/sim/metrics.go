package sim

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Bucket bounds follow vLLM's, so that dashboards and scrapers built for vLLM read the
// simulator unchanged.
var (
	ttftBuckets = []float64{0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
		1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0}
	itlBuckets = []float64{0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
		1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0}
	requestBuckets = []float64{0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0,
		40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0}
)

// metrics exposes an engine under vLLM V1's metric names. Gauges and counters are read from
// a Snapshot at scrape time, so the engine keeps a single source of truth; histograms are
// observed by the engine as events happen. Counter names carry their _total suffix
// themselves: client_golang's text format writes names verbatim.
type metrics struct {
	e *Engine

	running, waiting, kvUsage              *prometheus.Desc
	prefixQueries, prefixHits, preemptions *prometheus.Desc
	promptTokens, generationTokens         *prometheus.Desc
	cacheConfig                            *prometheus.Desc

	ttft, itl, e2e, queueTime prometheus.Histogram
}

func newMetrics(e *Engine) *metrics {
	labels := prometheus.Labels{"model_name": e.cfg.Model, "engine": "0"}
	desc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, nil, labels)
	}
	hist := func(name, help string, buckets []float64) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: name, Help: help, Buckets: buckets, ConstLabels: labels,
		})
	}
	return &metrics{
		e:                e,
		running:          desc("vllm:num_requests_running", "Number of requests in model execution batches."),
		waiting:          desc("vllm:num_requests_waiting", "Number of requests waiting to be processed."),
		kvUsage:          desc("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage."),
		prefixQueries:    desc("vllm:prefix_cache_queries_total", "Prefix cache queries, in terms of number of queried tokens."),
		prefixHits:       desc("vllm:prefix_cache_hits_total", "Prefix cache hits, in terms of number of cached tokens."),
		preemptions:      desc("vllm:num_preemptions_total", "Cumulative number of preemptions from the engine."),
		promptTokens:     desc("vllm:prompt_tokens_total", "Number of prefill tokens processed."),
		generationTokens: desc("vllm:generation_tokens_total", "Number of generation tokens processed."),
		cacheConfig: prometheus.NewDesc("vllm:cache_config_info", "Information of the KV cache configuration.",
			nil, prometheus.Labels{
				"engine":         "0",
				"block_size":     strconv.Itoa(BlockSize),
				"num_gpu_blocks": strconv.Itoa(e.cfg.Profile.NumGPUBlocks),
			}),
		ttft: hist("vllm:time_to_first_token_seconds",
			"Histogram of time to first token in seconds, from arrival.", ttftBuckets),
		itl: hist("vllm:inter_token_latency_seconds",
			"Histogram of inter-token latency in seconds.", itlBuckets),
		e2e: hist("vllm:e2e_request_latency_seconds",
			"Histogram of end-to-end request latency in seconds.", requestBuckets),
		queueTime: hist("vllm:request_queue_time_seconds",
			"Histogram of time spent in the waiting queue in seconds.", requestBuckets),
	}
}

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.running, m.waiting, m.kvUsage, m.prefixQueries, m.prefixHits,
		m.preemptions, m.promptTokens, m.generationTokens, m.cacheConfig} {
		ch <- d
	}
	for _, h := range []prometheus.Histogram{m.ttft, m.itl, m.e2e, m.queueTime} {
		h.Describe(ch)
	}
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	s := m.e.Snapshot()
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	counter := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge(m.running, float64(s.Running))
	gauge(m.waiting, float64(s.Waiting))
	gauge(m.kvUsage, s.KVCacheUsage)
	counter(m.prefixQueries, s.PrefixCacheQueries)
	counter(m.prefixHits, s.PrefixCacheHits)
	counter(m.preemptions, s.Preemptions)
	counter(m.promptTokens, s.PromptTokens)
	counter(m.generationTokens, s.GenerationTokens)
	gauge(m.cacheConfig, 1)
	for _, h := range []prometheus.Histogram{m.ttft, m.itl, m.e2e, m.queueTime} {
		h.Collect(ch)
	}
}

// Collector exposes the engine's metrics under vLLM's names, with labels model_name and
// engine="0". Register it in a registry of the replica's own, never the global one, so that
// several replicas can live in one process.
func (e *Engine) Collector() prometheus.Collector { return e.metrics }
