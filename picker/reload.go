package picker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/augur-llm/augur/discovery"
	"github.com/augur-llm/augur/pool"
	"github.com/augur-llm/augur/scheduler"
)

// reloadMetrics count configuration reloads, so a rejected edit is visible on dashboards.
type reloadMetrics struct {
	reloads   *prometheus.CounterVec
	success   prometheus.Gauge
	endpoints *prometheus.CounterVec
}

func newReloadMetrics(reg prometheus.Registerer) *reloadMetrics {
	m := &reloadMetrics{
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "augur_config_reloads_total", Help: "Configuration reloads, by result (applied or rejected).",
		}, []string{"result"}),
		success: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "augur_config_last_reload_successful", Help: "1 when the last configuration reload was applied, 0 when it was rejected.",
		}),
	}
	m.endpoints = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "augur_endpoint_updates_total", Help: "Endpoint-set updates from discovery, by result (applied or rejected).",
	}, []string{"result"})
	reg.MustRegister(m.reloads, m.success, m.endpoints)
	m.success.Set(1)
	return m
}

// Reload applies a changed configuration to new requests, without a restart: the scheduling
// profile, the fallback count and inline endpoints. Requests being scheduled finish with the
// profile they started with. An invalid configuration is rejected whole and the running one
// stays. Settings that only take effect at start (listen addresses, scrape timing, body limit,
// flow control) are reported in the log when they change, and keep their running values; the
// reloaded profile keeps the running flow control's room filter.
func (p *Picker) Reload(cfg Config) error {
	err := p.reload(cfg)
	result := "applied"
	if err != nil {
		result = "rejected"
		p.reloadMetrics.success.Set(0)
		p.opts.Log.Error("configuration rejected; the running one stays", "err", err)
	} else {
		p.reloadMetrics.success.Set(1)
	}
	p.reloadMetrics.reloads.WithLabelValues(result).Inc()
	return err
}

func (p *Picker) reload(cfg Config) error {
	cfg.withDefaults()
	eps, err := cfg.endpoints()
	if err != nil {
		return err
	}
	if err := cfg.checkModels(); err != nil {
		return err
	}
	if err := cfg.checkFlowControl(); err != nil {
		return err
	}
	p.mu.Lock()
	running := p.cfg.FlowControl // what flow control was built with; a change waits for a restart
	p.mu.Unlock()
	pc, err := profileWithFlow(&cfg, running)
	if err != nil {
		return err
	}
	prof, err := scheduler.DefaultRegistry().Build(pc, handle(p.Pool, p.seed, p.Predictor, p.opts), p.Scheduler.Profile())
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	// Inline endpoints are part of the configuration; when a discovery source (file or
	// Kubernetes) owns the pool, it stays the only writer until a restart.
	inline := p.source == nil && cfg.EndpointsFile == "" && cfg.Kubernetes == nil
	if inline {
		if err := pool.New(p.opts.Clock, 0).Set(eps); err != nil { // validate before changing anything
			return fmt.Errorf("config: %w", err)
		}
	}
	if err := p.Scheduler.SetProfile(prof); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if inline {
		if err := p.Pool.Set(eps); err != nil {
			return fmt.Errorf("config: %w", err)
		}
	}
	p.Scheduler.SetFallbacks(*cfg.Fallbacks)
	p.mu.Lock()
	old := p.cfg
	p.cfg.Profile, p.cfg.ProfileName, p.cfg.Endpoints = cfg.Profile, cfg.ProfileName, cfg.Endpoints
	p.cfg.Fallbacks = cfg.Fallbacks
	p.mu.Unlock()
	for _, f := range []struct {
		name     string
		old, new any
	}{
		{"grpcAddress", old.GRPCAddress, cfg.GRPCAddress}, {"metricsAddress", old.MetricsAddress, cfg.MetricsAddress},
		{"endpointsFile", old.EndpointsFile, cfg.EndpointsFile}, {"kubernetes", old.Kubernetes, cfg.Kubernetes},
		{"scrapeInterval", old.ScrapeInterval, cfg.ScrapeInterval},
		{"scrapeTimeout", old.ScrapeTimeout, cfg.ScrapeTimeout}, {"staleAfter", old.StaleAfter, cfg.StaleAfter},
		{"maxBodyBytes", old.MaxBodyBytes, cfg.MaxBodyBytes},
		{"seed", old.Seed, cfg.Seed}, {"drainTimeout", old.DrainTimeout, cfg.DrainTimeout},
		{"databaseURL", old.DatabaseURL, cfg.DatabaseURL}, {"retention", old.Retention, cfg.Retention},
		{"models", old.Models, cfg.Models}, {"flowControl", old.FlowControl, cfg.FlowControl},
	} {
		if !reflect.DeepEqual(f.old, f.new) {
			p.opts.Log.Warn("configuration setting changed; it takes effect at the next restart", "setting", f.name)
		}
	}
	p.opts.Log.Info("configuration applied", "profile", prof.Name)
	return nil
}

// WatchConfig reloads the configuration file at path whenever its content changes, until ctx
// ends. It follows the file with discovery.WatchFile, as the endpoint file is followed:
// editors' rename-on-save and Kubernetes ConfigMap symlink swaps alike. debounce is the quiet
// period after a change before the file is read; 0 means discovery.DefaultDebounce.
//
// override, when not nil, is applied to every version read, as command-line flags are to the
// file at start.
func (p *Picker) WatchConfig(ctx context.Context, path string, debounce time.Duration, override func(*Config)) {
	w, err := discovery.WatchFile(path, discovery.WatchOptions{Debounce: debounce})
	if err != nil {
		p.opts.Log.Error("cannot watch the configuration file; it will not be reloaded", "path", path, "err", err)
		return
	}
	defer w.Close()
	apply := func(b []byte) {
		cfg, err := ParseConfig(b)
		if err != nil {
			p.reloadMetrics.reloads.WithLabelValues("rejected").Inc()
			p.reloadMetrics.success.Set(0)
			p.opts.Log.Error("configuration rejected; the running one stays", "path", path, "err", err)
			return
		}
		if override != nil {
			override(&cfg)
		}
		_ = p.Reload(cfg) // Reload logs and counts
	}
	// The first read applies the file as it is now, which may already differ from what the
	// picker started with. A file that does not exist yet is picked up when it appears.
	if b, err := w.Read(); err == nil {
		apply(b)
	} else if !errors.Is(err, os.ErrNotExist) {
		p.opts.Log.Warn("cannot read the configuration file", "path", path, "err", err)
	}
	err = w.Run(ctx, apply, func(err error) {
		p.opts.Log.Warn("cannot read the configuration file", "path", path, "err", err)
	})
	if err != nil {
		p.opts.Log.Error("configuration file watch ended; it will not be reloaded", "path", path, "err", err)
	}
}
