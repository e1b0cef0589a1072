// Package stack runs Augur's whole request path in one process for the demo and end-to-end
// tests: simulated vLLM replicas, the endpoint picker and the local gateway, each on its own
// loopback TCP port and talking real HTTP and gRPC to the others. It runs the same code as the
// cmd/sim, cmd/epp and cmd/gateway binaries; only the process boundaries differ.
//
// It may depend on every other package; only binaries and tests depend on it.
//
// Allowed imports (checked by imports_test.go): local/gateway, picker, pool, requestcontrol, windtunnel/sim, github.com/openai/openai-go/v3, k8s.io/utils.
package stack
