package extproc

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/structpb"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/augur-llm/augur/pool"
	"github.com/augur-llm/augur/requestcontrol"
	"github.com/augur-llm/augur/scheduler"
	"github.com/augur-llm/augur/tokens"
)

type harness struct {
	t     testing.TB
	clk   *clocktesting.FakeClock
	pool  *pool.Pool
	srv   *Server
	conn  *grpc.ClientConn
	compl chan requestcontrol.Completion
	prof  *scheduler.Profile
}

// newHarness serves the picker over an in-memory gRPC connection, with n replicas at
// 10.0.0.1:8000.. whose metrics are fresh.
func newHarness(t testing.TB, n int) *harness {
	t.Helper()
	return newHarnessProfile(t, n, scheduler.DefaultProfileConfig())
}

// newHarnessProfile is newHarness scheduling with the profile pc, two fallbacks.
func newHarnessProfile(t testing.TB, n int, pc scheduler.ProfileConfig) *harness {
	t.Helper()
	return newHarnessWith(t, n, pc, nil)
}

// newHarnessWith is newHarnessProfile with the director's configuration adjusted by edit.
func newHarnessWith(t testing.TB, n int, pc scheduler.ProfileConfig, edit func(*requestcontrol.Config)) *harness {
	t.Helper()
	h := &harness{t: t, clk: clocktesting.NewFakeClock(time.Unix(1_700_000_000, 0)), compl: make(chan requestcontrol.Completion, 100)}
	h.pool = pool.New(h.clk, 0)
	var eps []pool.Endpoint
	for i := range n {
		eps = append(eps, pool.Endpoint{Name: "r" + strconv.Itoa(i), Address: "10.0.0.1:" + strconv.Itoa(8000+i)})
	}
	if err := h.pool.Set(eps); err != nil {
		t.Fatal(err)
	}
	h.freshen()
	prof, err := scheduler.DefaultRegistry().Build(pc, scheduler.Handle{Seed: 1, Pool: h.pool}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h.prof = prof
	sched, err := scheduler.New(h.pool, prof, 2)
	if err != nil {
		t.Fatal(err)
	}
	dcfg := requestcontrol.Config{Pool: h.pool, Scheduler: sched, Clock: h.clk,
		Observers: []requestcontrol.Observer{requestcontrol.ObserverFunc(func(c requestcontrol.Completion) {
			select {
			case h.compl <- c:
			default: // benchmarks complete more requests than anyone reads
			}
		})}}
	if edit != nil {
		edit(&dcfg)
	}
	dir := requestcontrol.New(dcfg)
	h.srv = NewServer(Config{Pool: h.pool, Director: dir, Clock: h.clk, MaxBodyBytes: 1 << 16, Log: slog.New(slog.DiscardHandler)})
	lis := bufconn.Listen(1 << 20)
	g := grpc.NewServer()
	h.srv.Register(g)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	h.conn, err = grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.conn.Close() })
	return h
}

func (h *harness) freshen() {
	for _, r := range h.pool.Replicas() {
		r.SetMetrics(pool.Metrics{ScrapedAt: h.clk.Now()})
	}
}

func (h *harness) stream() (extprocv3.ExternalProcessor_ProcessClient, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	s, err := extprocv3.NewExternalProcessorClient(h.conn).Process(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(cancel)
	return s, cancel
}

func reqHeaders(eos bool, kv ...string) *extprocv3.ProcessingRequest {
	hm := &corev3.HeaderMap{}
	base := []string{":method", "POST", ":path", "/v1/chat/completions", ":authority", "gw", "content-type", "application/json"}
	kv = append(base, kv...)
	for i := 0; i < len(kv); i += 2 {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
	}
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{
		RequestHeaders: &extprocv3.HttpHeaders{Headers: hm, EndOfStream: eos}}}
}

