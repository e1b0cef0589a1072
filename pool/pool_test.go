package pool

import (
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"
)

// vllmText is /metrics as vLLM V1 (Python prometheus_client) writes it, trimmed.
const vllmText = `# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 2.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 1000.0
# HELP vllm:prefix_cache_queries_created Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_created gauge
vllm:prefix_cache_queries_created{engine="0",model_name="m"} 1.7e+09
# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 600.0
# HELP vllm:num_preemptions_total Cumulative number of preemption from the engine.
# TYPE vllm:num_preemptions_total counter
vllm:num_preemptions_total{engine="0",model_name="m"} 4.0
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",cache_dtype="auto",engine="0",num_gpu_blocks="19208"} 1.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="m"} 0.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="m"} 7.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="m"} 7.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="m"} 1.5
`

func TestParseMetrics(t *testing.T) {
	m, err := ParseMetrics(strings.NewReader(vllmText))
	if err != nil {
		t.Fatal(err)
	}
	want := Metrics{Running: 3, Waiting: 2, KVUsage: 0.25, BlockSize: 16, NumGPUBlocks: 19208,
		PrefixQueries: 1000, PrefixHits: 600, Preemptions: 4}
	if m != want {
		t.Fatalf("got %+v\nwant %+v", m, want)
	}
	old := strings.ReplaceAll(vllmText, "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
	if m, err := ParseMetrics(strings.NewReader(old)); err != nil || m.KVUsage != 0.25 {
		t.Errorf("older vLLM name: %+v %v", m, err)
	}
	for _, bad := range []string{"not metrics {{{", "# TYPE x gauge\nx 1\n"} {
		if _, err := ParseMetrics(strings.NewReader(bad)); err == nil {
			t.Errorf("ParseMetrics(%q) accepted", bad)
		}
	}
}

func TestLeaseAccounting(t *testing.T) {
	p := New(clock.RealClock{}, 0)
	if err := p.Set([]Endpoint{{Name: "a", Address: "127.0.0.1:1"}, {Name: "b", Address: "127.0.0.1:2"}}); err != nil {
		t.Fatal(err)
	}
	a, b := p.Replicas()[0], p.Replicas()[1]
	t0 := time.Unix(1000, 0)
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := a.Dispatch(t0, Work{PromptTokens: 100, UncachedTokens: 40, MaxTokens: 10})
			if i%3 == 0 {
				l.FirstToken(t0)
				l.Generated(t0, 4)
			}
			if i%5 == 0 {
				l.MoveTo(b)
			}
			// Completion, error and cancellation can race: release is idempotent.
			var inner sync.WaitGroup
			for range 3 {
				inner.Add(1)
				go func() { defer inner.Done(); l.Release(); l.FirstToken(t0); l.Generated(t0, 9) }()
			}
			inner.Wait()
		}()
	}
	wg.Wait()
	if !a.Load().Idle() || !b.Load().Idle() {
		t.Fatalf("after every release: a %+v b %+v", a.Load(), b.Load())
	}
	if c := a.Load().Counts; c.Dispatched != 200 || c.FirstTokens != 67 || c.Finished != 160 {
		t.Errorf("a's counts %+v, want 200 dispatched, 67 first tokens, 160 finished (40 moved away)", c)
	}
	if c := b.Load().Counts; c.Dispatched != 40 || c.Finished != 40 {
		t.Errorf("b's counts %+v, want the 40 moved requests dispatched and finished", c)
	}

	c := New(clock.RealClock{}, 0)
	if err := c.Set([]Endpoint{{Name: "c", Address: "127.0.0.1:3"}}); err != nil {
		t.Fatal(err)
	}
	r := c.Replicas()[0]
	l := r.Dispatch(t0, Work{PromptTokens: 50, UncachedTokens: 20, MaxTokens: 8})
	got := r.Load()
	if got.Requests != 1 || got.PrefillTokens != 50 || got.PrefillUncachedTokens != 20 || got.Tokens != 58 ||
		got.DecodeRequests != 0 || got.DecodeTokensLeft != 0 || !got.LastToken.IsZero() {
		t.Fatalf("dispatched: %+v", got)
	}
	t1 := t0.Add(time.Second)
	l.FirstToken(t1)
	got = r.Load()
	if got.PrefillTokens != 0 || got.PrefillUncachedTokens != 0 || got.DecodeRequests != 1 || got.DecodeTokensLeft != 7 || !got.LastToken.Equal(t1) {
		t.Fatalf("first token: %+v", got)
	}
	t2 := t1.Add(time.Second)
	l.Generated(t2, 5)
	l.Generated(t1, 3) // older news changes nothing
	if got = r.Load(); got.DecodeTokensLeft != 3 || !got.LastToken.Equal(t2) {
		t.Fatalf("5 of 8 tokens generated: %+v", got)
	}
	l.Generated(t2, 20) // more than the limit: nothing is left, never less
	if got = r.Load(); got.DecodeTokensLeft != 0 {
		t.Fatalf("past the limit: %+v", got)
	}
	l.Release()
	if got = r.Load(); !got.Idle() || got.Counts != (Counts{Dispatched: 1, FirstTokens: 1, Finished: 1}) {
		t.Fatalf("released: %+v", got)
	}
}

