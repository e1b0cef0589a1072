package extproc

import (
	"context"
	"io"
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

// fakeStream feeds Process prepared messages and drops its answers: the decision's cost
// without the gRPC transport.
type fakeStream struct {
	extprocv3.ExternalProcessor_ProcessServer
	ctx  context.Context
	in   []*extprocv3.ProcessingRequest
	next int
}

func (f *fakeStream) Context() context.Context                 { return f.ctx }
func (f *fakeStream) Send(*extprocv3.ProcessingResponse) error { return nil }
func (f *fakeStream) Recv() (*extprocv3.ProcessingRequest, error) {
	if f.next == len(f.in) {
		return nil, io.EOF
	}
	f.next++
	return f.in[f.next-1], nil
}

// BenchmarkDecisionNoTransport16 is the picker's own work for one decision with 16 replicas:
// read headers, buffer and parse the body, schedule, build the answer and replay the body.
func BenchmarkDecisionNoTransport16(b *testing.B) {
	h := newHarness(b, 16)
	msgs := []*extprocv3.ProcessingRequest{reqHeaders(false, "x-slo-ttft-ms", "500", "x-slo-tpot-ms", "50"), reqBody(chatBody, true)}
	fs := &fakeStream{ctx: context.Background(), in: msgs}
	b.ReportAllocs()
	for b.Loop() {
		fs.next = 0
		if err := h.srv.Process(fs); err != nil {
			b.Fatal(err)
		}
	}
}