func reqBody(b string, eos bool) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
		RequestBody: &extprocv3.HttpBody{Body: []byte(b), EndOfStream: eos}}}
}

func respHeaders(status int, ctype, served string) *extprocv3.ProcessingRequest {
	m := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
		ResponseHeaders: &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
			{Key: ":status", RawValue: []byte(strconv.Itoa(status))},
			{Key: "content-type", RawValue: []byte(ctype)},
		}}}}}
	if served != "" {
		s, _ := structpb.NewStruct(map[string]any{MetadataServedKey: served})
		m.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{MetadataLBNamespace: s}}
	}
	return m
}

func respBody(b string, eos bool) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
		ResponseBody: &extprocv3.HttpBody{Body: []byte(b), EndOfStream: eos}}}
}

func send(t *testing.T, s extprocv3.ExternalProcessor_ProcessClient, msgs ...*extprocv3.ProcessingRequest) {
	t.Helper()
	for _, m := range msgs {
		if err := s.Send(m); err != nil {
			t.Fatalf("send: %v", err)
		}
	}
}

func recv(t *testing.T, s extprocv3.ExternalProcessor_ProcessClient) *extprocv3.ProcessingResponse {
	t.Helper()
	r, err := s.Recv()
	if err != nil {
		t.Fatalf("recv: %v", err)
	}
	return r
}

const chatBody = `{"model":"m","messages":[{"role":"user","content":"hello there"}],"stream":true,"stream_options":{"include_usage":true},"max_tokens":8}`

func headerMap(opts []*corev3.HeaderValueOption) map[string]string {
	out := map[string]string{}
	for _, o := range opts {
		out[o.GetHeader().GetKey()] = headerValue(o.GetHeader())
	}
	return out
}

// decision sends a request and returns the headers response, its metadata and the replayed body.
func decision(t *testing.T, s extprocv3.ExternalProcessor_ProcessClient, msgs ...*extprocv3.ProcessingRequest) (map[string]string, *structpb.Struct, string) {
	t.Helper()
	send(t, s, msgs...)
	r := recv(t, s)
	hr := r.GetRequestHeaders()
	if hr == nil {
		t.Fatalf("want a request headers response, got %v", r)
	}
	if !hr.GetResponse().GetClearRouteCache() {
		t.Error("clear_route_cache not set")
	}
	hdrs := headerMap(hr.GetResponse().GetHeaderMutation().GetSetHeaders())
	var body strings.Builder
	for {
		br := recv(t, s).GetRequestBody()
		if br == nil {
			t.Fatal("want request body responses after the headers response")
		}
		sr := br.GetResponse().GetBodyMutation().GetStreamedResponse()
		body.Write(sr.GetBody())
		if sr.GetEndOfStream() {
			break
		}
	}
	return hdrs, r.GetDynamicMetadata(), body.String()
}

func TestBodySplitOverChunksIsReplayedIntact(t *testing.T) {
	h := newHarness(t, 4)
	s, _ := h.stream()
	parts := []string{chatBody[:7], chatBody[7:40], chatBody[40:41], chatBody[41:]}
	msgs := []*extprocv3.ProcessingRequest{reqHeaders(false, "x-request-id", "req-1", "x-slo-ttft-ms", "500", "x-slo-tpot-ms", "50")}
	for _, p := range parts {
		msgs = append(msgs, reqBody(p, false))
	}
	msgs = append(msgs, reqBody("", true))
	hdrs, md, body := decision(t, s, msgs...)
	if body != chatBody {
		t.Fatalf("replayed body %q, want %q", body, chatBody)
	}
	if got := hdrs["content-length"]; got != strconv.Itoa(len(chatBody)) {
		t.Errorf("content-length %q, want %d", got, len(chatBody))
	}
	dest := hdrs[HeaderDestination]
	mdDest := md.GetFields()[MetadataLBNamespace].GetStructValue().GetFields()[HeaderDestination].GetStringValue()
	if dest == "" || dest != mdDest {
		t.Fatalf("destination header %q and envoy.lb metadata %q must be equal and set", dest, mdDest)
	}
	if n := len(strings.Split(dest, ",")); n != 3 {
		t.Errorf("destination %q: want primary + 2 fallbacks", dest)
	}
	if _, ok := hdrs[HeaderRequestID]; ok {
		t.Error("the client's request id must be kept, not replaced")
	}
}

