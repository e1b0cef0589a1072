package sim

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"k8s.io/utils/clock"
)

// text returns n tokens (4n bytes) of text that no other seed produces.
func text(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, 4*n)
	for i := range b {
		b[i] = 'a' + byte(r.IntN(26))
	}
	return b
}

func profile(t testing.TB, name string) Profile {
	t.Helper()
	p, err := LookupProfile(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// startEngine runs an engine until the test ends.
func startEngine(t testing.TB, cfg Config, clk clock.Clock) *Engine {
	t.Helper()
	if cfg.Model == "" {
		cfg.Model = "m"
	}
	e, err := New(cfg, clk)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := e.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return e
}

func submit(t testing.TB, e *Engine, p Prompt, maxTokens int) *Handle {
	t.Helper()
	h, err := e.Submit(context.Background(), Request{Prompt: p, MaxTokens: maxTokens})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func wait(t testing.TB, h *Handle) Progress {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := h.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func within(t *testing.T, what string, got, want, tol float64) {
	t.Helper()
	if got < want*(1-tol) || got > want*(1+tol) {
		t.Errorf("%s = %.4f, want %.4f ± %.0f%%", what, got, want, tol*100)
	} else {
		t.Logf("%s = %.4f (reference %.4f)", what, got, want)
	}
}

func TestColdPromptTTFTMatchesReference(t *testing.T) {
	for _, tc := range []struct {
		profile string
		want    float64
	}{{"32b-tp2-h100", 0.43}, {"8b-h100", 0.2}} {
		t.Run(tc.profile, func(t *testing.T) {
			e := startEngine(t, Config{Profile: profile(t, tc.profile), Seed: 1}, newAutoClock())
			p := wait(t, submit(t, e, TextPrompt(text(1, 7200)), 4))
			within(t, "TTFT", p.FirstToken.Sub(p.Arrived).Seconds(), tc.want, 0.25)
			if p.Generated != 4 || p.CachedTokens != 0 || p.PromptTokens != 7200 {
				t.Errorf("progress = %+v, want 4 generated, 0 cached, 7200 prompt tokens", p)
			}
		})
	}
}

func TestStepTimeFollowsFormulaWithChunkedPrefill(t *testing.T) {
	prof := profile(t, "8b-h100")
	prof.Jitter = 0
	e := startEngine(t, Config{Profile: prof}, newAutoClock())
	// 20,000 tokens against a budget of 8,192 take three chunks: 8192, 8192, 3616.
	p := wait(t, submit(t, e, TextPrompt(text(2, 20000)), 2))
	want := 0.0
	ctx := 0.0
	for _, c := range []float64{8192, 8192, 3616} {
		want += prof.T0Micros + max(prof.TwMicros, prof.KLinMicros*c) + prof.KAttMicros*c*(ctx+c/2)
		ctx += c
	}
	decode := prof.T0Micros + max(prof.TwMicros, prof.KLinMicros) + prof.KKVMicros*20000
	if got := p.FirstToken.Sub(p.Arrived); absDur(got-micros(want)) > 3*time.Nanosecond {
		t.Errorf("TTFT = %v, want %v", got, micros(want))
	}
	if got := p.LastToken.Sub(p.FirstToken); absDur(got-micros(decode)) > time.Nanosecond {
		t.Errorf("decode step = %v, want %v", got, micros(decode))
	}
	if s := e.Snapshot(); s.Steps != 4 {
		t.Errorf("steps = %d, want 3 prefill chunks + 1 decode", s.Steps)
	}
}

func micros(us float64) time.Duration { return time.Duration(us * float64(time.Microsecond)) }
func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

func TestRepeatedPrefixIsServedFromCache(t *testing.T) {
	e := startEngine(t, Config{Profile: profile(t, "32b-tp2-h100"), Seed: 3}, newAutoClock())
	system := text(10, 6000) // 24,000 bytes: exactly 375 full blocks
	prompt := func(q uint64) Prompt {
		return TextPrompt(append(append([]byte{}, system...), text(q, 1200)...))
	}
	a := wait(t, submit(t, e, prompt(11), 8))
	before := e.Snapshot()
	b := wait(t, submit(t, e, prompt(12), 8))
	after := e.Snapshot()

	if got := after.PrefixCacheHits - before.PrefixCacheHits; got != 6000 {
		t.Errorf("prefix_cache_hits grew by %d, want 6000", got)
	}
	if got := after.PrefixCacheQueries - before.PrefixCacheQueries; got != 7200 {
		t.Errorf("prefix_cache_queries grew by %d, want 7200", got)
	}
	if a.CachedTokens != 0 || b.CachedTokens != 6000 {
		t.Errorf("cached tokens = %d then %d, want 0 then 6000", a.CachedTokens, b.CachedTokens)
	}
	ttftA := a.FirstToken.Sub(a.Arrived).Seconds()
	ttftB := b.FirstToken.Sub(b.Arrived).Seconds()
	if ttftB >= ttftA/2 {
		t.Errorf("TTFT with 6000 cached tokens = %.3fs, not well below cold %.3fs", ttftB, ttftA)
	}
	within(t, "TTFT with 6000 cached", ttftB, 0.09, 0.25)

	// The same exact prompt hits all full blocks but the one holding the last token.
	c := wait(t, submit(t, e, prompt(12), 8))
	if c.CachedTokens != 7184 {
		t.Errorf("exact repeat cached %d tokens, want 7184 (last token recomputed)", c.CachedTokens)
	}
}

func TestRequestsBeyondMaxNumSeqsWait(t *testing.T) {
	prof := profile(t, "8b-h100")
	prof.MaxNumSeqs = 2
	clk := newManualClock()
	e, err := New(Config{Model: "m", Profile: prof}, clk)
	if err != nil {
		t.Fatal(err)
	}
	var hs []*Handle
	for i := range 5 {
		hs = append(hs, submit(t, e, TextPrompt(text(uint64(20+i), 100)), 8))
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = e.Run(ctx) })
	defer func() { cancel(); wg.Wait() }()

	clk.armed(t)
	if s := e.Snapshot(); s.Running != 2 || s.Waiting != 3 {
		t.Fatalf("during first step: running=%d waiting=%d, want 2 and 3", s.Running, s.Waiting)
	}
	allDone := func() bool {
		for _, h := range hs {
			if !h.Progress().Done {
				return false
			}
		}
		return true
	}
	for clk.step(t, allDone) {
	}
	for i, h := range hs {
		p := h.Progress()
		if p.Err != nil || p.Generated != 8 {
			t.Errorf("request %d: generated %d, err %v; want 8 tokens", i, p.Generated, p.Err)
		}
		if queued := p.Scheduled.Sub(p.Arrived); (i < 2) != (queued == 0) {
			t.Errorf("request %d queued for %v", i, queued)
		}
	}
	s := e.Snapshot()
	if s.Running != 0 || s.Waiting != 0 || s.GenerationTokens != 40 || s.PromptTokens != 500 {
		t.Errorf("after all: %+v", s)
	}
	if s.KVCacheUsage != 0 {
		t.Errorf("kv usage after all finished = %v, want 0 (cached blocks count as free)", s.KVCacheUsage)
	}
}

func TestPreemptionWhenKVRunsOutLosesNothing(t *testing.T) {
	prof := profile(t, "8b-h100")
	prof.NumGPUBlocks = 41 // 640 usable tokens
	prof.MaxModelLen = 640
	e, err := New(Config{Model: "m", Profile: prof}, newAutoClock())
	if err != nil {
		t.Fatal(err)
	}
	var hs []*Handle
	for i := range 3 {
		hs = append(hs, submit(t, e, TextPrompt(text(uint64(30+i), 100)), 300))
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = e.Run(ctx) })
	defer func() { cancel(); wg.Wait() }()
	for i, h := range hs {
		if p := wait(t, h); p.Generated != 300 {
			t.Errorf("request %d generated %d, want 300", i, p.Generated)
		}
	}
	s := e.Snapshot()
	if s.Preemptions == 0 {
		t.Error("no preemption although three requests need 1,200 tokens of a 640-token cache")
	}
	if s.GenerationTokens != 900 || s.Running != 0 || s.Waiting != 0 {
		t.Errorf("after all: %+v", s)
	}
}

func TestCancellationFreesTheRequest(t *testing.T) {
	prof := profile(t, "8b-h100")
	prof.MaxNumSeqs = 1
	e := startEngine(t, Config{Profile: prof}, clock.RealClock{})

	runCtx, cancelRunning := context.WithCancel(context.Background())
	running, err := e.Submit(runCtx, Request{Prompt: TextPrompt(text(40, 500)), MaxTokens: 100000})
	if err != nil {
		t.Fatal(err)
	}
	waitCtx, cancelWaiting := context.WithCancel(context.Background())
	waiting, err := e.Submit(waitCtx, Request{Prompt: TextPrompt(text(41, 500)), MaxTokens: 10})
	if err != nil {
		t.Fatal(err)
	}
	for running.Progress().Generated < 2 {
		<-running.Changed()
	}
	if s := e.Snapshot(); s.Running != 1 || s.Waiting != 1 {
		t.Fatalf("running=%d waiting=%d, want 1 and 1", s.Running, s.Waiting)
	}

	cancelWaiting()
	cancelRunning()
	for _, h := range []*Handle{running, waiting} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := h.Wait(ctx)
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Wait after cancel: %v, want context.Canceled", err)
		}
	}
	s := e.Snapshot()
	if s.Running != 0 || s.Waiting != 0 || s.FreeBlocks != s.NumGPUBlocks-1 {
		t.Errorf("after cancel: running=%d waiting=%d free=%d of %d", s.Running, s.Waiting, s.FreeBlocks, s.NumGPUBlocks-1)
	}
}

