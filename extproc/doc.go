// Package extproc is Augur's face to the gateway: an Envoy external-processing (ext_proc v3)
// gRPC server speaking the Gateway API Inference Extension endpoint-picker protocol.
//
// For each HTTP request it buffers and parses the OpenAI body, reads the SLO, objective and
// fairness headers, asks the scheduler for a replica, answers with the destination header and
// the identical envoy.lb dynamic metadata, and replays the body. On the response path it passes
// every chunk straight back and, off the critical path, reads the server-sent events to measure
// the real time to first token and time per output token, which it reports to an observer.
//
// A streaming request whose client did not ask for usage is replayed with
// stream_options.include_usage set (usage.go), so output tokens are the server's count; the
// usage chunk is then removed from the stream the client receives. When a server sends no usage
// anyway, output tokens are max(chunks with output, the token rule over all generated text).
//
// Its dependencies are listed below; the request lifecycle itself lives in requestcontrol.
//
// Allowed imports (checked by imports_test.go): pool, requestcontrol, scheduler, tokens, github.com/envoyproxy/go-control-plane, github.com/google/uuid, github.com/prometheus/client_golang, google.golang.org/grpc, google.golang.org/protobuf, k8s.io/utils.
package extproc
