package models

import (
	"math"
	"time"

	"github.com/augur-llm/augur/scheduler"
)

// SchemaVersion identifies the feature schema: the features, their order and their meaning.
// It changes whenever any of them does, so a model is never fed features it was not trained on.
const SchemaVersion = 4

// Kind is how a feature's value is stored.
type Kind uint8

// Kinds.
const (
	Float Kind = iota // double precision
	Int               // integer (bigint when Wide)
)

// Feature is one input of the latency models, as computed for a candidate replica.
type Feature struct {
	// Name is the feature's column in request_samples and its name in model files.
	Name string
	Kind Kind
	// Wide marks integer features stored as bigint.
	Wide bool
	// Max bounds valid values (all are >= 0): a larger one is a measurement error.
	Max float64
	// Doc says what the value means and when it is NULL.
	Doc string

	compute func(in input) (float64, bool)
}

type input struct {
	req      *scheduler.Request
	c        *scheduler.Candidate
	at       time.Time
	uncached int
}

const maxInt32 = math.MaxInt32

// schema is the feature list in model-input order. Never reorder or reuse a name: append, and
// bump SchemaVersion.
var schema = [...]Feature{
	{Name: "kv_cache_usage", Kind: Float, Max: 1, Doc: "vllm:kv_cache_usage_perc as last scraped, 0..1",
		compute: func(in input) (float64, bool) { return in.c.Metrics.KVUsage, true }},
	{Name: "num_requests_waiting", Kind: Int, Max: maxInt32, Doc: "vllm:num_requests_waiting as last scraped",
		compute: func(in input) (float64, bool) { return float64(in.c.Metrics.Waiting), true }},
	{Name: "num_requests_running", Kind: Int, Max: maxInt32, Doc: "vllm:num_requests_running as last scraped",
		compute: func(in input) (float64, bool) { return float64(in.c.Metrics.Running), true }},
	{Name: "prefix_match", Kind: Float, Max: 1,
		Doc:     "share of the prompt's blocks the prefix record expects cached; NULL when no prefix plugin ran or the prompt is shorter than a block",
		compute: func(in input) (float64, bool) { return in.c.Value(scheduler.ValuePrefixMatch) }},
	{Name: "inflight_requests", Kind: Int, Max: maxInt32, Doc: "requests this picker dispatched to the replica and has not seen finish",
		compute: func(in input) (float64, bool) { return float64(in.c.Load.Requests), true }},
	{Name: "prefill_tokens_in_flight", Kind: Int, Wide: true, Max: math.MaxInt64, Doc: "prompt tokens dispatched whose first token has not been seen",
		compute: func(in input) (float64, bool) { return float64(in.c.Load.PrefillTokens), true }},
	{Name: "decode_requests_in_flight", Kind: Int, Max: maxInt32, Doc: "dispatched requests generating (first token seen)",
		compute: func(in input) (float64, bool) { return float64(in.c.Load.DecodeRequests), true }},
	{Name: "inflight_tokens", Kind: Int, Wide: true, Max: math.MaxInt64, Doc: "prompt plus output-limit tokens dispatched and not finished",
		compute: func(in input) (float64, bool) { return float64(in.c.Load.Tokens), true }},
	{Name: "metrics_age_ms", Kind: Float, Max: math.MaxFloat64, Doc: "age of the scraped metrics at decision time",
		compute: func(in input) (float64, bool) {
			return max(0, float64(in.at.Sub(in.c.Metrics.ScrapedAt))/float64(time.Millisecond)), true
		}},
	{Name: "num_gpu_blocks", Kind: Int, Max: maxInt32, Doc: "KV blocks of the replica (vllm:cache_config_info); NULL when not reported",
		compute: func(in input) (float64, bool) { return positive(in.c.Metrics.NumGPUBlocks) }},
	{Name: "block_size", Kind: Int, Max: maxInt32, Doc: "tokens per KV block (vllm:cache_config_info); NULL when not reported",
		compute: func(in input) (float64, bool) { return positive(in.c.Metrics.BlockSize) }},
	{Name: "input_tokens", Kind: Int, Max: maxInt32, Doc: "prompt tokens by the token rule",
		compute: func(in input) (float64, bool) { return float64(in.req.PromptTokens), true }},
	{Name: "max_tokens", Kind: Int, Max: maxInt32, Doc: "the client's output limit; NULL when it set none",
		compute: func(in input) (float64, bool) { return positive(in.req.MaxTokens) }},
	// Version 3: the work ahead as this picker knows it, and where the replica's step cycle is.
	{Name: "uncached_input_tokens", Kind: Int, Max: maxInt32, Doc: "prompt tokens the replica is expected to compute: input_tokens less the prefix match",
		compute: func(in input) (float64, bool) { return float64(in.uncached), true }},
	{Name: "prefill_uncached_tokens_in_flight", Kind: Int, Wide: true, Max: math.MaxInt64, Doc: "uncached prompt tokens dispatched whose first token has not been seen",
		compute: func(in input) (float64, bool) { return float64(in.c.Load.PrefillUncachedTokens), true }},
	{Name: "decode_tokens_left", Kind: Int, Wide: true, Max: math.MaxInt64, Doc: "output tokens decoding requests with a limit may still generate",
		compute: func(in input) (float64, bool) { return float64(in.c.Load.DecodeTokensLeft), true }},
	{Name: "last_token_age_ms", Kind: Float, Max: math.MaxFloat64, Doc: "time since a streamed token from the replica last reached the picker; NULL when none has",
		compute: func(in input) (float64, bool) {
			if in.c.Load.LastToken.IsZero() {
				return 0, false
			}
			return max(0, float64(in.at.Sub(in.c.Load.LastToken))/float64(time.Millisecond)), true
		}},
	{Name: "request_rate", Kind: Float, Max: math.MaxFloat64, Doc: "requests this picker dispatched to the replica per second, averaged over pool.RateWindow",
		compute: func(in input) (float64, bool) { return in.c.Load.RequestRate(in.at), true }},
	{Name: "uncached_token_rate", Kind: Float, Max: math.MaxFloat64, Doc: "uncached prompt tokens dispatched to the replica per second, averaged over pool.RateWindow",
		compute: func(in input) (float64, bool) { return in.c.Load.UncachedTokenRate(in.at), true }},
	{Name: "dispatched_since_scrape", Kind: Int, Max: maxInt32, Doc: "requests this picker dispatched to the replica since its metrics were scraped",
		compute: func(in input) (float64, bool) {
			return float64(max(0, in.c.Load.Counts.Since(in.c.Metrics.Counts).Dispatched)), true
		}},
	{Name: "first_tokens_since_scrape", Kind: Int, Max: maxInt32, Doc: "first tokens this picker saw from the replica since its metrics were scraped",
		compute: func(in input) (float64, bool) {
			return float64(max(0, in.c.Load.Counts.Since(in.c.Metrics.Counts).FirstTokens)), true
		}},
	{Name: "finished_since_scrape", Kind: Int, Max: maxInt32, Doc: "requests of this picker the replica finished since its metrics were scraped",
		compute: func(in input) (float64, bool) {
			return float64(max(0, in.c.Load.Counts.Since(in.c.Metrics.Counts).Finished)), true
		}},
	// Version 4: the replica's pace as its token streams show it, and the load of the last seconds.
	{Name: "step_ms", Kind: Float, Max: math.MaxFloat64, Doc: "the replica's step time (gap between token arrivals while decoding), averaged over the last few steps; NULL before a step was seen",
		compute: func(in input) (float64, bool) { return ms(in.c.Load.Steps.Fast) }},
	{Name: "step_slow_ms", Kind: Float, Max: math.MaxFloat64, Doc: "the replica's step time averaged over the last ~64 steps; NULL before a step was seen",
		compute: func(in input) (float64, bool) { return ms(in.c.Load.Steps.Slow) }},
	{Name: "last_step_ms", Kind: Float, Max: math.MaxFloat64, Doc: "the replica's latest step time; NULL before a step was seen",
		compute: func(in input) (float64, bool) { return ms(in.c.Load.Steps.Last) }},
	{Name: "step_wait_ms", Kind: Float, Max: math.MaxFloat64, Doc: "time left of the step in progress if it lasts as long as the latest: last_step_ms less last_token_age_ms, at least 0; NULL when either is",
		compute: func(in input) (float64, bool) {
			if in.c.Load.LastToken.IsZero() || in.c.Load.Steps.Last == 0 {
				return 0, false
			}
			return max(0, float64(in.c.Load.Steps.Last-in.at.Sub(in.c.Load.LastToken))/float64(time.Millisecond)), true
		}},
	{Name: "request_rate_fast", Kind: Float, Max: math.MaxFloat64, Doc: "requests this picker dispatched to the replica per second, averaged over pool.FastRateWindow",
		compute: func(in input) (float64, bool) { return in.c.Load.RequestRateFast(in.at), true }},
	{Name: "uncached_token_rate_fast", Kind: Float, Max: math.MaxFloat64, Doc: "uncached prompt tokens dispatched to the replica per second, averaged over pool.FastRateWindow",
		compute: func(in input) (float64, bool) { return in.c.Load.UncachedTokenRateFast(in.at), true }},
	{Name: "step_age_ms", Kind: Float, Max: math.MaxFloat64, Doc: "time since the replica's step in progress began as far as the picker can tell (pool.Load.StepStart); NULL when unknown",
		compute: func(in input) (float64, bool) {
			if in.c.Load.StepStart.IsZero() {
				return 0, false
			}
			return max(0, float64(in.at.Sub(in.c.Load.StepStart))/float64(time.Millisecond)), true
		}},
	{Name: "next_step_requests", Kind: Int, Max: maxInt32, Doc: "requests dispatched to the replica since its step in progress began: they will be scheduled ahead of this one",
		compute: func(in input) (float64, bool) { return float64(in.c.Load.NextStepRequests), true }},
	{Name: "next_step_uncached_tokens", Kind: Int, Wide: true, Max: math.MaxInt64, Doc: "uncached prompt tokens of next_step_requests",
		compute: func(in input) (float64, bool) { return float64(in.c.Load.NextStepUncachedTokens), true }},
	{Name: "current_step_uncached_tokens", Kind: Int, Wide: true, Max: math.MaxInt64, Doc: "uncached prompt tokens in flight dispatched before the step in progress began: prefill_uncached_tokens_in_flight less next_step_uncached_tokens",
		compute: func(in input) (float64, bool) {
			return float64(max(0, in.c.Load.PrefillUncachedTokens-in.c.Load.NextStepUncachedTokens)), true
		}},
	{Name: "decode_context_tokens", Kind: Int, Wide: true, Max: math.MaxInt64, Doc: "context of the decoding requests: their prompt tokens plus the output tokens seen",
		compute: func(in input) (float64, bool) { return float64(in.c.Load.DecodeContextTokens), true }},
}