func TestCompletionMeasuresStream(t *testing.T) {
	h := newHarness(t, 2)
	s, _ := h.stream()
	hdrs, _, _ := decision(t, s, reqHeaders(false, "x-slo-ttft-ms", "250.5", "x-llm-d-slo-tpot-ms", "40",
		"x-gateway-inference-objective", "chat", "x-llm-d-inference-fairness-id", "tenant-a"), reqBody(chatBody, true))
	primary := strings.Split(hdrs[HeaderDestination], ",")[0]
	if hdrs[HeaderRequestID] == "" {
		t.Error("a request id must be generated when the client sends none")
	}
	send(t, s, respHeaders(200, "text/event-stream", primary))
	recv(t, s)
	if l := h.pool.ByAddress(primary).Load(); l.Requests != 1 || l.PrefillTokens == 0 {
		t.Fatalf("in-flight after dispatch = %+v, want 1 request in prefill", l)
	}
	steps := []string{
		`data: {"choices":[{"delta":{"role":"assistant","content":""}}]}` + "\n\n",
		`data: {"choices":[{"delta":{"content":"hell"}}]}` + "\n\ndata: {\"choices\":[{\"delta\"",
		`:{"content":"o th"}}]}` + "\n\n",
		`data: {"choices":[{"delta":{"content":"ere!"},"finish_reason":"length"}]}` + "\n\n",
		`data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":4}}}` + "\n\ndata: [DONE]\n\n",
	}
	for i, st := range steps {
		h.clk.Step(100 * time.Millisecond)
		send(t, s, respBody(st, i == len(steps)-1))
		got := recv(t, s).GetResponseBody().GetResponse().GetBodyMutation().GetStreamedResponse()
		if string(got.GetBody()) != st || got.GetEndOfStream() != (i == len(steps)-1) {
			t.Fatalf("response chunk %d passed on as %q eos=%v", i, got.GetBody(), got.GetEndOfStream())
		}
	}
	c := h.completion()
	if c.TTFT != 200*time.Millisecond {
		t.Errorf("TTFT = %v, want 200ms (first chunk with text)", c.TTFT)
	}
	// Tokens at 200, 300, 400 ms: (400-200)/(3-1).
	if c.TPOT != 100*time.Millisecond {
		t.Errorf("TPOT = %v, want 100ms", c.TPOT)
	}
	if c.Usage != (requestcontrol.Usage{PromptTokens: 9, CompletionTokens: 3, CachedTokens: 4}) || c.Outcome != requestcontrol.OutcomeOK || c.Status != 200 {
		t.Errorf("completion = %+v", c)
	}
	if c.SLO != (scheduler.SLO{TTFT: 250500 * time.Microsecond, TPOT: 40 * time.Millisecond}) || c.Objective != "chat" || c.FairnessID != "tenant-a" {
		t.Errorf("SLO/objective/fairness = %v %q %q", c.SLO, c.Objective, c.FairnessID)
	}
	if c.Target.Address != primary || c.E2E != 500*time.Millisecond {
		t.Errorf("target %q e2e %v", c.Target.Address, c.E2E)
	}
	if l := h.pool.ByAddress(primary).Load(); !l.Idle() {
		t.Errorf("in-flight after completion = %+v, want zero", l)
	}
}

