// Package workload generates the request streams Augur is benchmarked with: the five traffic
// shapes of the reference workloads (shared prefix, multi-turn chat, agentic tool loops, mixed
// SLO classes, and the mixed traffic meant for a heterogeneous pool), with Poisson arrivals
// whose rate follows a ladder of stages. New and Names pick a workload by name.
//
// It also replays real request traces (TraceReplay: the Azure LLM inference CSVs and the
// Mooncake JSONL with its prefix hashes, any file in either format): the trace's arrival
// pattern scaled to the ladder's rates, prompts of exactly the trace's token counts and
// prefix reuse, and SLO classes of the mixed-slo mix assigned by seed, since traces carry
// none. The trace files themselves live outside the repository (FindTrace).
//
// Streams are open-loop and deterministic: a generator is a pure function of its seed, its
// ladder and its options, so two runs (or two schedulers under comparison) see the same
// requests at the same offsets, byte for byte. Each generator is an iterator (Next), so a long
// run never holds more than the prompts it recurs over and the sessions still in progress.
// Determinism holds for a given Go release and architecture; math/rand/v2's PCG and the
// float arithmetic of its exponential sampler are what could change between them.
//
// Requests carry what a client would send (rendered prompt, OpenAI body, SLO and routing
// headers) and what a report groups by (SLO class, ladder stage). How they are sent, and to
// which pool, is the runner's business.
//
// # Text and tokens
//
// Generated text is made of four-byte words (a space and three letters), so under the
// project's token rule (package tokens: one token per four bytes) a text of n words is exactly
// n tokens and token boundaries fall between words. Chat prompts are measured the way the
// picker and the simulator measure them, on tokens.RenderChat of the messages, which adds the
// role markers to the count.
//
// Where a session resends history (multi-turn chat, agent loops), the assistant turns in it
// are the text the simulator generates for that turn: tokens.EchoText of the last user
// message, the echo rule package sim generates by, so that, as with a real client, the
// history resent is what the replica produced and prefix caching across turns behaves as in
// production. A test serves the sessions with a real simulator and compares.
//
// Dependencies: the standard library and package tokens only. It must not depend on the
// picker, the simulator or the runner: all of them consume it (its tests may run the
// simulator).
//
// Allowed imports (checked by imports_test.go): tokens.
package workload
