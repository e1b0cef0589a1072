package models_test

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/augur-llm/augur/models"
	"github.com/augur-llm/augur/pool"
	"github.com/augur-llm/augur/scheduler"
)

// definition states every feature of the schema from the candidate's public state, one by
// one, as the schema documents it; Extract, which computes shared parts once, must agree.
func definition(req *scheduler.Request, c *scheduler.Candidate, at time.Time) map[string]float64 {
	l, m := &c.Load, &c.Metrics
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	rt := l.Rates(at)
	out := map[string]float64{
		"kv_cache_usage": m.KVUsage, "num_requests_waiting": float64(m.Waiting), "num_requests_running": float64(m.Running),
		"inflight_requests": float64(l.Requests), "prefill_tokens_in_flight": float64(l.PrefillTokens),
		"decode_requests_in_flight": float64(l.DecodeRequests), "inflight_tokens": float64(l.Tokens),
		"metrics_age_ms":                    max(0, ms(at.Sub(m.ScrapedAt))),
		"input_tokens":                      float64(req.PromptTokens),
		"uncached_input_tokens":             float64(c.UncachedTokens(req)),
		"prefill_uncached_tokens_in_flight": float64(l.PrefillUncachedTokens), "decode_tokens_left": float64(l.DecodeTokensLeft),
		"request_rate": rt.Request, "uncached_token_rate": rt.UncachedToken,
		"dispatched_since_scrape":   float64(max(0, l.Counts.Since(m.Counts).Dispatched)),
		"first_tokens_since_scrape": float64(max(0, l.Counts.Since(m.Counts).FirstTokens)),
		"finished_since_scrape":     float64(max(0, l.Counts.Since(m.Counts).Finished)),
		"request_rate_fast":         rt.RequestFast, "uncached_token_rate_fast": rt.UncachedTokenFast,
		"next_step_requests": float64(l.NextStepRequests), "next_step_uncached_tokens": float64(l.NextStepUncachedTokens),
		"current_step_uncached_tokens": float64(max(0, l.PrefillUncachedTokens-l.NextStepUncachedTokens)),
		"decode_context_tokens":        float64(l.DecodeContextTokens),
	}
	if x, ok := c.Value(scheduler.ValuePrefixMatch); ok {
		out["prefix_match"] = x
	}
	if m.NumGPUBlocks > 0 {
		out["num_gpu_blocks"] = float64(m.NumGPUBlocks)
	}
	if m.BlockSize > 0 {
		out["block_size"] = float64(m.BlockSize)
	}
	if req.MaxTokens > 0 {
		out["max_tokens"] = float64(req.MaxTokens)
	}
	if !l.LastToken.IsZero() {
		out["last_token_age_ms"] = max(0, ms(at.Sub(l.LastToken)))
	}
	for name, d := range map[string]time.Duration{"step_ms": l.Steps.Fast, "step_slow_ms": l.Steps.Slow, "last_step_ms": l.Steps.Last} {
		if d > 0 {
			out[name] = ms(d)
		}
	}
	if !l.LastToken.IsZero() && l.Steps.Last != 0 {
		out["step_wait_ms"] = max(0, ms(l.Steps.Last-at.Sub(l.LastToken)))
	}
	if !l.StepStart.IsZero() {
		out["step_age_ms"] = max(0, ms(at.Sub(l.StepStart)))
	}
	return out
}

func TestExtractMatchesTheDefinition(t *testing.T) {
	names := map[string]bool{}
	for _, f := range models.Schema() {
		if f.Name == "" || f.Doc == "" || names[f.Name] {
			t.Fatalf("feature %q: no name, no doc, or named twice", f.Name)
		}
		names[f.Name] = true
	}
	seen := map[string]bool{} // features computed (not NULL) in some trial
	rng := rand.New(rand.NewPCG(5, 6))
	now := time.Unix(1_700_000_000, 987_654_321)
	for trial := range 500 {
		r := pool.NewReplica(pool.Endpoint{Name: "r", Address: "10.0.0.1:8000"})
		for range rng.IntN(8) {
			at := now.Add(-time.Duration(rng.IntN(30_000)) * time.Millisecond)
			prompt := 1 + rng.IntN(16_000)
			l := r.Dispatch(at, pool.Work{PromptTokens: prompt, UncachedTokens: rng.IntN(prompt + 1), MaxTokens: rng.IntN(2) * rng.IntN(2000)})
			if rng.IntN(2) == 0 {
				first := at.Add(time.Duration(rng.IntN(3000)) * time.Millisecond)
				l.FirstToken(first)
				for k := 2; k < 2+rng.IntN(30); k++ {
					first = first.Add(time.Duration(1+rng.IntN(80)) * time.Millisecond)
					l.Generated(first, k)
				}
			}
			if rng.IntN(3) == 0 {
				l.Release()
			}
		}
		m := pool.Metrics{Running: rng.IntN(60), Waiting: rng.IntN(5), KVUsage: rng.Float64(), ScrapedAt: now.Add(time.Duration(rng.IntN(3000)-2500) * time.Millisecond)}
		if rng.IntN(2) == 0 {
			m.BlockSize, m.NumGPUBlocks = 16, 1+rng.IntN(40_000)
		}
		r.SetMetrics(m)
		c := scheduler.CandidateOf(r)
		if rng.IntN(3) > 0 {
			c.SetValue(scheduler.ValuePrefixMatch, rng.Float64())
		}
		req := scheduler.Request{PromptTokens: rng.IntN(20_000), MaxTokens: rng.IntN(2) * rng.IntN(4000)}
		v := models.Extract(&req, &c, now)
		want := definition(&req, &c, now)
		for i, name := range models.Names() {
			x, ok := v.Get(i)
			w, wok := want[name]
			if ok != wok || math.Float64bits(x) != math.Float64bits(w) {
				t.Fatalf("trial %d: %s = %v (%v), by its definition %v (%v)", trial, name, x, ok, w, wok)
			}
			seen[name] = seen[name] || ok
		}
		for name := range want {
			if !names[name] {
				t.Fatalf("the definition names %q, which the schema lacks", name)
			}
		}
	}
	if len(seen) != models.NumFeatures {
		t.Errorf("only %d of %d features were ever computed: the trials miss a case", len(seen), models.NumFeatures)
	}
}

func BenchmarkExtract(b *testing.B) {
	r := pool.NewReplica(pool.Endpoint{Name: "r", Address: "10.0.0.1:8000"})
	now := time.Unix(1_700_000_000, 0)
	for k := range 4 {
		l := r.Dispatch(now.Add(-time.Duration(k)*time.Second), pool.Work{PromptTokens: 1000, UncachedTokens: 500, MaxTokens: 200})
		l.FirstToken(now.Add(-time.Duration(k)*time.Second + 100*time.Millisecond))
	}
	r.SetMetrics(pool.Metrics{Running: 4, KVUsage: 0.3, BlockSize: 16, NumGPUBlocks: 20000, ScrapedAt: now.Add(-20 * time.Millisecond)})
	c := scheduler.CandidateOf(r)
	c.SetValue(scheduler.ValuePrefixMatch, 0.5)
	req := scheduler.Request{PromptTokens: 8000, MaxTokens: 256}
	b.ReportAllocs()
	for b.Loop() {
		v := models.Extract(&req, &c, now)
		_ = v
	}
}