// When the gateway reports that a fallback served, everything the decision credited to the
// primary moves to the fallback: the in-flight lease, the prefix record and the session.
func TestServedFallbackMovesEverything(t *testing.T) {
	one := 1.0
	h := newHarnessProfile(t, 3, scheduler.ProfileConfig{Name: "affine",
		Scorers: []scheduler.PluginConfig{{Name: "prefix", Weight: &one}, {Name: "session-affinity", Weight: &one}, {Name: "load", Weight: &one}},
		Picker:  scheduler.PluginConfig{Name: "max-score"}})
	prompt := strings.Repeat("a long shared system prompt. ", 40)
	body := `{"model":"m","messages":[{"role":"user","content":"` + prompt + `"}]}`
	s, _ := h.stream()
	hdrs, _, _ := decision(t, s, reqHeaders(false, HeaderSessionID, "conv-1"), reqBody(body, true))
	dests := strings.Split(hdrs[HeaderDestination], ",")
	primary, fallback := h.pool.ByAddress(dests[0]), h.pool.ByAddress(dests[1])
	send(t, s, respHeaders(200, "application/json", dests[1]))
	recv(t, s)
	if primary.Load().Requests != 0 || fallback.Load().Requests != 1 {
		t.Fatal("in-flight accounting did not follow the served fallback")
	}
	send(t, s, respBody(`{"choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":5,"completion_tokens":1}}`, true))
	recv(t, s)
	c := h.completion()
	if c.Target.Address != dests[1] || c.OutputTokens != 1 || c.Stream || !c.ServedByFallback {
		t.Errorf("completion %+v", c)
	}

	// What the plugins learned: the same prompt and session now point at the fallback.
	req := &scheduler.Request{Prompt: tokens.RenderChat([]tokens.Message{{Role: "user", Text: prompt}}), SessionID: "conv-1"}
	cands := []scheduler.Candidate{scheduler.CandidateOf(primary), scheduler.CandidateOf(fallback)}
	scores := make([]float64, 2)
	for _, ws := range h.prof.Scorers {
		switch sc := ws.Scorer.(type) {
		case *scheduler.PrefixScorer:
			sc.PreScore(context.Background(), req, cands)
			pm, _ := cands[0].Value(scheduler.ValuePrefixMatch)
			fm, _ := cands[1].Value(scheduler.ValuePrefixMatch)
			if pm != 0 || fm != 1 {
				t.Errorf("prefix record: primary %.2f, fallback %.2f; want 0 and 1", pm, fm)
			}
		case *scheduler.SessionAffinityScorer:
			clear(scores)
			sc.Score(context.Background(), req, cands, scores)
			if scores[0] != 0 || scores[1] != 1 {
				t.Errorf("session affinity: primary %v, fallback %v; want 0 and 1", scores[0], scores[1])
			}
		}
	}
}