func TestStepAccounting(t *testing.T) {
	p := New(clock.RealClock{}, 0)
	if err := p.Set([]Endpoint{{Name: "a", Address: "127.0.0.1:1"}}); err != nil {
		t.Fatal(err)
	}
	r := p.Replicas()[0]
	t0 := time.Unix(1000, 0)
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	// The first request finds the replica idle: it starts a step at once.
	a := r.Dispatch(t0, Work{PromptTokens: 100, UncachedTokens: 100, MaxTokens: 50})
	if got := r.Load(); !got.StepStart.Equal(t0) || got.NextStepRequests != 0 || got.NextStepUncachedTokens != 0 {
		t.Fatalf("idle dispatch: %+v", got)
	}
	// A second one waits for the next step.
	b := r.Dispatch(t0.Add(ms(2)), Work{PromptTokens: 300, UncachedTokens: 200, MaxTokens: 50})
	if got := r.Load(); got.NextStepRequests != 1 || got.NextStepUncachedTokens != 200 {
		t.Fatalf("dispatch during a step: %+v", got)
	}
	// a's first token ends the step; nobody was decoding before it, so it is no step time.
	a.FirstToken(t0.Add(ms(10)))
	got := r.Load()
	if !got.StepStart.Equal(t0.Add(ms(10))) || got.NextStepRequests != 0 || got.Steps != (Steps{}) || got.DecodeContextTokens != 101 {
		t.Fatalf("first token: %+v", got)
	}
	// While a decodes, gaps between token arrivals are steps.
	a.Generated(t0.Add(ms(30)), 2)
	b.FirstToken(t0.Add(ms(30))) // the same step: no new gap
	a.Generated(t0.Add(ms(38)), 3)
	got = r.Load()
	if got.Steps.Last != ms(8) || got.Steps.Fast != ms(20)+time.Duration(StepFastWeight*float64(ms(8)-ms(20))) {
		t.Fatalf("steps: %+v", got.Steps)
	}
	if got.DecodeContextTokens != 103+301 {
		t.Fatalf("decode context %d, want 404", got.DecodeContextTokens)
	}
	a.Release()
	b.Release()
	if got := r.Load(); !got.Idle() {
		t.Fatalf("released: %+v", got)
	}
}

