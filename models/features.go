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
	// Doc says what the value means and when it is NULL; Extract computes it so.
	Doc string
}

const maxInt32 = math.MaxInt32

// Feature positions, in model-input order: the schema below is keyed by them.
const (
	fKvCacheUsage = iota
	fNumRequestsWaiting
	fNumRequestsRunning
	fPrefixMatch
	fInflightRequests
	fPrefillTokensInFlight
	fDecodeRequestsInFlight
	fInflightTokens
	fMetricsAgeMs
	fNumGpuBlocks
	fBlockSize
	fInputTokens
	fMaxTokens
	fUncachedInputTokens
	fPrefillUncachedTokensInFlight
	fDecodeTokensLeft
	fLastTokenAgeMs
	fRequestRate
	fUncachedTokenRate
	fDispatchedSinceScrape
	fFirstTokensSinceScrape
	fFinishedSinceScrape
	fStepMs
	fStepSlowMs
	fLastStepMs
	fStepWaitMs
	fRequestRateFast
	fUncachedTokenRateFast
	fStepAgeMs
	fNextStepRequests
	fNextStepUncachedTokens
	fCurrentStepUncachedTokens
	fDecodeContextTokens
)

// schema is the feature list in model-input order. Never reorder or reuse a name: append, and
// bump SchemaVersion.
var schema = [...]Feature{
	fKvCacheUsage:       {Name: "kv_cache_usage", Kind: Float, Max: 1, Doc: "vllm:kv_cache_usage_perc as last scraped, 0..1"},
	fNumRequestsWaiting: {Name: "num_requests_waiting", Kind: Int, Max: maxInt32, Doc: "vllm:num_requests_waiting as last scraped"},
	fNumRequestsRunning: {Name: "num_requests_running", Kind: Int, Max: maxInt32, Doc: "vllm:num_requests_running as last scraped"},
	fPrefixMatch: {Name: "prefix_match", Kind: Float, Max: 1,
		Doc: "share of the prompt's blocks the prefix record expects cached; NULL when no prefix plugin ran or the prompt is shorter than a block"},
	fInflightRequests:       {Name: "inflight_requests", Kind: Int, Max: maxInt32, Doc: "requests this picker dispatched to the replica and has not seen finish"},
	fPrefillTokensInFlight:  {Name: "prefill_tokens_in_flight", Kind: Int, Wide: true, Max: math.MaxInt64, Doc: "prompt tokens dispatched whose first token has not been seen"},
	fDecodeRequestsInFlight: {Name: "decode_requests_in_flight", Kind: Int, Max: maxInt32, Doc: "dispatched requests generating (first token seen)"},
	fInflightTokens:         {Name: "inflight_tokens", Kind: Int, Wide: true, Max: math.MaxInt64, Doc: "prompt plus output-limit tokens dispatched and not finished"},
	fMetricsAgeMs:           {Name: "metrics_age_ms", Kind: Float, Max: math.MaxFloat64, Doc: "age of the scraped metrics at decision time"},
	fNumGpuBlocks:           {Name: "num_gpu_blocks", Kind: Int, Max: maxInt32, Doc: "KV blocks of the replica (vllm:cache_config_info); NULL when not reported"},
	fBlockSize:              {Name: "block_size", Kind: Int, Max: maxInt32, Doc: "tokens per KV block (vllm:cache_config_info); NULL when not reported"},
	fInputTokens:            {Name: "input_tokens", Kind: Int, Max: maxInt32, Doc: "prompt tokens by the token rule"},
	fMaxTokens:              {Name: "max_tokens", Kind: Int, Max: maxInt32, Doc: "the client's output limit; NULL when it set none"},
	// Version 3: the work ahead as this picker knows it, and where the replica's step cycle is.
	fUncachedInputTokens:           {Name: "uncached_input_tokens", Kind: Int, Max: maxInt32, Doc: "prompt tokens the replica is expected to compute: input_tokens less the prefix match"},
	fPrefillUncachedTokensInFlight: {Name: "prefill_uncached_tokens_in_flight", Kind: Int, Wide: true, Max: math.MaxInt64, Doc: "uncached prompt tokens dispatched whose first token has not been seen"},
	fDecodeTokensLeft:              {Name: "decode_tokens_left", Kind: Int, Wide: true, Max: math.MaxInt64, Doc: "output tokens decoding requests with a limit may still generate"},
	fLastTokenAgeMs:                {Name: "last_token_age_ms", Kind: Float, Max: math.MaxFloat64, Doc: "time since a streamed token from the replica last reached the picker; NULL when none has"},
	fRequestRate:                   {Name: "request_rate", Kind: Float, Max: math.MaxFloat64, Doc: "requests this picker dispatched to the replica per second, averaged over pool.RateWindow"},
	fUncachedTokenRate:             {Name: "uncached_token_rate", Kind: Float, Max: math.MaxFloat64, Doc: "uncached prompt tokens dispatched to the replica per second, averaged over pool.RateWindow"},
	fDispatchedSinceScrape:         {Name: "dispatched_since_scrape", Kind: Int, Max: maxInt32, Doc: "requests this picker dispatched to the replica since its metrics were scraped"},
	fFirstTokensSinceScrape:        {Name: "first_tokens_since_scrape", Kind: Int, Max: maxInt32, Doc: "first tokens this picker saw from the replica since its metrics were scraped"},
	fFinishedSinceScrape:           {Name: "finished_since_scrape", Kind: Int, Max: maxInt32, Doc: "requests of this picker the replica finished since its metrics were scraped"},
	// Version 4: the replica's pace as its token streams show it, and the load of the last seconds.
	fStepMs:                    {Name: "step_ms", Kind: Float, Max: math.MaxFloat64, Doc: "the replica's step time (gap between token arrivals while decoding), averaged over the last few steps; NULL before a step was seen"},
	fStepSlowMs:                {Name: "step_slow_ms", Kind: Float, Max: math.MaxFloat64, Doc: "the replica's step time averaged over the last ~64 steps; NULL before a step was seen"},
	fLastStepMs:                {Name: "last_step_ms", Kind: Float, Max: math.MaxFloat64, Doc: "the replica's latest step time; NULL before a step was seen"},
	fStepWaitMs:                {Name: "step_wait_ms", Kind: Float, Max: math.MaxFloat64, Doc: "time left of the step in progress if it lasts as long as the latest: last_step_ms less last_token_age_ms, at least 0; NULL when either is"},
	fRequestRateFast:           {Name: "request_rate_fast", Kind: Float, Max: math.MaxFloat64, Doc: "requests this picker dispatched to the replica per second, averaged over pool.FastRateWindow"},
	fUncachedTokenRateFast:     {Name: "uncached_token_rate_fast", Kind: Float, Max: math.MaxFloat64, Doc: "uncached prompt tokens dispatched to the replica per second, averaged over pool.FastRateWindow"},
	fStepAgeMs:                 {Name: "step_age_ms", Kind: Float, Max: math.MaxFloat64, Doc: "time since the replica's step in progress began as far as the picker can tell (pool.Load.StepStart); NULL when unknown"},
	fNextStepRequests:          {Name: "next_step_requests", Kind: Int, Max: maxInt32, Doc: "requests dispatched to the replica since its step in progress began: they will be scheduled ahead of this one"},
	fNextStepUncachedTokens:    {Name: "next_step_uncached_tokens", Kind: Int, Wide: true, Max: math.MaxInt64, Doc: "uncached prompt tokens of next_step_requests"},
	fCurrentStepUncachedTokens: {Name: "current_step_uncached_tokens", Kind: Int, Wide: true, Max: math.MaxInt64, Doc: "uncached prompt tokens in flight dispatched before the step in progress began: prefill_uncached_tokens_in_flight less next_step_uncached_tokens"},
	fDecodeContextTokens:       {Name: "decode_context_tokens", Kind: Int, Wide: true, Max: math.MaxInt64, Doc: "context of the decoding requests: their prompt tokens plus the output tokens seen"},
}

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

