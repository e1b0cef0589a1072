// Command sim runs simulated vLLM replicas for Augur's development and tests: N replicas in
// one process, sim-0 .. sim-(N-1), on consecutive ports from --base-port, each an
// OpenAI-compatible server with vLLM's /metrics (see package sim).
//
//	sim --replicas 4 --base-port 8001 --profile 32b-tp2-h100 --model qwen3-32b
//
// Any built-in profile can be customised with the override flags (--tw-us, --k-lin-us,
// --num-gpu-blocks, ...). SIGINT or SIGTERM stops accepting connections, lets in-flight
// requests finish for up to --shutdown-timeout, then stops the engines.
//
// It depends on package sim and the standard library (plus k8s.io/utils/clock for the real
// clock); nothing else in Augur may depend on it.
package main
