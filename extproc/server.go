package extproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"k8s.io/utils/clock"

	"github.com/augur-llm/augur/pool"
	"github.com/augur-llm/augur/requestcontrol"
	"github.com/augur-llm/augur/scheduler"
)

// DefaultMaxBodyBytes is the request body limit when none is configured: far above any text
// prompt a model accepts, low enough that one client cannot make the picker buffer gigabytes.
const DefaultMaxBodyBytes = 16 << 20

// maxResponseBodyKept bounds how much of a non-streaming response is kept to read its usage.
const maxResponseBodyKept = 4 << 20

// Config configures a Server.
type Config struct {
	Pool *pool.Pool
	// Director runs each request's lifecycle; the server only translates the protocol.
	Director *requestcontrol.Director
	Clock    clock.PassiveClock
	// MaxBodyBytes is the request body limit (413 beyond); 0 means DefaultMaxBodyBytes.
	MaxBodyBytes int
	// Metrics receives the server's metrics; nil disables them. Register it as one of the
	// director's observers to count completions.
	Metrics *Metrics
	Log     *slog.Logger
}

// Server is the ext_proc server. Register it on a grpc.Server with Register.
type Server struct {
	extprocv3.UnimplementedExternalProcessorServer
	cfg      Config
	health   *health.Server
	draining atomic.Bool
}

// gRPC health service names the gateway and Kubernetes probes ask about.
const (
	HealthLiveness  = "liveness"
	HealthReadiness = "readiness"
	HealthExtProc   = "envoy.service.ext_proc.v3.ExternalProcessor"
)

// NewServer returns a server.
func NewServer(cfg Config) *Server {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	s := &Server{cfg: cfg, health: health.NewServer()}
	s.health.SetServingStatus(HealthLiveness, healthpb.HealthCheckResponse_SERVING)
	s.updateHealth()
	return s
}

// Register registers the ext_proc and health services on g.
func (s *Server) Register(g *grpc.Server) {
	extprocv3.RegisterExternalProcessorServer(g, s)
	healthpb.RegisterHealthServer(g, s.health)
}

// RunHealth keeps readiness in step with the pool until ctx is done: ready while at least one
// replica has fresh metrics and the server is not draining.
func (s *Server) RunHealth(ctx context.Context, clk clock.WithTicker, every time.Duration) {
	t := clk.NewTicker(every)
	defer t.Stop()
	for {
		s.updateHealth()
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
	}
}

func (s *Server) updateHealth() {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if !s.draining.Load() && s.cfg.Pool.Ready() {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus("", st)
	s.health.SetServingStatus(HealthReadiness, st)
	s.health.SetServingStatus(HealthExtProc, st)
}

// Drain makes the server refuse new requests with 503 (rejected-shutting-down) and report
// not ready, while requests already routed continue.
func (s *Server) Drain() {
	s.draining.Store(true)
	s.updateHealth()
}

// Outcome and the outcomes are the lifecycle's.
type Outcome = requestcontrol.Outcome

// Outcomes of requests the server refuses before they reach the lifecycle.
const (
	OutcomeBadRequest   = requestcontrol.OutcomeBadRequest
	OutcomeTooLarge     = requestcontrol.OutcomeTooLarge
	OutcomeShuttingDown = requestcontrol.OutcomeShuttingDown
	OutcomeInternal     = requestcontrol.OutcomeInternal
)

// Process implements the ext_proc stream for one HTTP request.
func (s *Server) Process(stream extprocv3.ExternalProcessor_ProcessServer) error {
	x := &exchange{s: s, stream: stream, ctx: stream.Context()}
	err := x.run()
	x.finish()
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

type exchange struct {
	s      *Server
	stream extprocv3.ExternalProcessor_ProcessServer
	ctx    context.Context

	received time.Time
	hdrs     requestHeaders
	md       *corev3.Metadata
	body     []byte
	trailers bool // request trailers ended the body
	// bodyStreamed is set once a body message arrived (the headers did not end the stream).
	bodyStreamed bool

	flight *requestcontrol.Flight // set once the request was dispatched

	respStatus int
	sse        bool
	reader     SSEReader
	// stripUsage is set when the picker asked for the stream's usage on the client's behalf;
	// the filter then removes the usage chunk from what the client receives.
	stripUsage   bool
	usageFilter  usageFilter
	respBody     []byte // a non-streaming response, kept to read its usage
	respOverflow bool   // respBody grew past maxResponseBodyKept and was dropped
	done         bool
}

func (x *exchange) run() error {
	for {
		msg, err := x.stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
				return io.EOF
			}
			return fmt.Errorf("receive: %w", err)
		}
		if md := msg.GetMetadataContext(); md != nil && x.flight == nil {
			x.md = md
		}
		var stop bool
		switch v := msg.GetRequest().(type) {
		case *extprocv3.ProcessingRequest_RequestHeaders:
			stop, err = x.onRequestHeaders(v.RequestHeaders)
		case *extprocv3.ProcessingRequest_RequestBody:
			stop, err = x.onRequestBody(v.RequestBody)
		case *extprocv3.ProcessingRequest_RequestTrailers:
			stop, err = x.onRequestTrailers()
		case *extprocv3.ProcessingRequest_ResponseHeaders:
			err = x.onResponseHeaders(v.ResponseHeaders, msg.GetMetadataContext())
		case *extprocv3.ProcessingRequest_ResponseBody:
			err = x.onResponseBody(v.ResponseBody)
		case *extprocv3.ProcessingRequest_ResponseTrailers:
			err = x.send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{
				ResponseTrailers: &extprocv3.TrailersResponse{}}})
			x.complete(x.s.cfg.Clock.Now())
		default:
			// Unknown message kinds come from newer Envoys; ignoring keeps us compatible.
		}
		if err != nil || stop {
			return err
		}
	}
}

