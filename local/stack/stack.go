package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/augur-llm/augur/local/gateway"
	"github.com/augur-llm/augur/picker"
	"github.com/augur-llm/augur/pool"
	"github.com/augur-llm/augur/requestcontrol"
	"github.com/augur-llm/augur/windtunnel/sim"
)

// Config describes the stack to start. Zero fields take the defaults noted.
type Config struct {
	Replicas int    // default 4
	Profile  string // simulator profile, default "8b-h100"
	// Profiles, when set, gives each replica its own profile (and sets Replicas): a
	// heterogeneous pool. Each replica's class is its profile's name.
	Profiles       []string
	Model          string  // served model, default "sim-llama-8b"
	Seed           uint64  // default 1
	StreamInterval int     // tokens per SSE chunk, default 1
	TimeScale      float64 // simulator speed factor, default 1
	// TokenText is the replicas' generated text: the echo rule by default, or tokens of
	// natural lengths (sim.TokenTextNatural).
	TokenText sim.TokenText
	// Picker is the picker's configuration; its endpoints are filled in with the replicas.
	Picker picker.Config
	// Observe receives the picker's completions.
	Observe func(requestcontrol.Completion)
	Log     *slog.Logger
}

// Replica is one running simulated replica.
type Replica struct {
	Name    string
	Address string
	Engine  *sim.Engine

	srv *http.Server
}

// Stack is a running stack. Close stops it.
type Stack struct {
	// GatewayURL is the base URL clients use, e.g. "http://127.0.0.1:40123/v1".
	GatewayURL string
	PickerAddr string
	// MetricsURL is the picker's Prometheus endpoint, e.g. "http://127.0.0.1:40124/metrics".
	MetricsURL string
	Replicas   []Replica
	Picker     *picker.Picker

	cancel  context.CancelFunc
	wg      sync.WaitGroup
	errMu   sync.Mutex
	errs    []error
	servers []*http.Server
}

// Start starts a stack and waits until the picker has fresh metrics for every replica.
func Start(ctx context.Context, cfg Config) (*Stack, error) {
	if cfg.Replicas <= 0 {
		cfg.Replicas = 4
	}
	if cfg.Profile == "" {
		cfg.Profile = "8b-h100"
	}
	if cfg.Model == "" {
		cfg.Model = "sim-llama-8b"
	}
	if cfg.Seed == 0 {
		cfg.Seed = 1
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if len(cfg.Profiles) == 0 {
		for range cfg.Replicas {
			cfg.Profiles = append(cfg.Profiles, cfg.Profile)
		}
	}
	cfg.Replicas = len(cfg.Profiles)
	profs := make([]sim.Profile, len(cfg.Profiles))
	for i, name := range cfg.Profiles {
		p, err := sim.LookupProfile(name)
		if err != nil {
			return nil, err
		}
		profs[i] = p
	}
	runCtx, cancel := context.WithCancel(context.Background())
	s := &Stack{cancel: cancel}
	fail := func(err error) (*Stack, error) {
		s.Close()
		return nil, err
	}

	var eps []pool.Endpoint
	for i := range cfg.Replicas {
		name := fmt.Sprintf("sim-%d", i)
		eng, err := sim.New(sim.Config{Model: cfg.Model, Profile: profs[i], Seed: cfg.Seed + uint64(i), TimeScale: cfg.TimeScale}, clock.RealClock{})
		if err != nil {
			return fail(fmt.Errorf("replica %s: %w", name, err))
		}
		srv, err := sim.NewServer(eng, sim.ServerOptions{Name: name, StreamInterval: cfg.StreamInterval, TokenText: cfg.TokenText, Logger: cfg.Log})
		if err != nil {
			return fail(fmt.Errorf("replica %s: %w", name, err))
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fail(fmt.Errorf("replica %s: %w", name, err))
		}
		s.goRun(func() error { return eng.Run(runCtx) })
		hs := s.serveHTTP(ln, srv)
		addr := ln.Addr().String()
		s.Replicas = append(s.Replicas, Replica{Name: name, Address: addr, Engine: eng, srv: hs})
		eps = append(eps, pool.Endpoint{Name: name, Address: addr, Class: profs[i].Name})
	}

	pcfg := cfg.Picker
	pcfg.Endpoints, pcfg.EndpointsFile = eps, ""
	var observers []requestcontrol.Observer
	if cfg.Observe != nil {
		observers = append(observers, requestcontrol.ObserverFunc(cfg.Observe))
	}
	p, err := picker.New(pcfg, picker.Options{Log: cfg.Log, Observers: observers})
	if err != nil {
		return fail(err)
	}
	s.Picker = p
	gln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	s.PickerAddr = gln.Addr().String()
	mln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = gln.Close()
		return fail(err)
	}
	s.MetricsURL = "http://" + mln.Addr().String() + "/metrics"
	s.goRun(func() error { return p.Serve(runCtx, gln, mln) })

	gw, err := gateway.New(gateway.Config{Picker: s.PickerAddr, Logger: cfg.Log})
	if err != nil {
		return fail(err)
	}
	wln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	s.GatewayURL = "http://" + wln.Addr().String() + "/v1"
	s.goRun(func() error {
		defer gw.Close()
		return gw.Serve(runCtx, wln)
	})

	for {
		all := true
		for _, r := range p.Pool.Replicas() {
			all = all && p.Pool.Fresh(r)
		}
		if all {
			return s, nil
		}
		select {
		case <-ctx.Done():
			return fail(fmt.Errorf("stack: replicas not scraped: %w", ctx.Err()))
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (s *Stack) goRun(f func() error) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := f(); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, http.ErrServerClosed) {
			s.errMu.Lock()
			s.errs = append(s.errs, err)
			s.errMu.Unlock()
		}
	}()
}

func (s *Stack) serveHTTP(ln net.Listener, h http.Handler) *http.Server {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	s.servers = append(s.servers, srv)
	s.goRun(func() error { return srv.Serve(ln) })
	return srv
}

// Crash stops replica i as a crashed process would: its connections are cut mid-response and
// its port refuses new ones. The engine keeps running; nothing reaches it.
func (s *Stack) Crash(i int) {
	_ = s.Replicas[i].srv.Close()
}

// Close stops every component and returns the errors they ended with, if any.
func (s *Stack) Close() error {
	s.cancel()
	for _, srv := range s.servers {
		_ = srv.Close()
	}
	s.wg.Wait()
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return errors.Join(s.errs...)
}
