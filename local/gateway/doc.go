// Package gateway is a local stand-in for Envoy in front of Augur: an HTTP
// reverse proxy that runs every request through an external processor over
// ext_proc v3 exactly the way Envoy's ext_proc filter does when configured as
// in deploy/envoy/envoy.yaml (request and response headers SEND, bodies
// FULL_DUPLEX_STREAMED, trailers SEND, envoy.lb metadata forwarded and
// received, fail closed), and then routes like an ORIGINAL_DST cluster keyed
// on the x-gateway-destination-endpoint header.
//
// It lets the picker be exercised end to end on a laptop or in tests without
// an Envoy binary. Where it deliberately differs from Envoy is written down in
// docs/gateway.md.
//
// The package depends only on the standard library, golang.org/x/net's header
// validation, gRPC, protobuf and the generated Envoy API types from
// go-control-plane. It must not import other Augur packages: it plays the
// data plane, and a data plane knows nothing of the picker's internals.
//
// Allowed imports (checked by imports_test.go): github.com/envoyproxy/go-control-plane, golang.org/x/net, google.golang.org/grpc, google.golang.org/protobuf.
package gateway
