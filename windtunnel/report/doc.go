// Package report turns the outcomes of a benchmark run (one per request) into the figures
// the reference workloads ask of every run: per SLO class and overall, SLO attainment,
// goodput, TTFT/TPOT/end-to-end percentiles, throughput, shedding and why, the pool's
// prefix-cache hit rate and per-replica request counts; optionally per ladder stage. It
// renders them as a text table for people and as JSON for machines.
//
// It is pure: no clocks, no I/O beyond the writer it is given. Dependencies: the standard
// library and gonum.org/v1/gonum/stat. It knows nothing of how outcomes were produced, so the
// same report reads a simulated run and a real one.
//
// # Definitions
//
// A request is counted in the window its Start falls in, whenever it ends, so a run's
// throughput is what the pool did with the load offered in the window; rates divide by the
// window's length. An outcome is completed when its status is 2xx, shed when it is 429, and
// an error otherwise (0 for a request that got no response).
//
// A request meets its SLO when it completed, its TTFT is at most its TTFT objective and its
// TPOT at most its TPOT objective; an absent objective (0) is met by any completed request,
// and so is a TPOT objective for a request of fewer than two output tokens (it has no TPOT).
// Shed and failed requests never meet it. Attainment is judged on the requests that carry
// an objective: met/those requests, and n/a (null in JSON) for a set with none, never 100%;
// goodput is met per second of window, counting completed requests without objectives.
//
// Latency percentiles are over completed requests: TTFT over those with at least one output
// token, TPOT over those with at least two, end-to-end over all. A percentile is gonum's
// stat.Quantile with stat.Empirical on the sorted values: the smallest value v such that a
// fraction p of the samples is at most v (no interpolation), so p99 of 100 samples is the
// 99th smallest. An empty set has no percentile: null in JSON, "-" in text. The prefix-cache
// hit rate is cached/prompt tokens summed over completed requests.
//
// Allowed imports (checked by imports_test.go): gonum.org/v1/gonum.
package report
