package picker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"

	"github.com/augur-llm/augur/discovery"

	"github.com/augur-llm/augur/extproc"
	"github.com/augur-llm/augur/flowcontrol"
	"github.com/augur-llm/augur/pool"
	"github.com/augur-llm/augur/predictor"
	"github.com/augur-llm/augur/requestcontrol"
	"github.com/augur-llm/augur/scheduler"
	"github.com/augur-llm/augur/store"
)

// Options are the parts of a picker that are code, not configuration.
type Options struct {
	Clock clock.WithTicker // default: the real clock
	Log   *slog.Logger
	// Observers receive every routed request's completion, after the recorder and metrics.
	Observers []requestcontrol.Observer
	// Registry receives the picker's metrics; default a new registry with Go and process metrics.
	Registry *prometheus.Registry
	// KubeClient and DynamicClient replace the clients built from the configuration's
	// kubernetes section (tests use fakes).
	KubeClient    kubernetes.Interface
	DynamicClient dynamic.Interface
}

// Picker is an assembled endpoint picker.
type Picker struct {
	mu        sync.Mutex // guards cfg
	cfg       Config
	opts      Options
	seed      uint64
	Pool      *pool.Pool
	Scheduler *scheduler.Scheduler
	Server    *extproc.Server
	registry  *prometheus.Registry

	reloadMetrics *reloadMetrics
	source        discovery.Source // nil for inline endpoints

	db *pgxpool.Pool
	// Recorder records every routed request to Postgres; nil without a database URL.
	Recorder *store.Recorder
	// scraper keeps replica metrics fresh; the lifecycle probes with it too.
	scraper *pool.Scraper
	// Predictor predicts every decision's latencies; models follows where its models come
	// from (nil: the cold start only).
	Predictor *predictor.Predictor
	models    predictor.Source
	// training asks the trainer for new models when a replica drifts; nil without a
	// database.
	training *trainingRequests
	// flow is flow control, the lifecycle's admitter; nil when the configuration has no
	// flowControl section. Its configuration is cfg.FlowControl as the picker started.
	flow *flowcontrol.Controller
}

// New assembles a picker from cfg. Nothing runs until Serve.
func New(cfg Config, opts Options) (*Picker, error) {
	cfg.withDefaults()
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
		opts.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	eps, err := cfg.endpoints()
	if err != nil {
		return nil, err
	}
	if err := cfg.checkModels(); err != nil {
		return nil, err
	}
	p := pool.New(opts.Clock, cfg.StaleAfter.Duration)
	if err := p.Set(eps); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	pc, err := profileWithFlow(&cfg, cfg.FlowControl)
	if err != nil {
		return nil, err
	}
	popts := predictor.Options{Clock: opts.Clock, Log: opts.Log, Metrics: predictor.NewMetrics(opts.Registry)}
	var training *trainingRequests
	if cfg.DatabaseURL != "" {
		training = &trainingRequests{pending: make(chan string, 1)}
		popts.OnDrift = training.onDrift
	}
	pred := predictor.New(popts)
	prof, err := scheduler.DefaultRegistry().Build(pc, handle(p, seed, pred, opts), nil)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	sched, err := scheduler.NewWithPredictor(p, prof, *cfg.Fallbacks, pred)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	rm := newReloadMetrics(opts.Registry)
	source, err := newSource(cfg, opts, func(error) { rm.endpoints.WithLabelValues("rejected").Inc() })
	if err != nil {
		return nil, err
	}
	var db *pgxpool.Pool
	var rec *store.Recorder
	metrics := extproc.NewMetrics(opts.Registry, p)
	observers := []requestcontrol.Observer{metrics}
	if cfg.DatabaseURL != "" {
		// The pool connects lazily: a database that is down at start delays recording, never
		// routing.
		if db, err = pgxpool.New(context.Background(), cfg.DatabaseURL); err != nil {
			return nil, fmt.Errorf("config: databaseURL: %w", err)
		}
		rec = store.NewRecorder(db, store.RecorderOptions{Retention: cfg.Retention.Duration, Clock: opts.Clock,
			Log: opts.Log, Registry: opts.Registry})
		observers = append(observers, Recording(rec))
	}
	// The predictor learns its cold start from completions and measures live error.
	observers = append(observers, pred)
	observers = append(observers, opts.Observers...)
	var models predictor.Source
	switch cfg.Models.Source {
	case ModelsFromDatabase:
		models = predictor.DBSource{DB: db}
	case ModelsFromDirectory:
		models = predictor.DirSource{Dir: cfg.Models.Directory}
	}
	scraper := &pool.Scraper{Pool: p, Clock: opts.Clock, Interval: cfg.ScrapeInterval.Duration,
		Timeout: cfg.ScrapeTimeout.Duration, Log: opts.Log}
	var flow *flowcontrol.Controller
	var admitter requestcontrol.Admitter // nil: every request is scheduled at once
	if cfg.FlowControl != nil {
		flow, err = flowcontrol.New(*cfg.FlowControl, flowcontrol.Options{Pool: p, Clock: flowClock(opts.Clock),
			Metrics: flowcontrol.NewMetrics(opts.Registry), Log: opts.Log})
		if err != nil {
			return nil, fmt.Errorf("config: flowControl: %w", err)
		}
		admitter = flow
		wakeOnScrape(scraper, flow)
	}
	dir := requestcontrol.New(requestcontrol.Config{Pool: p, Scheduler: sched, Clock: opts.Clock, Observers: observers,
		Admitter: admitter, Probe: scraper.Probe, ProbeTimeout: cfg.ScrapeTimeout.Duration})
	srv := extproc.NewServer(extproc.Config{
		Pool: p, Director: dir, Clock: opts.Clock, MaxBodyBytes: cfg.MaxBodyBytes, Metrics: metrics, Log: opts.Log,
	})
	return &Picker{cfg: cfg, opts: opts, seed: seed, Pool: p, Scheduler: sched, Server: srv, registry: opts.Registry,
		reloadMetrics: rm, source: source, db: db, Recorder: rec, scraper: scraper, Predictor: pred, models: models, training: training,
		flow: flow}, nil
}