func immediate(t *testing.T, s extprocv3.ExternalProcessor_ProcessClient, msgs ...*extprocv3.ProcessingRequest) (int, map[string]string, string) {
	t.Helper()
	for _, m := range msgs {
		// The picker may answer and end the stream before the body is sent; gRPC reports that
		// as io.EOF on Send, and the answer is then read with Recv.
		if err := s.Send(m); err != nil && !errors.Is(err, io.EOF) {
			t.Fatalf("send: %v", err)
		}
	}
	ir := recv(t, s).GetImmediateResponse()
	if ir == nil {
		t.Fatal("want an immediate response")
	}
	var e struct {
		Error struct {
			Message string `json:"message"`
			Code    int    `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(ir.GetBody(), &e); err != nil || e.Error.Message == "" {
		t.Fatalf("error body %q is not an OpenAI error: %v", ir.GetBody(), err)
	}
	return int(ir.GetStatus().GetCode()), headerMap(ir.GetHeaders().GetSetHeaders()), e.Error.Message
}

func TestBadRequests(t *testing.T) {
	h := newHarness(t, 2)
	for _, tc := range []struct {
		name     string
		hdrs     []string
		body     string
		status   int
		contains string
	}{
		{"invalid json", nil, `{"model":`, 400, "not valid JSON"},
		{"not an object", nil, `[1,2]`, 400, "not valid JSON"},
		{"missing model", nil, `{"messages":[{"role":"user","content":"x"}]}`, 400, "model"},
		{"missing messages", nil, `{"model":"m"}`, 400, "messages"},
		{"empty messages", nil, `{"model":"m","messages":[]}`, 400, "empty"},
		{"negative max_tokens", nil, `{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":-1}`, 400, "max_tokens"},
		{"negative ttft", []string{"x-slo-ttft-ms", "-5"}, chatBody, 400, "x-slo-ttft-ms"},
		{"zero tpot", []string{"x-slo-tpot-ms", "0"}, chatBody, 400, "x-slo-tpot-ms"},
		{"non-numeric", []string{"x-slo-ttft-ms", "fast"}, chatBody, 400, "not a number"},
		{"nan", []string{"x-llm-d-slo-tpot-ms", "NaN"}, chatBody, 400, "x-llm-d-slo-tpot-ms"},
		{"absurdly large", []string{"x-slo-ttft-ms", "1e300"}, chatBody, 400, "out of range"},
		{"conflicting duplicates", []string{"x-slo-ttft-ms", "100", "x-slo-ttft-ms", "900"}, chatBody, 400, "x-slo-ttft-ms: sent more than once"},
		{"too large", nil, strings.Repeat("x", 1<<16+1), 413, "limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := h.stream()
			code, _, msg := immediate(t, s, reqHeaders(false, tc.hdrs...), reqBody(tc.body, true))
			if code != tc.status || !strings.Contains(msg, tc.contains) {
				t.Errorf("got %d %q, want %d containing %q", code, msg, tc.status, tc.contains)
			}
		})
	}
	t.Run("completions missing prompt", func(t *testing.T) {
		s, _ := h.stream()
		hm := reqHeaders(false)
		hm.GetRequestHeaders().Headers.Headers[1].RawValue = []byte("/v1/completions")
		code, _, msg := immediate(t, s, hm, reqBody(`{"model":"m"}`, true))
		if code != 400 || !strings.Contains(msg, "prompt") {
			t.Errorf("got %d %q", code, msg)
		}
	})
	for _, r := range h.pool.Replicas() {
		if l := r.Load(); !l.Idle() {
			t.Errorf("rejected requests left in-flight accounting on %s: %+v", r.Name, r.Load())
		}
	}
}

func TestClientDestinationIsOverwritten(t *testing.T) {
	h := newHarness(t, 2)
	s, _ := h.stream()
	hdrs, _, _ := decision(t, s, reqHeaders(false, HeaderDestination, "6.6.6.6:80"), reqBody(chatBody, true))
	if d := hdrs[HeaderDestination]; d == "" || strings.Contains(d, "6.6.6.6") {
		t.Fatalf("destination %q: the client's value must be overwritten", d)
	}
}

func withSubset(m *extprocv3.ProcessingRequest, subset ...string) *extprocv3.ProcessingRequest {
	vals := make([]any, len(subset))
	for i, v := range subset {
		vals[i] = v
	}
	st, _ := structpb.NewStruct(map[string]any{MetadataSubsetKey: vals})
	m.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{MetadataSubsetNamespace: st}}
	return m
}

func TestSubsetHint(t *testing.T) {
	h := newHarness(t, 4)
	for range 20 {
		s, _ := h.stream()
		hdrs, _, _ := decision(t, s, withSubset(reqHeaders(false), "10.0.0.1:8002"), reqBody(chatBody, true))
		if hdrs[HeaderDestination] != "10.0.0.1:8002" {
			t.Fatalf("destination %q outside subset", hdrs[HeaderDestination])
		}
	}
	for _, subset := range [][]string{{}, {"10.9.9.9:1"}} {
		s, _ := h.stream()
		code, hdrs, _ := immediate(t, s, withSubset(reqHeaders(false), subset...), reqBody(chatBody, true))
		if code != 503 || hdrs[HeaderDroppedReason] != "rejected-no-endpoints" {
			t.Errorf("subset %v: got %d %v, want 503 rejected-no-endpoints", subset, code, hdrs)
		}
	}
}

func TestNoReadyEndpoint(t *testing.T) {
	h := newHarness(t, 2)
	h.clk.Step(pool.DefaultStaleAfter + time.Millisecond) // every scrape is now stale
	s, _ := h.stream()
	code, hdrs, _ := immediate(t, s, reqHeaders(false), reqBody(chatBody, true))
	if code != 503 || hdrs[HeaderDroppedReason] != "rejected-no-endpoints" {
		t.Fatalf("got %d %v", code, hdrs)
	}
}

func TestHeadersOnlyRequest(t *testing.T) {
	h := newHarness(t, 2)
	s, _ := h.stream()
	m := reqHeaders(true)
	m.GetRequestHeaders().Headers.Headers[0].RawValue = []byte("GET")
	m.GetRequestHeaders().Headers.Headers[1].RawValue = []byte("/v1/models")
	send(t, s, m)
	hr := recv(t, s).GetRequestHeaders()
	hdrs := headerMap(hr.GetResponse().GetHeaderMutation().GetSetHeaders())
	if hdrs[HeaderDestination] == "" {
		t.Fatal("no destination for a bodiless request")
	}
	if _, ok := hdrs["content-length"]; ok {
		t.Error("a bodiless request must not get a content-length")
	}
}

func TestCancelledStreamReleasesInFlight(t *testing.T) {
	h := newHarness(t, 1)
	s, cancel := h.stream()
	decision(t, s, reqHeaders(false), reqBody(chatBody, true))
	send(t, s, respHeaders(200, "text/event-stream", ""))
	recv(t, s)
	send(t, s, respBody(`data: {"choices":[{"delta":{"content":"abcd"}}]}`+"\n\n", false))
	recv(t, s)
	r := h.pool.Replicas()[0]
	// The picker forwards a chunk before reading it, so the accounting can trail the echo.
	waitLoad(t, r, func(l pool.Load) bool { return l.Requests == 1 && l.DecodeRequests == 1 && l.PrefillTokens == 0 })
	cancel() // the client went away; Envoy resets the ext_proc stream
	c := h.completion()
	if c.Outcome != requestcontrol.OutcomeCancelled {
		t.Errorf("outcome %q, want cancelled", c.Outcome)
	}
	if l := r.Load(); !l.Idle() {
		t.Fatalf("in-flight after cancel = %+v, want zero", l)
	}
}

func TestDrainRejects(t *testing.T) {
	h := newHarness(t, 1)
	h.srv.Drain()
	s, _ := h.stream()
	code, hdrs, _ := immediate(t, s, reqHeaders(false), reqBody(chatBody, true))
	if code != 503 || hdrs[HeaderDroppedReason] != "rejected-shutting-down" {
		t.Fatalf("got %d %v", code, hdrs)
	}
}

func TestHealth(t *testing.T) {
	h := newHarness(t, 1)
	hc := healthpb.NewHealthClient(h.conn)
	check := func(svc string) healthpb.HealthCheckResponse_ServingStatus {
		r, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil {
			t.Fatalf("health %q: %v", svc, err)
		}
		return r.GetStatus()
	}
	for _, svc := range []string{HealthLiveness, HealthReadiness, HealthExtProc} {
		if st := check(svc); st != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("%s = %v, want SERVING", svc, st)
		}
	}
	h.clk.Step(time.Hour) // metrics stale: no endpoint to route to
	h.srv.updateHealth()
	if st := check(HealthReadiness); st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("readiness with stale endpoints = %v", st)
	}
	if st := check(HealthLiveness); st != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("liveness = %v; it must not depend on endpoints", st)
	}
	h.freshen()
	h.srv.Drain()
	if st := check(HealthExtProc); st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("ext_proc while draining = %v", st)
	}
}

