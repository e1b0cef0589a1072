// Package scheduler decides which replica serves a request: filters remove replicas that must
// not serve it, weighted scorers rate the rest in [0,1], and a picker orders them (primary
// first, then fallbacks). A profile is one such set of plugins; plugins are built by name from
// a registry, so profiles live in configuration, in the manner of the kube-scheduler framework.
//
// Scheduling reads replica state from package pool and never does I/O or blocks, because it
// runs on the request path. Its dependencies are listed below.
//
// Allowed imports (checked by imports_test.go): pool, tokens, github.com/hashicorp/golang-lru/v2, github.com/prometheus/client_golang, k8s.io/utils.
package scheduler
