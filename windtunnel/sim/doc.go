// Package sim simulates vLLM replicas, so that Augur can be built and judged without GPUs.
// An Engine is one replica's engine core (queueing, batching, prefix caching and step
// timing in the manner of vLLM V1); a Server puts vLLM's OpenAI-compatible HTTP API and
// Prometheus metrics in front of it. Command cmd/sim hosts several replicas in one process.
//
// Dependencies: the standard library, package tokens, k8s.io/utils/clock (time is injected:
// the engine never reads the system clock itself), github.com/prometheus/client_golang (each
// server has a registry of its own) and github.com/google/uuid. It must not depend on any
// other Augur package: the picker is tested against it, not built into it.
//
// # Tokens
//
// Counting follows package tokens, the rule the picker uses too: a text prompt is
// ceil(bytes/4) tokens, a token-id prompt one token per id, and a chat is rendered with
// tokens.RenderChat before counting and hashing (content is read by tokens.ContentText, as
// the picker reads it: list-of-parts content becomes its text parts joined by "\n"). Prefix-cache blocks are 16 tokens, i.e. 64 bytes of the rendered prompt or
// 16 ids; only full blocks are cached, and the block holding the last prompt token is always
// recomputed, so at most floor((prompt-1)/16)*16 tokens hit.
//
// # Output: the echo rule
//
// The simulator always generates exactly max_tokens tokens (64 when the request names
// neither max_tokens nor max_completion_tokens; ignore_eos is implied). The text echoes the
// last non-empty user message (chat) or the prompt (completions; tokens.EchoFallback for
// token ids, and for a chat without user text) by the echo rule of package tokens
// (tokens.EchoText): cut at rune boundaries into pieces of at most 4 bytes, each padded with
// spaces to exactly 4 bytes, repeated cyclically. Every generated token is one 4-byte piece,
// so tokens.Count(text) equals completion_tokens and every streamed delta is valid UTF-8.
// The rule lives in package tokens so that the workloads, which resend the generated text
// as history, predict it with the same function; tokens.EchoText also computes the expected
// text for tests.
//
// ServerOptions.TokenText = TokenTextNatural (cmd/sim --token-text natural) generates word
// pieces of 1 to 10 bytes instead, as a real tokenizer's tokens are, so that byte counting
// is wrong on them as it is against vLLM; usage still reports the true count.
//
// # Latency model
//
// Each engine step schedules, in vLLM V1's order, the running requests (one decode token, or
// the next prefill chunk) and then waiting requests FCFS, within a budget of
// MaxNumBatchedTokens tokens and MaxNumSeqs running requests. A step lasts
//
//	T0 + max(Tw, KLin*N) + KKV*sum_decode(ctx) + KAtt*sum_prefill(c*(ctx+c/2))
//
// times a uniform jitter of ±Profile.Jitter (seeded by Config.Seed) and Config.TimeScale,
// where N is the step's token count, c a prefill chunk and ctx the tokens already computed
// for that request. A request emits its first token at the end of the step that completes
// its prefill, then one token per step. KV capacity is counted in blocks: a waiting request
// that cannot get blocks blocks the queue; a running one that cannot grow preempts the
// newest running request, which recomputes later. Profiles "8b-h100" and "32b-tp2-h100"
// carry the reference coefficients (a cold 7,200-token prompt gets a TTFT of about 0.19 s and
// 0.41 s); any Profile value is a custom profile.
//
// A real-time Engine keeps to the model's time line rather than to its timers' wake-ups: a
// step starts when the previous one ends in the model, so a timer that fires late on a busy
// machine delays one step's tokens without slowing the steps after it, and a real-time
// replica serves at the same pace as a virtual-time one (TestRealTimeKeepsModelledPace).
//
// # Forecasts
//
// A Forecaster answers what a request would experience on a virtual-time Replica if nothing
// else arrived: it copies the replica's whole engine state (sequences, KV blocks and prefix
// cache, the step in progress and its end, counters, the jitter generator's state), submits
// the request to the copy at now and runs the copy's steps until the request has its first
// token and then finished or produced a bound of further tokens (DefaultForecastTokens). It
// reports TTFT and TPOT as the runner would measure them. Because the copy continues the
// replica's jitter sequence, the forecast is exact when no other request arrives before the
// request ends (TestForecastIsExact), and forecasting never changes what the replica does
// (TestForecastLeavesReplicaAlone). It is the wind tunnel's clairvoyant reference, not a
// model of anything a picker could know.
//
// # Cost
//
// Streaming costs about 0.3 µs of CPU and no allocation per token in steady state, measured
// through the handler including the engine step (BenchmarkStreamHandler, 256-token streams,
// 2 cores): 285-330 ns, 0.28 allocs and 67 B per token with the per-request set-up (body
// parsing, prompt hashing, echo pieces: 71 allocations) spread over the stream. Over a loopback HTTP/1.1
// connection with a client reading, a streamed token costs about 3.7-4 µs, mostly the
// per-chunk write and flush system calls (BenchmarkStreamLoopback).
//
// A forecast on an 8b-h100 replica running 50 requests costs about 22 µs following 4 tokens
// after the first, 53 µs following 16 and 340 µs following a 50-800-token request to its end,
// without allocating (BenchmarkForecast, 2 shared cores: minimum of four runs). The copy is
// cheap because the KV-block table, half a megabyte, is not copied each time: the forecaster
// keeps a copy per replica and updates the blocks that the replica or the last forecast
// changed, and it reads the replica's prefix index in place. About 1.3 µs goes to each
// simulated step. Following 4 tokens rather than the whole request changes the TPOT forecast
// by 15% on average (27% at p90): without later arrivals the batch drains; against what then
// happens in a run, where requests keep arriving, the bounded forecast is the closer one
// (windtunnel/virtual, BenchmarkClairvoyantMixedSLO).
//
// Allowed imports (checked by imports_test.go): tokens, github.com/google/uuid, github.com/prometheus/client_golang, k8s.io/utils.
package sim