func TestDispatchRates(t *testing.T) {
	p := New(clock.RealClock{}, 0)
	if err := p.Set([]Endpoint{{Name: "a", Address: "127.0.0.1:1"}}); err != nil {
		t.Fatal(err)
	}
	r := p.Replicas()[0]
	t0 := time.Unix(1000, 0)
	if l0 := r.Load(); l0.Rates(t0) != (Rates{}) {
		t.Fatalf("rates before any dispatch: %+v", l0.Rates(t0))
	}
	// A steady 5 requests/s of 200 uncached tokens for long enough approaches 5/s and 1000 tokens/s.
	var now time.Time
	for i := range 1000 {
		now = t0.Add(time.Duration(i) * 200 * time.Millisecond)
		r.Dispatch(now, Work{PromptTokens: 300, UncachedTokens: 200}).Release()
	}
	l := r.Load()
	if got := l.Rates(now).Request; math.Abs(got-5) > 0.3 {
		t.Errorf("request rate %v, want about 5/s", got)
	}
	if got := l.Rates(now).UncachedToken; math.Abs(got-1000) > 60 {
		t.Errorf("uncached token rate %v, want about 1000/s", got)
	}
	if got := l.Rates(now).RequestFast; math.Abs(got-5) > 0.3 {
		t.Errorf("fast request rate %v, want about 5/s", got)
	}
	if got := l.Rates(now).UncachedTokenFast; math.Abs(got-1000) > 60 {
		t.Errorf("fast uncached token rate %v, want about 1000/s", got)
	}
	// Asked about an instant before the latest dispatch, the rates are those of that dispatch.
	if got, want := l.Rates(now.Add(-time.Second)), l.Rates(now); got != want {
		t.Errorf("rates before the latest dispatch %+v, want %+v", got, want)
	}
	// Right after the first dispatches, the fast rate averages over the time since.
	q := New(clock.RealClock{}, 0)
	if err := q.Set([]Endpoint{{Name: "b", Address: "127.0.0.1:2"}}); err != nil {
		t.Fatal(err)
	}
	for i := range 11 {
		q.Replicas()[0].Dispatch(t0.Add(time.Duration(i)*100*time.Millisecond), Work{PromptTokens: 10}).Release()
	}
	if lq := q.Replicas()[0].Load(); math.Abs(lq.Rates(t0.Add(time.Second)).RequestFast-10) > 1.5 {
		t.Errorf("fast request rate after 1 s at 10/s: %v", lq.Rates(t0.Add(time.Second)).RequestFast)
	}
	// Silence decays it: after one RateWindow, by e.
	later := now.Add(RateWindow)
	if got, want := l.Rates(later).Request, l.Rates(now).Request/math.E; math.Abs(got-want) > 1e-9 {
		t.Errorf("after a window of silence %v, want %v", got, want)
	}
}

func TestSetKeepsStateAndValidates(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(0, 0))
	p := New(clk, time.Second)
	if err := p.Set([]Endpoint{{Name: "a", Address: "127.0.0.1:1"}}); err != nil {
		t.Fatal(err)
	}
	a := p.Replicas()[0]
	a.SetMetrics(Metrics{Running: 1, ScrapedAt: clk.Now()})
	a.Dispatch(clk.Now(), Work{PromptTokens: 1})
	if err := p.Set([]Endpoint{{Name: "a", Address: "127.0.0.1:1"}, {Name: "b", Address: "127.0.0.1:2"}}); err != nil {
		t.Fatal(err)
	}
	if p.Replicas()[0] != a || a.Load().Requests != 1 || !p.Fresh(a) || p.Fresh(p.Replicas()[1]) {
		t.Fatal("a replica that stays must keep its state; a new one starts not fresh")
	}
	clk.Step(1001 * time.Millisecond)
	if p.Fresh(a) || p.Ready() {
		t.Fatal("metrics older than staleAfter must not count as fresh")
	}
	for _, bad := range [][]Endpoint{
		{{Name: "", Address: "127.0.0.1:1"}},
		{{Name: "x", Address: "localhost:1"}},
		{{Name: "x", Address: "127.0.0.1"}},
		{{Name: "x", Address: "127.0.0.1:1"}, {Name: "x", Address: "127.0.0.1:2"}},
		{{Name: "x", Address: "127.0.0.1:1"}, {Name: "y", Address: "127.0.0.1:1"}},
	} {
		if err := p.Set(bad); err == nil {
			t.Errorf("Set(%+v) accepted", bad)
		}
	}
}

