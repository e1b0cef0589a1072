package pool

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// logCounter counts log records by level, so tests can check that transitions are logged once.
type logCounter struct {
	mu   sync.Mutex
	recs []slog.Record
	msgs []string
}

func (l *logCounter) Enabled(context.Context, slog.Level) bool { return true }
func (l *logCounter) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logCounter) WithGroup(string) slog.Handler            { return l }
func (l *logCounter) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, r)
	l.msgs = append(l.msgs, r.Message)
	return nil
}

// count is the records at level whose message starts with prefix.
func (l *logCounter) count(level slog.Level, prefix string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.recs {
		if r.Level == level && strings.HasPrefix(r.Message, prefix) {
			n++
		}
	}
	return n
}

// The transitions' log messages start with these.
const (
	logFailing   = "replica failing"
	logRecovered = "replica recovered"
)

// replicaServer is a fake vLLM replica, an httptest server that can be stopped and started
// again on the same address, serving /metrics and /v1/models as its mode says.
type replicaServer struct {
	t    *testing.T
	addr string
	srv  *httptest.Server

	mu           sync.Mutex
	mode         string        // "ok", "500", "garbage", "hang", "gate"
	gate         chan struct{} // mode "gate": answers ok once closed
	entered      chan struct{} // mode "gate": receives each request as it arrives
	models       []string
	modelsStatus int
	modelsReads  atomic.Int64
}

func newReplicaServer(t *testing.T) *replicaServer {
	s := &replicaServer{t: t, addr: "127.0.0.1:0", mode: "ok", models: []string{"m"}, modelsStatus: http.StatusOK}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *replicaServer) set(f func(s *replicaServer)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func (s *replicaServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	mode, models, status, gate, entered := s.mode, slices.Clone(s.models), s.modelsStatus, s.gate, s.entered
	s.mu.Unlock()
	if r.URL.Path == "/v1/models" {
		s.modelsReads.Add(1)
		if status != http.StatusOK {
			http.Error(w, "no", status)
			return
		}
		type model struct {
			ID string `json:"id"`
		}
		var data []model
		for _, m := range models {
			data = append(data, model{ID: m})
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"object": "list", "data": data})
		return
	}
	switch mode {
	case "500":
		http.Error(w, "down", http.StatusInternalServerError)
	case "garbage":
		_, _ = w.Write([]byte("not metrics {{{"))
	case "hang":
		<-r.Context().Done()
	case "gate":
		entered <- struct{}{}
		<-gate
		_, _ = w.Write([]byte(vllmText))
	default:
		_, _ = w.Write([]byte(vllmText))
	}
}

// start listens on the server's address: the same one again after stop.
func (s *replicaServer) start() {
	s.t.Helper()
	l, err := net.Listen("tcp", s.addr)
	if err != nil {
		s.t.Fatalf("listen %s: %v", s.addr, err)
	}
	s.addr = l.Addr().String()
	s.srv = &httptest.Server{Listener: l, Config: &http.Server{Handler: s}}
	s.srv.Start()
}

// stop closes the listener and every connection: the next scrape is refused.
func (s *replicaServer) stop() {
	if s.srv != nil {
		s.srv.CloseClientConnections()
		s.srv.Close()
		s.srv = nil
	}
}

