// Package virtual runs the picker's real scheduling code against simulated replicas in
// virtual time, in one goroutine and without HTTP: the wind tunnel in which policies are
// compared. Ten simulated minutes of traffic on dozens of replicas take seconds, and the same
// seed gives the same result every time.
//
// What the picker sees is reproduced: each replica's metrics are scraped on an interval (with
// per-replica phase) into the same pool the picker uses, stale metrics take a replica out of
// rotation, and the picker's in-flight accounting is updated at dispatch, first token and
// completion. Network and decision latency are taken as zero.
//
// Requests go through the same lifecycle (package requestcontrol) as in the picker.
//
// Config.Clairvoyant replaces the predictor with the limit of prediction: each candidate's
// TTFT and TPOT forecast on a copy of its replica's true engine state (sim.Forecaster), exact
// but for the requests that arrive later. The distance between a policy run with a predictor
// and the same policy run with the clairvoyant is what prediction error costs. It makes a run
// about three times as expensive in CPU: 1.1-1.3 s instead of 0.43 s for a minute of
// mixed-slo at 60 req/s on 6x8b-h100,2x8b-a100, eight forecasts of about 25 µs per decision
// (BenchmarkClairvoyantMixedSLO).
//
// Allowed imports (checked by imports_test.go): flowcontrol, pool, requestcontrol, scheduler, windtunnel/report, windtunnel/sim, windtunnel/workload, k8s.io/utils/clock.
package virtual
