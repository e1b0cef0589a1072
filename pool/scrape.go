package pool

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
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

// Scraper keeps every replica's metrics current by reading /metrics on an interval.
type Scraper struct {
	Pool     *Pool
	Clock    clock.WithTicker
	Client   *http.Client
	Interval time.Duration // default DefaultScrapeInterval
	Timeout  time.Duration // per scrape; default 1 s
	Log      *slog.Logger
}

// Run scrapes until ctx is done. Each replica has at most one scrape in flight, so a slow
// replica is skipped for a tick rather than piling up requests.
func (s *Scraper) Run(ctx context.Context) {
	interval := s.Interval
	if interval <= 0 {
		interval = DefaultScrapeInterval
	}
	client := s.Client
	if client == nil {
		client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2, IdleConnTimeout: time.Minute}}
	}
	log := s.Log
	if log == nil {
		log = slog.Default()
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
				if err := s.scrapeOne(ctx, client, r); err != nil && ctx.Err() == nil {
					if !r.failing.Load() {
						log.Warn("scrape failed", "replica", r.Name, "err", err)
					}
					r.ScrapeFailed()
				}
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

func (s *Scraper) scrapeOne(ctx context.Context, client *http.Client, r *Replica) error {
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.Endpoint().metricsURL(), nil)
	if err != nil {
		return fmt.Errorf("scrape %s: %w", r.Name, err)
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("scrape %s: %w", r.Name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("scrape %s: status %d", r.Name, resp.StatusCode)
	}
	m, err := ParseMetrics(io.LimitReader(resp.Body, maxMetricsBytes))
	if err != nil {
		return fmt.Errorf("scrape %s: %w", r.Name, err)
	}
	m.ScrapedAt = s.Clock.Now()
	r.SetMetrics(m)
	return nil
}