func TestSubmitRejects(t *testing.T) {
	prof := profile(t, "8b-h100")
	prof.MaxModelLen = 1000
	e, err := New(Config{Model: "m", Profile: prof}, newAutoClock())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := e.Submit(ctx, Request{Prompt: TextPrompt(text(1, 900)), MaxTokens: 101}); !errors.Is(err, ErrTooLong) {
		t.Errorf("too long: %v", err)
	}
	if _, err := e.Submit(ctx, Request{Prompt: TextPrompt(nil), MaxTokens: 1}); err == nil {
		t.Error("empty prompt accepted")
	}
	if _, err := e.Submit(ctx, Request{Prompt: TokenIDPrompt([]int{1}), MaxTokens: 0}); err == nil {
		t.Error("max tokens 0 accepted")
	}
	h := submit(t, e, TokenIDPrompt([]int{1, 2, 3}), 1)
	runCtx, cancel := context.WithCancel(ctx)
	cancel()
	_ = e.Run(runCtx) // stops at once and drops what is queued
	if _, err := h.Wait(ctx); !errors.Is(err, ErrStopped) {
		t.Errorf("queued request after stop: %v, want ErrStopped", err)
	}
	if _, err := e.Submit(ctx, Request{Prompt: TokenIDPrompt([]int{1}), MaxTokens: 1}); !errors.Is(err, ErrStopped) {
		t.Errorf("submit after stop: %v, want ErrStopped", err)
	}
}

func TestNewValidatesConfig(t *testing.T) {
	prof := profile(t, "8b-h100")
	if _, err := New(Config{Profile: prof}, newAutoClock()); err == nil {
		t.Error("missing model accepted")
	}
	prof.MaxModelLen = prof.NumGPUBlocks * BlockSize
	if _, err := New(Config{Model: "m", Profile: prof}, newAutoClock()); err == nil {
		t.Error("max_model_len beyond KV capacity accepted")
	}
	if _, err := LookupProfile("nope"); err == nil {
		t.Error("unknown profile found")
	}
}

func TestTokenIDPromptsShareCache(t *testing.T) {
	e := startEngine(t, Config{Profile: profile(t, "8b-h100")}, newAutoClock())
	ids := make([]int, 100)
	for i := range ids {
		ids[i] = i * 7
	}
	wait(t, submit(t, e, TokenIDPrompt(ids), 1))
	p := wait(t, submit(t, e, TokenIDPrompt(ids[:90]), 1))
	if p.CachedTokens != 80 || p.PromptTokens != 90 {
		t.Errorf("cached %d of %d, want 80 of 90", p.CachedTokens, p.PromptTokens)
	}
}