// profileWithFlow is the profile cfg asks for, with the room filter flow control relies on
// when it runs with configuration fc (nil: off). Reloads pass the running flow control's
// configuration, not the reloaded file's: the controller is built once, and a profile
// filtering by another queue limit than the one it dispatches by would fill replicas' queues
// it believes have room, or starve them.
func profileWithFlow(cfg *Config, fc *flowcontrol.Config) (scheduler.ProfileConfig, error) {
	pc, err := cfg.profile()
	if err != nil || fc == nil {
		return pc, err
	}
	if pc, err = flowcontrol.WithRoom(pc, *fc); err != nil {
		return pc, fmt.Errorf("config: flowControl: %w", err)
	}
	return pc, nil
}

// wakeOnScrape makes every successful scrape wake flow control: fresh metrics are one of the
// events that can show room (a replica's queue drained), and flow control has no ticker of
// its own to notice. The scraper's own Observe, if any, still runs first.
func wakeOnScrape(s *pool.Scraper, flow *flowcontrol.Controller) {
	prev := s.Observe
	s.Observe = func(r *pool.Replica, err error) {
		if prev != nil {
			prev(r, err)
		}
		if err == nil {
			flow.Wake()
		}
	}
}

// FlowControl returns the picker's flow control, nil when its configuration has none.
func (p *Picker) FlowControl() *flowcontrol.Controller { return p.flow }

// handle is what the picker's scheduling plugins get from it.
func handle(p *pool.Pool, seed uint64, pred scheduler.Predictor, opts Options) scheduler.Handle {
	return scheduler.Handle{Pool: p, Clock: opts.Clock, Log: opts.Log, Metrics: opts.Registry, Seed: seed, Predictor: pred}
}