// Extract computes the features of candidate c for req at time at (the decision's), as the
// schema's Docs define them. It runs for every candidate of every decision: each value is
// computed once, straight into the vector, and what several features share (the counts since
// the scrape, the dispatch rates) once per candidate.
func Extract(req *scheduler.Request, c *scheduler.Candidate, at time.Time) Vector {
	var v Vector
	l, m := &c.Load, &c.Metrics
	v.values[fKvCacheUsage] = m.KVUsage
	v.values[fNumRequestsWaiting] = float64(m.Waiting)
	v.values[fNumRequestsRunning] = float64(m.Running)
	v.values[fInflightRequests] = float64(l.Requests)
	v.values[fPrefillTokensInFlight] = float64(l.PrefillTokens)
	v.values[fDecodeRequestsInFlight] = float64(l.DecodeRequests)
	v.values[fInflightTokens] = float64(l.Tokens)
	v.values[fMetricsAgeMs] = max(0, msOf(at.Sub(m.ScrapedAt)))
	v.values[fInputTokens] = float64(req.PromptTokens)
	v.values[fUncachedInputTokens] = float64(c.UncachedTokens(req))
	v.values[fPrefillUncachedTokensInFlight] = float64(l.PrefillUncachedTokens)
	v.values[fDecodeTokensLeft] = float64(l.DecodeTokensLeft)
	r := l.Rates(at)
	v.values[fRequestRate] = r.Request
	v.values[fUncachedTokenRate] = r.UncachedToken
	v.values[fRequestRateFast] = r.RequestFast
	v.values[fUncachedTokenRateFast] = r.UncachedTokenFast
	since := l.Counts.Since(m.Counts)
	v.values[fDispatchedSinceScrape] = float64(max(0, since.Dispatched))
	v.values[fFirstTokensSinceScrape] = float64(max(0, since.FirstTokens))
	v.values[fFinishedSinceScrape] = float64(max(0, since.Finished))
	v.values[fNextStepRequests] = float64(l.NextStepRequests)
	v.values[fNextStepUncachedTokens] = float64(l.NextStepUncachedTokens)
	v.values[fCurrentStepUncachedTokens] = float64(max(0, l.PrefillUncachedTokens-l.NextStepUncachedTokens))
	v.values[fDecodeContextTokens] = float64(l.DecodeContextTokens)
	v.set = alwaysSet

	// The features that may be NULL.
	if x, ok := c.Value(scheduler.ValuePrefixMatch); ok {
		v.Set(fPrefixMatch, x)
	}
	if m.NumGPUBlocks > 0 {
		v.Set(fNumGpuBlocks, float64(m.NumGPUBlocks))
	}
	if m.BlockSize > 0 {
		v.Set(fBlockSize, float64(m.BlockSize))
	}
	if req.MaxTokens > 0 {
		v.Set(fMaxTokens, float64(req.MaxTokens))
	}
	if !l.LastToken.IsZero() {
		age := at.Sub(l.LastToken)
		v.Set(fLastTokenAgeMs, max(0, msOf(age)))
		if l.Steps.Last != 0 {
			v.Set(fStepWaitMs, max(0, msOf(l.Steps.Last-age)))
		}
	}
	if l.Steps.Fast > 0 {
		v.Set(fStepMs, msOf(l.Steps.Fast))
	}
	if l.Steps.Slow > 0 {
		v.Set(fStepSlowMs, msOf(l.Steps.Slow))
	}
	if l.Steps.Last > 0 {
		v.Set(fLastStepMs, msOf(l.Steps.Last))
	}
	if !l.StepStart.IsZero() {
		v.Set(fStepAgeMs, max(0, msOf(at.Sub(l.StepStart))))
	}
	return v
}

// alwaysSet marks the features Extract always computes.
const alwaysSet = 1<<fKvCacheUsage | 1<<fNumRequestsWaiting | 1<<fNumRequestsRunning | 1<<fInflightRequests |
	1<<fPrefillTokensInFlight | 1<<fDecodeRequestsInFlight | 1<<fInflightTokens | 1<<fMetricsAgeMs | 1<<fInputTokens |
	1<<fUncachedInputTokens | 1<<fPrefillUncachedTokensInFlight | 1<<fDecodeTokensLeft | 1<<fRequestRate |
	1<<fUncachedTokenRate | 1<<fRequestRateFast | 1<<fUncachedTokenRateFast | 1<<fDispatchedSinceScrape |
	1<<fFirstTokensSinceScrape | 1<<fFinishedSinceScrape | 1<<fNextStepRequests | 1<<fNextStepUncachedTokens |
	1<<fCurrentStepUncachedTokens | 1<<fDecodeContextTokens

// msOf is d in milliseconds.
func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Get returns feature i and whether it was computed.
func (v *Vector) Get(i int) (float64, bool) { return v.values[i], v.set&(1<<i) != 0 }

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