func TestParseFile(t *testing.T) {
	eps, err := ParseFile([]byte("endpoints:\n- name: a\n  address: 10.1.2.3:8000\n  class: 8b-h100\n"))
	if err != nil || len(eps) != 1 || eps[0].Class != "8b-h100" {
		t.Fatalf("%+v %v", eps, err)
	}
	if _, err := ParseFile([]byte("endpoints:\n- name: a\n  adress: 10.1.2.3:8000\n")); err == nil || !strings.Contains(err.Error(), "adress") {
		t.Errorf("a misspelt key must be reported, got %v", err)
	}
}

func TestScraperMarksFreshAndStale(t *testing.T) {
	var mu sync.Mutex
	up := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if !up {
			http.Error(w, "down", 500)
			return
		}
		_, _ = w.Write([]byte(vllmText))
	}))
	defer srv.Close()
	p := New(clock.RealClock{}, 200*time.Millisecond)
	if err := p.Set([]Endpoint{{Name: "a", Address: strings.TrimPrefix(srv.URL, "http://")}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		(&Scraper{Pool: p, Clock: clock.RealClock{}, Interval: 10 * time.Millisecond}).Run(ctx)
		close(done)
	}()
	defer func() { cancel(); <-done }()
	waitFor(t, func() bool { return p.Ready() })
	if m, _ := p.Replicas()[0].Metrics(); m.Running != 3 {
		t.Fatalf("metrics %+v", m)
	}
	mu.Lock()
	up = false
	mu.Unlock()
	waitFor(t, func() bool { return !p.Ready() })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for range 1000 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("condition not reached in 10 s")
}

// The tightest TPOT objective on a replica follows its in-flight requests: dispatch adds, a
// release (once, however often it is called) and a move take away.
func TestTightestTPOTObjective(t *testing.T) {
	p := New(clock.RealClock{}, 0)
	if err := p.Set([]Endpoint{{Name: "a", Address: "127.0.0.1:1"}, {Name: "b", Address: "127.0.0.1:2"}}); err != nil {
		t.Fatal(err)
	}
	a, b := p.Replicas()[0], p.Replicas()[1]
	t0 := time.Unix(1000, 0)
	tight := func(r *Replica) time.Duration { return r.Load().TightestTPOTObjective }
	none := a.Dispatch(t0, Work{PromptTokens: 10})
	if tight(a) != 0 {
		t.Fatalf("a request without an objective: tightest %v, want 0", tight(a))
	}
	slow := a.Dispatch(t0, Work{PromptTokens: 10, TPOTObjective: 100 * time.Millisecond})
	fast := a.Dispatch(t0, Work{PromptTokens: 10, TPOTObjective: 50 * time.Millisecond})
	fast2 := a.Dispatch(t0, Work{PromptTokens: 10, TPOTObjective: 50 * time.Millisecond})
	if tight(a) != 50*time.Millisecond {
		t.Fatalf("tightest %v, want 50ms", tight(a))
	}
	fast.FirstToken(t0)
	fast.Release()
	fast.Release()
	if tight(a) != 50*time.Millisecond {
		t.Fatalf("one of two 50ms requests released (twice): tightest %v, want 50ms", tight(a))
	}
	fast2.MoveTo(b)
	if tight(a) != 100*time.Millisecond || tight(b) != 50*time.Millisecond {
		t.Fatalf("after the move: a %v b %v, want 100ms and 50ms", tight(a), tight(b))
	}
	fast2.Release()
	slow.Release()
	none.Release()
	if tight(a) != 0 || tight(b) != 0 {
		t.Fatalf("all released: a %v b %v, want 0", tight(a), tight(b))
	}
}
