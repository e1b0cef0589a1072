// Package picker assembles a running endpoint picker from its configuration: the endpoint
// pool and its metrics scraper, the scheduler profile, flow control when configured, the
// ext_proc gRPC server with health, and the Prometheus metrics endpoint. cmd/epp is a thin
// wrapper around it, and the local stack used by the demo and end-to-end tests runs the very
// same code.
//
// It may depend on every picker-side package (extproc, flowcontrol, scheduler, pool); nothing
// depends on it but binaries and the local stack.
//
// Allowed imports (checked by imports_test.go): discovery, extproc, flowcontrol, models, pool, predictor, requestcontrol, scheduler, store, github.com/jackc/pgx/v5, github.com/prometheus/client_golang, google.golang.org/grpc, k8s.io/apimachinery, k8s.io/client-go, k8s.io/utils, sigs.k8s.io/yaml.
package picker