func newTestPool(t *testing.T, clk *clocktesting.FakeClock, eps ...Endpoint) *Pool {
	t.Helper()
	// Metrics never go stale on the fake clock: whatever takes a replica out is the failure.
	p := New(clk, time.Hour)
	if err := p.Set(eps); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestScrapeFailureTakesReplicaOutAtOnce runs the periodic scraper against a replica that goes
// away and comes back on the same address.
func TestScrapeFailureTakesReplicaOutAtOnce(t *testing.T) {
	srv := newReplicaServer(t)
	clk := clocktesting.NewFakeClock(time.Unix(1000, 0))
	p := newTestPool(t, clk, Endpoint{Name: "a", Address: srv.addr})
	r := p.Replicas()[0]
	logs := &logCounter{}
	type result struct{ err error }
	events := make(chan result, 100)
	const interval = 50 * time.Millisecond
	sc := &Scraper{Pool: p, Clock: clk, Interval: interval, Log: slog.New(logs),
		Observe: func(_ *Replica, err error) { events <- result{err} }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sc.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})

	// next steps the fake clock until a scrape reports: a tick is skipped while the replica's
	// previous scrape is still winding up.
	next := func() error {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case e := <-events:
				return e.err
			case <-deadline:
				t.Fatal("no scrape reported in 10 s")
			case <-time.After(20 * time.Millisecond):
				clk.Step(interval)
			}
		}
	}
	if err := next(); err != nil {
		t.Fatalf("first scrape: %v", err)
	}
	if !p.Fresh(r) || !p.Ready() {
		t.Fatal("a scraped replica is not fresh")
	}

	srv.stop()
	if err := next(); err == nil {
		t.Fatal("a scrape of a stopped replica succeeded")
	}
	if p.Fresh(r) || p.Ready() || !r.Failing() {
		t.Fatal("a replica whose scrape failed is still in rotation")
	}
	for range 3 {
		if err := next(); err == nil {
			t.Fatal("a scrape of a stopped replica succeeded")
		}
	}
	if n := logs.count(slog.LevelWarn, logFailing); n != 1 {
		t.Errorf("%d warnings for one failing streak, want 1 (%v)", n, logs.msgs)
	}

	srv.start()
	// Scrapes already under way may still fail; wait for the first that succeeds.
	for next() != nil {
	}
	if !p.Fresh(r) || r.Failing() {
		t.Fatal("a replica that answers again is not back in rotation")
	}
	if n := logs.count(slog.LevelInfo, logRecovered); n != 1 {
		t.Errorf("%d info records for one recovery, want 1 (%v)", n, logs.msgs)
	}
	if n := logs.count(slog.LevelWarn, logFailing); n != 1 {
		t.Errorf("%d warnings, want 1 (%v)", n, logs.msgs)
	}
}

// TestProbeFailureModes checks each way a scrape can fail, through Probe.
func TestProbeFailureModes(t *testing.T) {
	for _, mode := range []string{"refused", "500", "garbage", "hang"} {
		t.Run(mode, func(t *testing.T) {
			srv := newReplicaServer(t)
			clk := clocktesting.NewFakeClock(time.Unix(1000, 0))
			p := newTestPool(t, clk, Endpoint{Name: "a", Address: srv.addr})
			r := p.Replicas()[0]
			logs := &logCounter{}
			sc := &Scraper{Pool: p, Clock: clk, Timeout: 100 * time.Millisecond, Log: slog.New(logs)}
			ctx := context.Background()
			if err := sc.Probe(ctx, r); err != nil || !p.Fresh(r) {
				t.Fatalf("probe of a healthy replica: %v, fresh %v", err, p.Fresh(r))
			}
			fail := func() {
				if mode == "refused" {
					srv.stop()
				} else {
					srv.set(func(s *replicaServer) { s.mode = mode })
				}
			}
			heal := func() {
				if mode == "refused" {
					srv.start()
				} else {
					srv.set(func(s *replicaServer) { s.mode = "ok" })
				}
			}
			for round := 1; round <= 2; round++ {
				fail()
				for range 2 {
					if err := sc.Probe(ctx, r); err == nil {
						t.Fatal("probe of a failing replica succeeded")
					}
					if p.Fresh(r) || !r.Failing() {
						t.Fatal("a failing replica is still in rotation")
					}
				}
				heal()
				if err := sc.Probe(ctx, r); err != nil || !p.Fresh(r) || r.Failing() {
					t.Fatalf("probe after recovery: %v, fresh %v", err, p.Fresh(r))
				}
				if w, i := logs.count(slog.LevelWarn, logFailing), logs.count(slog.LevelInfo, logRecovered); w != round || i != round {
					t.Fatalf("after %d failing streaks: %d warnings and %d info records (%v)", round, w, i, logs.msgs)
				}
			}
		})
	}
}