func waitLoad(t *testing.T, r *pool.Replica, ok func(pool.Load) bool) {
	t.Helper()
	for range 1000 {
		if ok(r.Load()) {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("%s: in-flight %+v not reached", r.Name, r.Load())
}

// A client closes the connection once it has read [DONE]; the gateway then resets the stream
// before the body's end reaches the picker. The request still completed.
func TestDoneWithoutEndOfStreamCompletes(t *testing.T) {
	h := newHarness(t, 1)
	s, cancel := h.stream()
	decision(t, s, reqHeaders(false), reqBody(chatBody, true))
	send(t, s, respHeaders(200, "text/event-stream; charset=utf-8", ""))
	recv(t, s)
	for i, chunk := range []string{
		`data: {"choices":[{"delta":{"content":"abcd"}}]}` + "\n\n",
		`data: {"choices":[{"delta":{"content":"efgh"}}]}` + "\n\n",
		`data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}` + "\n\ndata: [DONE]\n\n",
	} {
		h.clk.Step(time.Duration(10*(i+1)) * time.Millisecond)
		send(t, s, respBody(chunk, false))
		recv(t, s)
	}
	cancel()
	c := h.completion()
	if c.Outcome != requestcontrol.OutcomeOK || c.TTFT != 10*time.Millisecond || c.TPOT != 20*time.Millisecond || !c.HasUsage || c.OutputTokens != 2 {
		t.Fatalf("completion %+v", c)
	}
	if r := h.pool.Replicas()[0]; !r.Load().Idle() {
		t.Fatalf("in-flight %+v", r.Load())
	}
}

func TestEmptyBodyIsABadRequest(t *testing.T) {
	h := newHarness(t, 1)
	s, _ := h.stream()
	code, _, msg := immediate(t, s, reqHeaders(false), reqBody("", true))
	if code != 400 || !strings.Contains(msg, "JSON") {
		t.Fatalf("got %d %q", code, msg)
	}
}

func TestLargeBodyReplayedInPieces(t *testing.T) {
	h := newHarness(t, 1)
	h.srv.cfg.MaxBodyBytes = 1 << 20
	user := strings.Repeat("abcdefgh", 20000) // 160 kB
	body := `{"model":"m","messages":[{"role":"user","content":"` + user + `"}]}`
	msgs := []*extprocv3.ProcessingRequest{reqHeaders(false)}
	for i := 0; i < len(body); i += 1000 { // many small client writes
		msgs = append(msgs, reqBody(body[i:min(i+1000, len(body))], false))
	}
	msgs = append(msgs, reqBody("", true))
	s, _ := h.stream()
	send(t, s, msgs...)
	recv(t, s) // headers
	var got strings.Builder
	pieces := 0
	for {
		sr := recv(t, s).GetRequestBody().GetResponse().GetBodyMutation().GetStreamedResponse()
		got.Write(sr.GetBody())
		pieces++
		if sr.GetEndOfStream() {
			break
		}
	}
	if got.String() != body || pieces != (len(body)+replayChunk-1)/replayChunk {
		t.Fatalf("replayed %d bytes in %d pieces; want %d bytes in %d", got.Len(), pieces, len(body), (len(body)+replayChunk-1)/replayChunk)
	}
}

func TestOversizedJSONResponseKeepsNoUsage(t *testing.T) {
	h := newHarness(t, 1)
	s, _ := h.stream()
	decision(t, s, reqHeaders(false), reqBody(`{"model":"m","messages":[{"role":"user","content":"x"}]}`, true))
	send(t, s, respHeaders(200, "application/json", ""))
	recv(t, s)
	send(t, s, respBody(`{"choices":[{"text":"`, false))
	recv(t, s)
	for range maxResponseBodyKept / (1 << 20) { // Envoy passes bodies on in pieces
		send(t, s, respBody(strings.Repeat("y", 1<<20), false))
		recv(t, s)
	}
	send(t, s, respBody(`y"}],`, false))
	recv(t, s)
	send(t, s, respBody(`"usage":{"prompt_tokens":1,"completion_tokens":9}}`, true))
	recv(t, s)
	if c := h.completion(); c.HasUsage || c.Outcome != requestcontrol.OutcomeOK {
		t.Fatalf("completion %+v: a cut body must not yield usage", c)
	}
}

// completion returns the next completion the picker observed, failing the test when none
// arrives in time instead of hanging it.
func (h *harness) completion() requestcontrol.Completion {
	h.t.Helper()
	select {
	case c := <-h.compl:
		return c
	case <-time.After(10 * time.Second):
		h.t.Fatal("no completion observed within 10 s")
		return requestcontrol.Completion{}
	}
}

// A streaming client that did not ask for usage: the picker asks for it, hides the usage chunk
// and records the server's count.
func TestStreamUsageAskedForTheClient(t *testing.T) {
	h := newHarness(t, 1)
	s, _ := h.stream()
	in := `{"model":"m","messages":[{"role":"user","content":"hello there"}],"stream":true,"max_tokens":8}`
	want := `{"stream_options":{"include_usage":true},` + in[1:]
	hdrs, _, body := decision(t, s, reqHeaders(false), reqBody(in[:20], false), reqBody(in[20:], true))
	if body != want || hdrs["content-length"] != strconv.Itoa(len(want)) {
		t.Fatalf("replayed %q with content-length %q; want %q with %d", body, hdrs["content-length"], want, len(want))
	}
	send(t, s, respHeaders(200, "text/event-stream", ""))
	recv(t, s)
	usage := `data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3}}` + "\n\n"
	var passed strings.Builder
	for i, chunk := range []string{
		`data: {"choices":[{"delta":{"content":"a"}}]}` + "\n\n",
		`data: {"choices":[{"delta":{"content":"b"}}]}` + "\n\ndata: {\"choi",
		`ces":[{"delta":{"content":"c"}}]}` + "\n\n" + usage[:30],
		usage[30:] + "data: [DONE]\n\n",
	} {
		h.clk.Step(10 * time.Millisecond)
		send(t, s, respBody(chunk, i == 3))
		passed.Write(recv(t, s).GetResponseBody().GetResponse().GetBodyMutation().GetStreamedResponse().GetBody())
	}
	wantOut := `data: {"choices":[{"delta":{"content":"a"}}]}` + "\n\n" + `data: {"choices":[{"delta":{"content":"b"}}]}` + "\n\n" +
		`data: {"choices":[{"delta":{"content":"c"}}]}` + "\n\n" + "data: [DONE]\n\n"
	if passed.String() != wantOut {
		t.Fatalf("client received %q, want %q", passed.String(), wantOut)
	}
	if c := h.completion(); !c.HasUsage || c.OutputTokens != 3 || c.Usage.PromptTokens != 9 {
		t.Fatalf("completion %+v, want the server's usage", c)
	}

	// A client that asked gets its usage chunk.
	s, _ = h.stream()
	_, _, body = decision(t, s, reqHeaders(false), reqBody(chatBody, true))
	if body != chatBody {
		t.Fatalf("a body that asks for usage was rewritten: %q", body)
	}
	send(t, s, respHeaders(200, "text/event-stream", ""))
	recv(t, s)
	send(t, s, respBody(usage, true))
	if got := recv(t, s).GetResponseBody().GetResponse().GetBodyMutation().GetStreamedResponse().GetBody(); string(got) != usage {
		t.Fatalf("the usage chunk the client asked for became %q", got)
	}
	h.completion()
}