// ms is d in milliseconds, NULL when 0.
func ms(d time.Duration) (float64, bool) { return float64(d) / float64(time.Millisecond), d > 0 }

func positive(v int) (float64, bool) { return float64(v), v > 0 }

// NumFeatures is the length of the schema.
const NumFeatures = len(schema)

// At returns feature i, without the copy of the whole schema that Schema makes: the
// recorder validates every sample on the request path.
func At(i int) Feature { return schema[i] }

// Schema returns the features in order.
func Schema() []Feature { return append([]Feature(nil), schema[:]...) }

// Names returns the feature names in order.
func Names() []string {
	out := make([]string, NumFeatures)
	for i, f := range schema {
		out[i] = f.Name
	}
	return out
}

// Vector is one candidate's features at decision time; a feature not computed is NULL.
// The zero Vector has every feature NULL. A NULL feature's stored value is always 0.
type Vector struct {
	values [NumFeatures]float64
	set    uint64 // bit i: values[i] was computed
}

// Extract computes the features of candidate c for req at time at (the decision's).
func Extract(req *scheduler.Request, c *scheduler.Candidate, at time.Time) Vector {
	in := input{req: req, c: c, at: at, uncached: c.UncachedTokens(req)}
	var v Vector
	for i := range schema {
		if x, ok := schema[i].compute(in); ok {
			v.values[i] = x
			v.set |= 1 << i
		}
	}
	return v
}

// Get returns feature i and whether it was computed.
func (v Vector) Get(i int) (float64, bool) { return v.values[i], v.set&(1<<i) != 0 }

// Set sets feature i (for decoding stored rows and for tests).
func (v *Vector) Set(i int, x float64) {
	v.values[i] = x
	v.set |= 1 << i
}

// Clear makes feature i NULL.
func (v *Vector) Clear(i int) {
	v.values[i] = 0
	v.set &^= 1 << i
}

// Index returns the position of the feature named name, or -1.
func Index(name string) int {
	for i, f := range schema {
		if f.Name == name {
			return i
		}
	}
	return -1
}
