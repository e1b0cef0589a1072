// Package requestcontrol owns one request's lifecycle, the same in production and in the
// wind tunnel: admit (flow control may hold the request and resume it later) -> schedule ->
// dispatch (the lease, the prefix record and session affinity are credited to the replica,
// and moved if a fallback serves) -> first token -> complete, cancel or fail -> observe (the
// recorder, later live accuracy).
//
// Protocol adapters drive it: extproc for Envoy's ext_proc stream, windtunnel/virtual on a
// virtual clock. Neither keeps lifecycle logic of its own. Nothing here blocks or does I/O.
//
// Allowed imports (checked by imports_test.go): scheduler, pool, models, golang.org/x/sync, k8s.io/utils.
package requestcontrol
