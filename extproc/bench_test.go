package extproc

import (
	"context"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// BenchmarkDecision16 is one full picker decision as the gateway sees it, over gRPC (in-memory
// transport) with 16 ready replicas: open the ext_proc stream, send the request headers and a
// chat body, receive the destination and the replayed body.
func BenchmarkDecision16(b *testing.B) {
	h := newHarness(b, 16)
	hdrs := reqHeaders(false, "x-slo-ttft-ms", "500", "x-slo-tpot-ms", "50")
	body := reqBody(chatBody, true)
	client := extprocv3.NewExternalProcessorClient(h.conn)
	b.ReportAllocs()
	for b.Loop() {
		ctx, cancel := context.WithCancel(context.Background())
		s, err := client.Process(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Send(hdrs); err != nil {
			b.Fatal(err)
		}
		if err := s.Send(body); err != nil {
			b.Fatal(err)
		}
		if r, err := s.Recv(); err != nil || r.GetRequestHeaders() == nil {
			b.Fatalf("headers response: %v %v", r, err)
		}
		if r, err := s.Recv(); err != nil || r.GetRequestBody() == nil {
			b.Fatalf("body response: %v %v", r, err)
		}
		cancel()
	}
}
