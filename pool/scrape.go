package pool

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/utils/clock"
)

// DefaultScrapeInterval is how often each replica's /metrics is read; llm-d's figure.
const DefaultScrapeInterval = 50 * time.Millisecond

// maxMetricsBytes bounds one scrape so a misbehaving server cannot exhaust the picker's memory.
const maxMetricsBytes = 8 << 20

// ParseMetrics extracts the vLLM metrics the picker uses from Prometheus text exposition.
// Series of one family (several models or engines on one server) are summed.
func ParseMetrics(r io.Reader) (Metrics, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return Metrics{}, fmt.Errorf("parse metrics: %w", err)
	}
	var m Metrics
	running, okR := sum(fams, "vllm:num_requests_running")
	waiting, okW := sum(fams, "vllm:num_requests_waiting")
	if !okR || !okW {
		return Metrics{}, fmt.Errorf("parse metrics: vllm:num_requests_running or vllm:num_requests_waiting missing")
	}
	m.Running, m.Waiting = int(running), int(waiting)
	if v, ok := sum(fams, "vllm:kv_cache_usage_perc"); ok {
		m.KVUsage = v
	} else if v, ok := sum(fams, "vllm:gpu_cache_usage_perc"); ok {
		m.KVUsage = v // vLLM before V1 used this name
	}
	m.PrefixQueries, _ = sum(fams, "vllm:prefix_cache_queries_total", "vllm:prefix_cache_queries")
	m.PrefixHits, _ = sum(fams, "vllm:prefix_cache_hits_total", "vllm:prefix_cache_hits")
	m.Preemptions, _ = sum(fams, "vllm:num_preemptions_total", "vllm:num_preemptions")
	if f := fams["vllm:cache_config_info"]; f != nil {
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				switch l.GetName() {
				case "block_size":
					m.BlockSize, _ = strconv.Atoi(l.GetValue())
				case "num_gpu_blocks":
					m.NumGPUBlocks, _ = strconv.Atoi(l.GetValue())
				}
			}
		}
	}
	return m, nil
}

func sum(fams map[string]*dto.MetricFamily, names ...string) (float64, bool) {
	for _, n := range names {
		f := fams[n]
		if f == nil {
			continue
		}
		var v float64
		for _, s := range f.GetMetric() {
			switch {
			case s.Gauge != nil:
				v += s.Gauge.GetValue()
			case s.Counter != nil:
				v += s.Counter.GetValue()
			case s.Untyped != nil:
				v += s.Untyped.GetValue()
			}
		}
		return v, true
	}
	return 0, false
}

// Scraper keeps every replica's metrics current by reading /metrics on an interval, and its
// served models by reading /v1/models now and then.
type Scraper struct {
	Pool     *Pool
	Clock    clock.WithTicker
	Client   *http.Client
	Interval time.Duration // default DefaultScrapeInterval
	Timeout  time.Duration // per scrape; default 1 s
	// ModelsInterval is how often /v1/models is read again; default DefaultModelsInterval.
	ModelsInterval time.Duration
	Log            *slog.Logger
	// Observe, if set, is told of every scrape's result (nil on success) once the replica's
	// state reflects it. It is called from scrape goroutines, concurrently.
	Observe func(r *Replica, err error)

	clientOnce    sync.Once
	defaultClient *http.Client
}

func (s *Scraper) client() *http.Client {
	if s.Client != nil {
		return s.Client
	}
	s.clientOnce.Do(func() {
		s.defaultClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2, IdleConnTimeout: time.Minute}}
	})
	return s.defaultClient
}

func (s *Scraper) log() *slog.Logger {
	if s.Log == nil {
		return slog.Default()
	}
	return s.Log
}