func (x *exchange) send(r *extprocv3.ProcessingResponse) error {
	if err := x.stream.Send(r); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	return nil
}

// reject answers the request with an error and ends the exchange.
func (x *exchange) reject(code int, outcome Outcome, reason, msg string) (bool, error) {
	x.s.cfg.Metrics.request(outcome)
	x.s.cfg.Log.Debug("request rejected", "request_id", x.hdrs.requestID, "status", code, "reason", msg)
	return true, x.send(immediateResponse(code, reason, msg))
}

func (x *exchange) onRequestHeaders(h *extprocv3.HttpHeaders) (bool, error) {
	x.received = x.s.cfg.Clock.Now()
	rh, err := readHeaders(h.GetHeaders())
	x.hdrs = rh
	if err != nil {
		return x.reject(400, OutcomeBadRequest, "", err.Error())
	}
	if x.s.draining.Load() {
		return x.reject(503, OutcomeShuttingDown, "rejected-shutting-down", "the endpoint picker is shutting down")
	}
	if h.GetEndOfStream() {
		return x.decide()
	}
	return false, nil
}

func (x *exchange) onRequestBody(b *extprocv3.HttpBody) (bool, error) {
	if x.flight != nil {
		return false, nil // Envoy sends nothing after end_of_stream; tolerate a stray chunk
	}
	x.bodyStreamed = true
	if len(x.body)+len(b.GetBody()) > x.s.cfg.MaxBodyBytes {
		return x.reject(413, OutcomeTooLarge, "", fmt.Sprintf("request body is larger than the limit of %d bytes", x.s.cfg.MaxBodyBytes))
	}
	x.body = append(x.body, b.GetBody()...)
	if b.GetEndOfStream() {
		return x.decide()
	}
	return false, nil
}

func (x *exchange) onRequestTrailers() (bool, error) {
	if x.flight == nil {
		x.trailers = true
		if stop, err := x.decide(); stop || err != nil {
			return stop, err
		}
	}
	return false, x.send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{
		RequestTrailers: &extprocv3.TrailersResponse{}}})
}