// Serve runs the picker on grpcLis (and metricsLis when not nil) until ctx is done, then
// drains: it stops taking requests, waits up to the drain timeout for those in progress, and
// returns.
func (p *Picker) Serve(ctx context.Context, grpcLis, metricsLis net.Listener) error {
	g := grpc.NewServer()
	p.Server.Register(g)
	runCtx, stop := context.WithCancel(context.Background())
	defer stop()

	var wg sync.WaitGroup
	errc := make(chan error, 2)
	if p.source != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := p.source.Run(runCtx, func(eps []pool.Endpoint) {
				if err := p.Pool.Set(eps); err != nil {
					p.reloadMetrics.endpoints.WithLabelValues("rejected").Inc()
					p.opts.Log.Error("endpoint update rejected; the current set stays", "err", err)
					return
				}
				p.reloadMetrics.endpoints.WithLabelValues("applied").Inc()
				p.opts.Log.Info("endpoints updated", "endpoints", len(eps))
			})
			if err != nil {
				errc <- fmt.Errorf("endpoint discovery: %w", err)
			}
		}()
	}
	recDone := make(chan struct{})
	migrated := make(chan struct{}) // the schema is up to date (closed at once without a database)
	if p.Recorder != nil {
		go func() {
			defer close(recDone)
			p.migrateUntilDone(runCtx)
			if runCtx.Err() == nil {
				close(migrated)
				p.Recorder.Run()
			}
		}()
	} else {
		close(recDone)
		close(migrated)
	}
	if p.models != nil {
		_, fromDB := p.models.(predictor.DBSource)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if fromDB {
				select {
				case <-migrated: // the model table exists
				case <-runCtx.Done():
					return
				}
			}
			p.Predictor.Follow(runCtx, p.models, p.cfg.Models.PollInterval.Duration, p.opts.Clock.After)
		}()
	}
	if p.training != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.training.run(runCtx, p.db, p.opts.Clock, p.opts.Log)
		}()
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		p.scraper.Run(runCtx)
	}()
	go func() {
		defer wg.Done()
		p.Server.RunHealth(runCtx, p.opts.Clock, 100*time.Millisecond)
	}()

	var metricsSrv *http.Server
	if metricsLis != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(p.registry, promhttp.HandlerOpts{}))
		metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := metricsSrv.Serve(metricsLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				p.opts.Log.Error("metrics server", "err", err)
			}
		}()
	}

	go func() {
		if err := g.Serve(grpcLis); err != nil {
			errc <- fmt.Errorf("grpc server: %w", err)
		}
	}()
	p.opts.Log.Info("picker serving", "grpc", grpcLis.Addr().String(), "endpoints", len(p.Pool.Replicas()))

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	p.Server.Drain()
	done := make(chan struct{})
	go func() { g.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-p.opts.Clock.After(p.cfg.DrainTimeout.Duration):
		p.opts.Log.Warn("drain timeout: closing streams still open")
		g.Stop()
	}
	stop() // scrapes, health, discovery and a migration still retrying
	if p.Recorder != nil {
		// The writer stops and what is buffered gets a few seconds to reach the database.
		fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if cerr := p.Recorder.Close(fctx); cerr != nil {
			p.opts.Log.Warn("samples left unwritten at shutdown", "err", cerr)
		}
		cancel()
		<-recDone
		st := p.Recorder.Stats()
		p.opts.Log.Info("recorder stopped", "recorded", st.Recorded, "dropped_full", st.DroppedFull,
			"dropped_shutdown", st.DroppedShutdown, "invalid", st.Invalid)
		p.db.Close()
	}
	if metricsSrv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = metricsSrv.Shutdown(sctx)
		cancel()
	}
	stop()
	wg.Wait()
	return err
}

// migrateUntilDone brings the schema up to date, retrying while the database is away; samples
// wait in the recorder's buffer meanwhile.
func (p *Picker) migrateUntilDone(ctx context.Context) {
	backoff := wait.Backoff{Duration: 200 * time.Millisecond, Factor: 2, Cap: 5 * time.Second, Steps: math.MaxInt32}.DelayFunc()
	for logged := false; ; {
		err := store.Migrate(ctx, p.db)
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			return
		}
		if !logged {
			p.opts.Log.Warn("database not ready; recording waits", "err", err)
			logged = true
		}
		select {
		case <-ctx.Done():
			return
		case <-p.opts.Clock.After(backoff()):
		}
	}
}

// Config returns the effective configuration, defaults applied.
func (p *Picker) Config() Config {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cfg
}