// Run scrapes until ctx is done. Each replica has at most one scrape in flight, so a slow
// replica is skipped for a tick rather than piling up requests.
func (s *Scraper) Run(ctx context.Context) {
	interval := s.Interval
	if interval <= 0 {
		interval = DefaultScrapeInterval
	}
	var mu sync.Mutex
	busy := map[*Replica]bool{}
	var wg sync.WaitGroup
	defer wg.Wait()
	tick := s.Clock.NewTicker(interval)
	defer tick.Stop()
	for {
		for _, r := range s.Pool.Replicas() {
			mu.Lock()
			if busy[r] {
				mu.Unlock()
				continue
			}
			busy[r] = true
			mu.Unlock()
			wg.Add(1)
			go func(r *Replica) {
				defer wg.Done()
				_ = s.scrape(ctx, r) // scrape logs the transitions that matter
				mu.Lock()
				delete(busy, r)
				mu.Unlock()
			}(r)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C():
		}
	}
}

// Probe scrapes r now, as the periodic scrape does, and updates its state: a failure takes it
// out of rotation, a success brings it back. The request path uses it to tell, when a response
// is cut, whether the replica died or the client left. A Probe cut short by ctx changes nothing.
func (s *Scraper) Probe(ctx context.Context, r *Replica) error {
	return s.scrape(ctx, r)
}

// scrape reads r's metrics once and records the result; the path shared by Run and Probe.
func (s *Scraper) scrape(ctx context.Context, r *Replica) error {
	seq := r.scrapeStarted.Add(1)
	counts := r.counts()
	m, err := s.fetchMetrics(ctx, r)
	m.Counts = counts
	if err != nil && ctx.Err() != nil {
		// The caller gave up (shutdown, a client gone): that says nothing about the replica.
		return err
	}
	if !r.claimResult(seq) {
		return err // a scrape that started later already told the replica's state
	}
	if err != nil {
		if !r.failing.Swap(true) {
			s.log().Warn("replica failing; out of rotation until a scrape succeeds", "replica", r.Name, "err", err)
		}
		s.observe(r, err)
		return err
	}
	r.metrics.Store(&m)
	recovered := r.failing.Swap(false)
	if recovered {
		s.log().Info("replica recovered; back in rotation", "replica", r.Name)
	}
	// A replica that comes back may have restarted with other models.
	s.refreshModels(ctx, r, recovered)
	s.observe(r, nil)
	return nil
}

func (s *Scraper) observe(r *Replica, err error) {
	if s.Observe != nil {
		s.Observe(r, err)
	}
}

// refreshModels reads r's /v1/models when it is due. A failed read keeps what was known: the
// metrics scrape, not this, decides whether the replica is up.
func (s *Scraper) refreshModels(ctx context.Context, r *Replica, force bool) {
	interval := s.ModelsInterval
	if interval <= 0 {
		interval = DefaultModelsInterval
	}
	if !modelsDue(r, s.Clock.Now(), interval, force) {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	ids, err := fetchModels(ctx, s.client(), r)
	if err != nil {
		s.log().Debug("cannot read served models", "replica", r.Name, "err", err)
		return
	}
	prev, _ := r.Models()
	r.models.Store(&modelState{ids: ids, checkedAt: s.Clock.Now()})
	if !slices.Equal(prev, ids) {
		s.log().Info("replica models", "replica", r.Name, "models", ids)
	}
}

func (s *Scraper) timeout() time.Duration {
	if s.Timeout <= 0 {
		return time.Second
	}
	return s.Timeout
}

func (s *Scraper) fetchMetrics(ctx context.Context, r *Replica) (Metrics, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.Endpoint().metricsURL(), nil)
	if err != nil {
		return Metrics{}, fmt.Errorf("scrape %s: %w", r.Name, err)
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := s.client().Do(req)
	if err != nil {
		return Metrics{}, fmt.Errorf("scrape %s: %w", r.Name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return Metrics{}, fmt.Errorf("scrape %s: status %d", r.Name, resp.StatusCode)
	}
	m, err := ParseMetrics(io.LimitReader(resp.Body, maxMetricsBytes))
	if err != nil {
		return Metrics{}, fmt.Errorf("scrape %s: %w", r.Name, err)
	}
	m.ScrapedAt = s.Clock.Now()
	return m, nil
}