// A probe the caller gives up on says nothing about the replica.
func TestProbeCancelledChangesNothing(t *testing.T) {
	srv := newReplicaServer(t)
	clk := clocktesting.NewFakeClock(time.Unix(1000, 0))
	p := newTestPool(t, clk, Endpoint{Name: "a", Address: srv.addr})
	r := p.Replicas()[0]
	sc := &Scraper{Pool: p, Clock: clk, Log: slog.New(slog.DiscardHandler)}
	if err := sc.Probe(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	srv.set(func(s *replicaServer) { s.mode = "hang" })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := sc.Probe(ctx, r); err == nil {
		t.Fatal("a cancelled probe succeeded")
	}
	if !p.Fresh(r) || r.Failing() {
		t.Fatal("a cancelled probe took the replica out of rotation")
	}
}

// TestOvertakenScrapeIsDropped: a scrape begun before a replica failed and answered after a
// later scrape found the failure must not bring the replica back.
func TestOvertakenScrapeIsDropped(t *testing.T) {
	srv := newReplicaServer(t)
	clk := clocktesting.NewFakeClock(time.Unix(1000, 0))
	p := newTestPool(t, clk, Endpoint{Name: "a", Address: srv.addr, Models: []string{"m"}})
	r := p.Replicas()[0]
	sc := &Scraper{Pool: p, Clock: clk, Log: slog.New(slog.DiscardHandler)}
	gate, entered := make(chan struct{}), make(chan struct{}, 1)
	srv.set(func(s *replicaServer) { s.mode, s.gate, s.entered = "gate", gate, entered })
	slow := make(chan error, 1)
	go func() { slow <- sc.Probe(context.Background(), r) }()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the first scrape never reached the replica")
	}
	srv.set(func(s *replicaServer) { s.mode = "500" })
	if err := sc.Probe(context.Background(), r); err == nil {
		t.Fatal("the second scrape succeeded against a failing replica")
	}
	close(gate)
	select {
	case err := <-slow:
		if err != nil {
			t.Fatalf("the first scrape: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the first scrape never returned")
	}
	if !r.Failing() || p.Fresh(r) {
		t.Fatal("a scrape overtaken by a failed one brought the replica back into rotation")
	}
	srv.set(func(s *replicaServer) { s.mode = "ok" })
	if err := sc.Probe(context.Background(), r); err != nil || r.Failing() {
		t.Fatalf("a later successful scrape did not bring it back: %v", err)
	}
}

func TestModelsDiscovered(t *testing.T) {
	srv := newReplicaServer(t)
	srv.set(func(s *replicaServer) { s.models = []string{"llama", "llama-lora"} })
	clk := clocktesting.NewFakeClock(time.Unix(1000, 0))
	p := newTestPool(t, clk, Endpoint{Name: "a", Address: srv.addr})
	r := p.Replicas()[0]
	sc := &Scraper{Pool: p, Clock: clk, Log: slog.New(slog.DiscardHandler)}
	ctx := context.Background()

	if _, known := r.Serves("llama"); known {
		t.Fatal("models known before any scrape")
	}
	if _, known := p.Serves("llama"); known {
		t.Fatal("the pool knows models before any scrape")
	}
	if err := sc.Probe(ctx, r); err != nil {
		t.Fatal(err)
	}
	if s, k := r.Serves("llama-lora"); !s || !k {
		t.Fatalf("Serves(llama-lora) = %v, %v after the first scrape", s, k)
	}
	if s, k := r.Serves("mistral"); s || !k {
		t.Fatalf("Serves(mistral) = %v, %v", s, k)
	}
	if s, k := p.Serves("mistral"); s || !k {
		t.Fatalf("pool Serves(mistral) = %v, %v", s, k)
	}

	// Later scrapes do not read /v1/models until the interval has passed.
	srv.set(func(s *replicaServer) { s.models = []string{"mistral"} })
	for range 5 {
		clk.Step(time.Second)
		if err := sc.Probe(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if n := srv.modelsReads.Load(); n != 1 {
		t.Fatalf("/v1/models read %d times within the interval, want 1", n)
	}
	clk.Step(DefaultModelsInterval)
	if err := sc.Probe(ctx, r); err != nil {
		t.Fatal(err)
	}
	if s, _ := r.Serves("mistral"); !s {
		t.Fatal("a changed model list was not read after the interval")
	}

	// A replica that recovers is read again at once: it may have restarted with another model.
	srv.set(func(s *replicaServer) { s.mode = "500" })
	if err := sc.Probe(ctx, r); err == nil {
		t.Fatal("probe of a failing replica succeeded")
	}
	srv.set(func(s *replicaServer) { s.mode, s.models = "ok", []string{"qwen"} })
	if err := sc.Probe(ctx, r); err != nil {
		t.Fatal(err)
	}
	if s, _ := r.Serves("qwen"); !s {
		t.Fatal("models were not read again on recovery")
	}

	// A failed read keeps what was known.
	srv.set(func(s *replicaServer) { s.modelsStatus = http.StatusNotFound })
	clk.Step(DefaultModelsInterval)
	if err := sc.Probe(ctx, r); err != nil {
		t.Fatal(err)
	}
	if s, k := r.Serves("qwen"); !s || !k {
		t.Fatalf("a failed /v1/models read lost the known models: %v, %v", s, k)
	}
}

func TestModelsUnavailableOrConfigured(t *testing.T) {
	srv := newReplicaServer(t)
	srv.set(func(s *replicaServer) { s.modelsStatus = http.StatusNotFound })
	other := newReplicaServer(t)
	clk := clocktesting.NewFakeClock(time.Unix(1000, 0))
	p := newTestPool(t, clk,
		Endpoint{Name: "a", Address: srv.addr},
		Endpoint{Name: "b", Address: other.addr, Models: []string{"zeta", "alpha"}})
	a, b := p.Replicas()[0], p.Replicas()[1]
	sc := &Scraper{Pool: p, Clock: clk, Log: slog.New(slog.DiscardHandler)}
	for range 3 {
		for _, r := range p.Replicas() {
			if err := sc.Probe(context.Background(), r); err != nil {
				t.Fatal(err)
			}
		}
		clk.Step(time.Second)
	}
	// A server without /v1/models routes as before, and is not asked on every scrape.
	if _, known := a.Serves("m"); known {
		t.Fatal("models known for a replica without /v1/models")
	}
	if n := srv.modelsReads.Load(); n != 1 {
		t.Fatalf("/v1/models read %d times, want 1", n)
	}
	// Configured models win and are never fetched.
	if s, k := b.Serves("alpha"); !s || !k {
		t.Fatalf("configured model: Serves = %v, %v", s, k)
	}
	if s, k := b.Serves("m"); s || !k {
		t.Fatalf("unlisted model: Serves = %v, %v", s, k)
	}
	if n := other.modelsReads.Load(); n != 0 {
		t.Fatalf("/v1/models read %d times for a replica with configured models", n)
	}
	// b does not serve "m" and a's models are unknown: the pool cannot say "m" does not exist.
	if s, k := p.Serves("m"); s || k {
		t.Fatalf("pool Serves(m) = %v, %v, want false, false", s, k)
	}
	if s, k := p.Serves("zeta"); !s || !k {
		t.Fatalf("pool Serves(zeta) = %v, %v", s, k)
	}
}

func TestEndpointModelsConfig(t *testing.T) {
	eps, err := ParseFile([]byte("endpoints:\n- name: a\n  address: 10.1.2.3:8000\n  models: [llama, llama-lora]\n"))
	if err != nil || len(eps) != 1 || !slices.Equal(eps[0].Models, []string{"llama", "llama-lora"}) {
		t.Fatalf("%+v %v", eps, err)
	}
	if _, err := ParseFile([]byte("endpoints:\n- name: a\n  address: 10.1.2.3:8000\n  models: ['']\n")); err == nil {
		t.Error("an empty model name was accepted")
	}
	// A replica whose model list changes is a new replica configuration, not the same one.
	clk := clocktesting.NewFakeClock(time.Unix(0, 0))
	p := newTestPool(t, clk, eps[0])
	before := p.Replicas()[0]
	if err := p.Set([]Endpoint{{Name: "a", Address: "10.1.2.3:8000", Models: []string{"llama", "llama-lora"}}}); err != nil {
		t.Fatal(err)
	}
	if p.Replicas()[0] != before {
		t.Fatal("an unchanged endpoint lost its state")
	}
	if err := p.Set([]Endpoint{{Name: "a", Address: "10.1.2.3:8000", Models: []string{"other"}}}); err != nil {
		t.Fatal(err)
	}
	if s, _ := p.Replicas()[0].Serves("other"); !s {
		t.Fatal("a changed model list was not applied")
	}
}