// decide parses the buffered body, schedules, and answers the request phase.
func (x *exchange) decide() (bool, error) {
	start := x.s.cfg.Clock.Now()
	req := scheduler.Request{
		ID:         x.hdrs.requestID,
		SLO:        scheduler.SLO{TTFT: x.hdrs.sloTTFT, TPOT: x.hdrs.sloTPOT},
		Objective:  x.hdrs.objective,
		FairnessID: x.hdrs.fairnessID,
		SessionID:  x.hdrs.sessionID,
	}
	if x.bodyStreamed {
		// A request that came with a body is an inference request, even an empty one: it must
		// parse. Only bodiless requests (GET /v1/models) are routed without one.
		b, err := ParseBody(x.hdrs.path, x.body)
		if err != nil {
			return x.reject(400, OutcomeBadRequest, "", err.Error())
		}
		req.Model, req.Prompt, req.PromptTokens = b.Model, b.Prompt, b.PromptTokens
		req.MaxTokens, req.Stream = b.MaxTokens, b.Stream
		if wantsUsage(x.hdrs.path, b) {
			// Ask for the usage chunk, so output tokens and TPOT are the server's count, not
			// a guess; the response filter hides the chunk from the client.
			x.body, x.stripUsage = requestUsage(x.body)
		}
	}
	generatedID := req.ID == ""
	if generatedID {
		req.ID = uuid.NewString()
	}
	subset, err := subsetHint(x.md)
	if err != nil {
		return x.reject(400, OutcomeBadRequest, "", err.Error())
	}
	f, err := x.start(req, subset)
	if err != nil {
		if rej, ok := scheduler.RejectionOf(err); ok {
			outcome := requestcontrol.OutcomeRejected
			if errors.Is(err, scheduler.ErrNoEndpoints) {
				outcome = requestcontrol.OutcomeNoEndpoints
			}
			return x.reject(rej.Status, outcome, rej.Reason, err.Error())
		}
		if x.ctx.Err() != nil {
			return true, io.EOF // the gateway went away while the request was held
		}
		return x.reject(500, OutcomeInternal, "", "scheduling failed: "+err.Error())
	}
	x.flight = f

	dest := destination(f.Targets())
	set := []*corev3.HeaderValueOption{
		setHeader(HeaderDestination, dest),
	}
	if len(x.body) > 0 {
		set = append(set, setHeader("content-length", strconv.Itoa(len(x.body))))
	}
	if generatedID {
		set = append(set, setHeader(HeaderRequestID, req.ID))
	}
	resp := &extprocv3.ProcessingResponse{
		Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{
			Response: &extprocv3.CommonResponse{
				HeaderMutation:  &extprocv3.HeaderMutation{SetHeaders: set},
				ClearRouteCache: true,
			},
		}},
		DynamicMetadata: lbMetadata(dest),
	}
	if err := x.send(resp); err != nil {
		return true, err
	}
	now := x.s.cfg.Clock.Now()
	f.Sent(now)
	x.s.cfg.Metrics.decision(now.Sub(start))

	return false, x.replayBody()
}

// start runs the request through admission and scheduling, waiting while flow control holds
// it; the admitter resumes it (with ctx's error if the stream ends first).
func (x *exchange) start(req scheduler.Request, subset []string) (*requestcontrol.Flight, error) {
	var (
		f    *requestcontrol.Flight
		err  error
		done = make(chan struct{})
	)
	x.s.cfg.Director.Start(x.ctx, req, subset, x.received, func(fl *requestcontrol.Flight, e error) {
		f, err = fl, e
		close(done)
	})
	<-done
	return f, err
}

// replayChunk is the largest piece of the request body sent back in one message: big enough
// that a body of tiny client writes costs few messages, small enough to stream.
const replayChunk = 64 << 10

// replayBody sends the buffered body back for the gateway to forward upstream.
func (x *exchange) replayBody() error {
	if !x.bodyStreamed {
		return nil
	}
	if len(x.body) == 0 && !x.trailers {
		// An empty body still needs its end of stream passed on.
		return x.sendRequestBody(nil, true)
	}
	for off := 0; off < len(x.body); off += replayChunk {
		end := min(off+replayChunk, len(x.body))
		// With trailers, the trailers end the stream, not the body.
		if err := x.sendRequestBody(x.body[off:end], end == len(x.body) && !x.trailers); err != nil {
			return err
		}
	}
	return nil
}

func (x *exchange) sendRequestBody(b []byte, eos bool) error {
	return x.send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{
		RequestBody: &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{
			BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_StreamedResponse{
				StreamedResponse: &extprocv3.StreamedBodyResponse{Body: b, EndOfStream: eos},
			}},
		}},
	}})
}
