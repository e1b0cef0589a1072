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
// Allowed imports (checked by imports_test.go): pool, requestcontrol, scheduler, windtunnel/report, windtunnel/sim, windtunnel/workload, k8s.io/utils/clock.
package virtual
