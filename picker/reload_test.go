package picker

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/augur-llm/augur/pool"
	"github.com/augur-llm/augur/scheduler"
)

const baseConfig = `endpoints:
  - {name: a, address: 127.0.0.1:1}
  - {name: b, address: 127.0.0.1:2}
  - {name: c, address: 127.0.0.1:3}
`

func profileYAML(name string) string {
	switch name {
	case "prefix":
		return "profile:\n  name: prefix\n  scorers:\n    - {name: prefix, weight: 3}\n    - {name: load, weight: 2}\n  picker: {name: max-score}\n"
	case "prefix2": // the same prefix scorer, load weighed less
		return "profile:\n  name: prefix2\n  scorers:\n    - {name: prefix, weight: 3}\n    - {name: load, weight: 1}\n  picker: {name: max-score}\n"
	case "rr":
		return "profile:\n  name: rr\n  picker: {name: round-robin}\n"
	default: // invalid: unknown plugin
		return "profile:\n  name: broken\n  scorers:\n    - {name: telepathy}\n  picker: {name: max-score}\n"
	}
}

// TestReloadUnderLoad rewrites the configuration file while decisions run concurrently:
// every decision succeeds, valid versions apply, an invalid one is rejected and counted, and
// the running profile then stays.
func TestReloadUnderLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "epp.yaml")
	write := func(profile string) {
		// Write then rename, as editors and ConfigMap updates do.
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(baseConfig+profileYAML(profile)), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write("prefix")
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	// The picker's clock stands still, so the replicas' metrics cannot go stale however long a
	// busy machine keeps this test from running: a failed decision is the reload's fault.
	clk := clocktesting.NewFakeClock(time.Now())
	p, err := New(cfg, Options{Clock: clk, Log: slog.New(slog.DiscardHandler), Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range p.Pool.Replicas() {
		r.SetMetrics(pool.Metrics{ScrapedAt: clk.Now()})
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.WatchConfig(ctx, path, 5*time.Millisecond, nil)

	var decisions, failures atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			prompt := []byte(strings.Repeat("shared system prompt ", 50) + string(rune('a'+w)))
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := p.Scheduler.Schedule(context.Background(), &scheduler.Request{Prompt: prompt}, nil); err != nil {
					failures.Add(1)
				}
				decisions.Add(1)
			}
		}()
	}
	waitProfile := func(name string) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); p.Scheduler.Profile().Name != name; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("profile %q never applied; running %q", name, p.Scheduler.Profile().Name)
			}
		}
	}
	for range 5 {
		write("rr")
		waitProfile("rr")
		write("prefix")
		waitProfile("prefix")
	}
	prefixBefore := p.Scheduler.Profile().Scorers[0].Scorer
	write("broken")
	for deadline := time.Now().Add(5 * time.Second); testutil.ToFloat64(p.reloadMetrics.reloads.WithLabelValues("rejected")) < 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the invalid configuration was never counted as rejected")
		}
	}
	close(stop)
	wg.Wait()
	if p.Scheduler.Profile().Name != "prefix" {
		t.Errorf("after a rejected reload the profile is %q, want the previous one", p.Scheduler.Profile().Name)
	}
	if failures.Load() != 0 {
		t.Errorf("%d of %d decisions failed during reloads", failures.Load(), decisions.Load())
	}
	if got := testutil.ToFloat64(p.reloadMetrics.reloads.WithLabelValues("applied")); got < 10 {
		t.Errorf("%v reloads counted as applied, want 10", got)
	}
	if testutil.ToFloat64(p.reloadMetrics.success) != 0 {
		t.Error("last-reload-successful gauge should be 0 after a rejected reload")
	}
	// The prefix scorer survives a reload that keeps its configuration, and its record with it.
	write("prefix2")
	waitProfile("prefix2")
	if p.Scheduler.Profile().Scorers[0].Scorer != prefixBefore {
		t.Error("a reload rebuilt the prefix scorer although its configuration did not change")
	}
	t.Logf("%d decisions during reloads, none failed", decisions.Load())
}

func TestReloadRejectsInvalidWhole(t *testing.T) {
	p, err := New(Config{Endpoints: []pool.Endpoint{{Name: "a", Address: "127.0.0.1:1"}}},
		Options{Log: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	bad := []Config{
		{Endpoints: []pool.Endpoint{{Name: "a", Address: "nowhere"}}},
		{Endpoints: []pool.Endpoint{{Name: "a", Address: "127.0.0.1:1"}}, Profile: &scheduler.ProfileConfig{Name: "x"}},
	}
	for _, c := range bad {
		if err := p.Reload(c); err == nil {
			t.Errorf("Reload(%+v) accepted", c)
		}
	}
	if n := len(p.Pool.Replicas()); n != 1 || p.Pool.Replicas()[0].Address() != "127.0.0.1:1" {
		t.Errorf("a rejected reload changed the pool")
	}
	if got := testutil.ToFloat64(p.reloadMetrics.reloads.WithLabelValues("rejected")); got != 2 {
		t.Errorf("rejected reloads counted %v, want 2", got)
	}
}

// warnCounter counts warnings, to tell a setting that applied from one deferred to a restart.
type warnCounter struct {
	mu    sync.Mutex
	warns []string
}

func (w *warnCounter) Enabled(context.Context, slog.Level) bool { return true }
func (w *warnCounter) WithAttrs([]slog.Attr) slog.Handler       { return w }
func (w *warnCounter) WithGroup(string) slog.Handler            { return w }
func (w *warnCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.warns = append(w.warns, r.Message)
	}
	return nil
}

func TestReloadAppliesFallbacks(t *testing.T) {
	cfg, err := ParseConfig([]byte(baseConfig))
	if err != nil {
		t.Fatal(err)
	}
	clk := clocktesting.NewFakeClock(time.Unix(1000, 0))
	warns := &warnCounter{}
	p, err := New(cfg, Options{Clock: clk, Log: slog.New(warns), Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range p.Pool.Replicas() {
		r.SetMetrics(pool.Metrics{ScrapedAt: clk.Now()})
	}
	targets := func() int {
		t.Helper()
		res, err := p.Scheduler.Schedule(context.Background(), &scheduler.Request{Prompt: []byte("hi")}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return len(res.Targets)
	}
	if n := targets(); n != 1 {
		t.Fatalf("%d targets with no fallbacks, want 1", n)
	}
	two := 2
	cfg.Fallbacks = &two
	if err := p.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if n := targets(); n != 3 {
		t.Fatalf("%d targets after reloading fallbacks: 2, want 3", n)
	}
	if got := *p.Config().Fallbacks; got != 2 {
		t.Errorf("effective configuration says %d fallbacks, want 2", got)
	}
	warns.mu.Lock()
	defer warns.mu.Unlock()
	if len(warns.warns) != 0 {
		t.Errorf("a live setting was reported as waiting for a restart: %v", warns.warns)
	}
}
