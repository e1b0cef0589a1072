package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/augur-llm/augur/local/gateway"
)

// decision is what the fake picker does with one request once it has the
// whole body, as the contract prescribes.
type decision struct {
	immediate    *extprocv3.ImmediateResponse
	dest         string            // x-gateway-destination-endpoint header value
	metadataDest *string           // envoy.lb metadata value; nil means same as dest
	set          map[string]string // extra request headers to set
	remove       []string          // request headers to remove
	body         []byte            // replacement body; nil replays the chunks received
	hang         bool              // never answer the request headers
}

// fakePicker implements the endpoint-picker side of the contract: it buffers
// the request body to end_of_stream, answers the request headers with the
// destination header and metadata, replays the body, and echoes every
// response chunk.
type fakePicker struct {
	extprocv3.UnimplementedExternalProcessorServer

	decide      func(headers map[string]string, body []byte) decision
	respSet     map[string]string            // response headers to set
	rejectEarly *extprocv3.ImmediateResponse // sent on the first body chunk, before end_of_stream
	responseEOS chan struct{}                // when set, closed once the response end of stream arrived
	holdEOS     chan struct{}                // when set, the answer to the response end of stream waits for it

	firstChunk chan struct{}
	streamEnds chan error // one entry per stream that ended, nil for a clean end

	mu       sync.Mutex
	received []*extprocv3.ProcessingRequest
	once     sync.Once
	eosOnce  sync.Once
}

func newFakePicker(decide func(map[string]string, []byte) decision) *fakePicker {
	return &fakePicker{
		decide:     decide,
		firstChunk: make(chan struct{}),
		streamEnds: make(chan error, 16),
	}
}

func (p *fakePicker) messages() []*extprocv3.ProcessingRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*extprocv3.ProcessingRequest(nil), p.received...)
}

func (p *fakePicker) Process(srv extprocv3.ExternalProcessor_ProcessServer) error {
	headers := map[string]string{}
	var chunks [][]byte
	for {
		req, err := srv.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				p.streamEnds <- nil
				return nil
			}
			p.streamEnds <- err
			return err
		}
		p.mu.Lock()
		p.received = append(p.received, proto.Clone(req).(*extprocv3.ProcessingRequest))
		p.mu.Unlock()
		switch v := req.GetRequest().(type) {
		case *extprocv3.ProcessingRequest_RequestHeaders:
			for _, h := range v.RequestHeaders.GetHeaders().GetHeaders() {
				headers[h.GetKey()] = string(h.GetRawValue())
			}
			if v.RequestHeaders.GetEndOfStream() {
				if err := p.answer(srv, headers, nil); err != nil {
					return err
				}
			}
		case *extprocv3.ProcessingRequest_RequestBody:
			if len(v.RequestBody.GetBody()) > 0 {
				chunks = append(chunks, v.RequestBody.GetBody())
				p.once.Do(func() { close(p.firstChunk) })
				if p.rejectEarly != nil {
					return srv.Send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{
						ImmediateResponse: p.rejectEarly,
					}})
				}
			}
			if v.RequestBody.GetEndOfStream() {
				if err := p.answer(srv, headers, chunks); err != nil {
					return err
				}
			}
		case *extprocv3.ProcessingRequest_ResponseHeaders:
			var set []*corev3.HeaderValueOption
			for k, val := range p.respSet {
				set = append(set, setHeader(k, val))
			}
			err = srv.Send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{
				ResponseHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{
					HeaderMutation: &extprocv3.HeaderMutation{SetHeaders: set},
				}},
			}})
		case *extprocv3.ProcessingRequest_ResponseBody:
			if v.ResponseBody.GetEndOfStream() && p.responseEOS != nil {
				p.eosOnce.Do(func() { close(p.responseEOS) })
				if p.holdEOS != nil {
					select {
					case <-p.holdEOS:
					case <-srv.Context().Done():
						err := status.FromContextError(srv.Context().Err()).Err()
						p.streamEnds <- err
						return err
					}
				}
			}
			err = srv.Send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{
				ResponseBody: streamed(v.ResponseBody.GetBody(), v.ResponseBody.GetEndOfStream()),
			}})
		case *extprocv3.ProcessingRequest_ResponseTrailers:
			err = srv.Send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{
				ResponseTrailers: &extprocv3.TrailersResponse{},
			}})
		}
		if err != nil {
			return err
		}
	}
}

func (p *fakePicker) answer(srv extprocv3.ExternalProcessor_ProcessServer, headers map[string]string, chunks [][]byte) error {
	d := p.decide(headers, bytes.Join(chunks, nil))
	if d.hang {
		<-srv.Context().Done()
		return srv.Context().Err()
	}
	if d.immediate != nil {
		return srv.Send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{
			ImmediateResponse: d.immediate,
		}})
	}
	set := []*corev3.HeaderValueOption{setHeader(gateway.HeaderDestinationEndpoint, d.dest)}
	for k, v := range d.set {
		set = append(set, setHeader(k, v))
	}
	replay := chunks
	if d.body != nil {
		half := len(d.body) / 2
		replay = [][]byte{d.body[:half], d.body[half:]}
		set = append(set, setHeader("content-length", strconv.Itoa(len(d.body))))
	}
	mdDest := d.dest
	if d.metadataDest != nil {
		mdDest = *d.metadataDest
	}
	md, err := structpb.NewStruct(map[string]any{
		gateway.MetadataNamespaceLB: map[string]any{gateway.MetadataKeyDestination: mdDest},
	})
	if err != nil {
		return err
	}
	err = srv.Send(&extprocv3.ProcessingResponse{
		Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{
			Response: &extprocv3.CommonResponse{
				HeaderMutation:  &extprocv3.HeaderMutation{SetHeaders: set, RemoveHeaders: d.remove},
				ClearRouteCache: true,
			},
		}},
		DynamicMetadata: md,
	})
	if err != nil || chunks == nil {
		return err
	}
	for i, c := range replay {
		err := srv.Send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{
			RequestBody: streamed(c, i == len(replay)-1),
		}})
		if err != nil {
			return err
		}
	}
	return nil
}

func setHeader(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, RawValue: []byte(v)}}
}

func streamed(b []byte, eos bool) *extprocv3.BodyResponse {
	return &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{
		BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_StreamedResponse{
			StreamedResponse: &extprocv3.StreamedBodyResponse{Body: b, EndOfStream: eos},
		}},
	}}
}

func startPicker(t *testing.T, p *fakePicker, opts ...grpc.ServerOption) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	extprocv3.RegisterExternalProcessorServer(srv, p)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

// syncBuffer collects log output written from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// logRecorder is a slog.Handler that keeps every record, so tests can assert
// on levels and wait for a record to appear instead of sleeping. Attributes
// added with With are dropped; tests match on level and message.
type logRecorder struct {
	mu      sync.Mutex
	recs    []slog.Record
	waiters []logWaiter
}

type logWaiter struct {
	msg string
	ch  chan struct{}
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }

func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, r.Clone())
	l.waiters = slices.DeleteFunc(l.waiters, func(w logWaiter) bool {
		if strings.Contains(r.Message, w.msg) {
			close(w.ch)
			return true
		}
		return false
	})
	return nil
}

func (l *logRecorder) records() []slog.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.recs)
}

// logged returns a channel closed once a record whose message contains msg
// has been handled.
func (l *logRecorder) logged(msg string) <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	ch := make(chan struct{})
	for _, r := range l.recs {
		if strings.Contains(r.Message, msg) {
			close(ch)
			return ch
		}
	}
	l.waiters = append(l.waiters, logWaiter{msg: msg, ch: ch})
	return ch
}

func startGateway(t *testing.T, cfg gateway.Config) (*httptest.Server, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	gw, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	t.Cleanup(func() {
		srv.Close()
		_ = gw.Close()
	})
	return srv, logs
}

// upstream is a model-server stand-in that records what reached it.
type upstream struct {
	srv   *httptest.Server
	addr  string
	hits  atomic.Int32
	mu    sync.Mutex
	last  *http.Request
	body  []byte
	reply http.HandlerFunc
}

func startUpstream(t *testing.T, reply http.HandlerFunc) *upstream {
	t.Helper()
	u := &upstream{reply: reply}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("upstream reading body: %v", err)
		}
		u.mu.Lock()
		u.last, u.body = r.Clone(context.Background()), body
		u.mu.Unlock()
		if u.reply != nil {
			u.reply(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(u.srv.Close)
	u.addr = u.srv.Listener.Addr().String()
	return u
}

func (u *upstream) request() (*http.Request, []byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.last, u.body
}

func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

func client() *http.Client {
	return &http.Client{Transport: &http.Transport{Proxy: nil, DisableCompression: true}}
}

func routeTo(addr string) func(map[string]string, []byte) decision {
	return func(map[string]string, []byte) decision { return decision{dest: addr} }
}

func TestRequestBodyStreamedInChunksArrivesIntact(t *testing.T) {
	up := startUpstream(t, nil)
	p := newFakePicker(routeTo(up.addr))
	p.decide = func(h map[string]string, body []byte) decision {
		// Envoy forwards the original Content-Length only if the picker
		// keeps it; a chunked upload has none, so the picker states it.
		return decision{dest: up.addr, set: map[string]string{"content-length": strconv.Itoa(len(body))}}
	}
	gw, _ := startGateway(t, gateway.Config{Picker: startPicker(t, p)})

	part1 := `{"model":"m","messages":[{"role":"user","content":"`
	part2 := strings.Repeat("x", 1000) + `"}]}`
	pr, pw := io.Pipe()
	go func() {
		_, _ = io.WriteString(pw, part1)
		// The second part is written only once the picker has seen the
		// first, which proves the gateway streams instead of buffering.
		select {
		case <-p.firstChunk:
		case <-time.After(10 * time.Second):
		}
		_, _ = io.WriteString(pw, part2)
		_ = pw.Close()
	}()
	resp, err := client().Post(gw.URL+"/v1/chat/completions?trace=1", "application/json", pr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d", resp.StatusCode)
	}
	got, body := up.request()
	if string(body) != part1+part2 {
		t.Errorf("upstream body = %q, want %q", body, part1+part2)
	}
	if got.ContentLength != int64(len(part1+part2)) || len(got.TransferEncoding) != 0 {
		t.Errorf("upstream Content-Length = %d, Transfer-Encoding = %v; want %d and none",
			got.ContentLength, got.TransferEncoding, len(part1+part2))
	}
	if got.URL.RequestURI() != "/v1/chat/completions?trace=1" {
		t.Errorf("upstream path = %q", got.URL.RequestURI())
	}

	var bodyMsgs []*extprocv3.HttpBody
	for _, m := range p.messages() {
		if b := m.GetRequestBody(); b != nil {
			bodyMsgs = append(bodyMsgs, b)
		}
		if h := m.GetRequestHeaders(); h != nil && h.GetEndOfStream() {
			t.Error("request headers claim end_of_stream although a body follows")
		}
	}
	if len(bodyMsgs) < 2 {
		t.Fatalf("picker got %d request body messages, want at least 2", len(bodyMsgs))
	}
	for i, b := range bodyMsgs {
		if b.GetEndOfStream() != (i == len(bodyMsgs)-1) {
			t.Errorf("body message %d end_of_stream = %v", i, b.GetEndOfStream())
		}
	}
}

func TestRewrittenBodyForwardedWithPickerContentLength(t *testing.T) {
	up := startUpstream(t, nil)
	rewritten := []byte(`{"model":"a-much-longer-model-name","prompt":"hi"}`)
	p := newFakePicker(func(map[string]string, []byte) decision {
		return decision{dest: up.addr, body: rewritten}
	})
	gw, _ := startGateway(t, gateway.Config{Picker: startPicker(t, p)})

	resp, err := client().Post(gw.URL+"/v1/completions", "application/json", strings.NewReader(`{"model":"m","prompt":"hi"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	got, body := up.request()
	if !bytes.Equal(body, rewritten) || got.ContentLength != int64(len(rewritten)) {
		t.Errorf("upstream got %q with Content-Length %d, want %q with %d", body, got.ContentLength, rewritten, len(rewritten))
	}
}

func TestHeaderMutationAndRouting(t *testing.T) {
	a := startUpstream(t, nil)
	b := startUpstream(t, nil)
	p := newFakePicker(func(map[string]string, []byte) decision {
		return decision{dest: b.addr, set: map[string]string{"x-picked": "yes"}, remove: []string{"x-remove-me"}}
	})
	gw, _ := startGateway(t, gateway.Config{Picker: startPicker(t, p)})

	req, _ := http.NewRequest(http.MethodPost, gw.URL+"/v1/completions", strings.NewReader(`{"model":"m","prompt":"p"}`))
	req.Header.Set("X-Remove-Me", "1")
	req.Header.Set("X-Keep-Me", "2")
	// A client naming its own upstream must not get it.
	req.Header.Set(gateway.HeaderDestinationEndpoint, a.addr)
	req.Host = "inference.example"
	resp, err := client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d", resp.StatusCode)
	}
	if a.hits.Load() != 0 || b.hits.Load() != 1 {
		t.Fatalf("hits: a=%d b=%d, want 0 and 1", a.hits.Load(), b.hits.Load())
	}
	got, _ := b.request()
	checks := map[string]string{
		"X-Picked":                        "yes",
		"X-Remove-Me":                     "",
		"X-Keep-Me":                       "2",
		gateway.HeaderDestinationEndpoint: b.addr,
		"X-Forwarded-Proto":               "http",
	}
	for k, want := range checks {
		if v := got.Header.Get(k); v != want {
			t.Errorf("upstream header %s = %q, want %q", k, v, want)
		}
	}
	if got.Host != "inference.example" {
		t.Errorf("upstream Host = %q", got.Host)
	}
	if got.Header.Get("X-Request-Id") == "" {
		t.Error("no x-request-id generated")
	}
}

func TestFallbackWhenPrimaryRefusesConnections(t *testing.T) {
	b := startUpstream(t, nil)
	dead := closedAddr(t)
	p := newFakePicker(routeTo(dead + "," + b.addr))
	gw, _ := startGateway(t, gateway.Config{Picker: startPicker(t, p)})

	resp, err := client().Post(gw.URL+"/v1/completions", "application/json", strings.NewReader(`{"model":"m","prompt":"p"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || b.hits.Load() != 1 {
		t.Fatalf("status = %d body = %s, fallback hits = %d", resp.StatusCode, body, b.hits.Load())
	}
	if _, got := b.request(); string(got) != `{"model":"m","prompt":"p"}` {
		t.Errorf("fallback got body %q", got)
	}
	if served := servedEndpoint(t, p); served != b.addr {
		t.Errorf("served metadata = %q, want the fallback %q", served, b.addr)
	}
}

func servedEndpoint(t *testing.T, p *fakePicker) string {
	t.Helper()
	for _, m := range p.messages() {
		if m.GetResponseHeaders() != nil {
			return m.GetMetadataContext().GetFilterMetadata()[gateway.MetadataNamespaceLB].GetFields()[gateway.MetadataKeyServed].GetStringValue()
		}
	}
	t.Fatal("picker saw no response headers")
	return ""
}

func TestImmediateResponseReachesClient(t *testing.T) {
	for _, tc := range []struct {
		code   typev3.StatusCode
		reason string
	}{
		{typev3.StatusCode_BadRequest, ""},
		{typev3.StatusCode_TooManyRequests, "rejected-saturated"},
	} {
		t.Run(tc.code.String(), func(t *testing.T) {
			up := startUpstream(t, nil)
			imm := &extprocv3.ImmediateResponse{
				Status: &typev3.HttpStatus{Code: tc.code},
				Body:   []byte(`{"error":"nope"}`),
				Headers: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
					setHeader("content-type", "application/json"),
				}},
			}
			if tc.reason != "" {
				imm.Headers.SetHeaders = append(imm.Headers.SetHeaders, setHeader("x-llm-d-request-dropped-reason", tc.reason))
			}
			p := newFakePicker(func(map[string]string, []byte) decision { return decision{immediate: imm} })
			gw, _ := startGateway(t, gateway.Config{Picker: startPicker(t, p)})

			resp, err := client().Post(gw.URL+"/v1/completions", "application/json", strings.NewReader(`{}`))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != int(tc.code) || string(body) != `{"error":"nope"}` {
				t.Errorf("got %d %q", resp.StatusCode, body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("content-type = %q", ct)
			}
			if got := resp.Header.Get("X-Llm-D-Request-Dropped-Reason"); got != tc.reason {
				t.Errorf("dropped reason = %q, want %q", got, tc.reason)
			}
			if up.hits.Load() != 0 {
				t.Error("upstream was called")
			}
		})
	}
}

func TestPickerUnreachableFailsClosed(t *testing.T) {
	up := startUpstream(t, nil)
	gw, _ := startGateway(t, gateway.Config{Picker: closedAddr(t)})
	resp, err := client().Post(gw.URL+"/v1/completions", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e struct {
		Error struct {
			Message string `json:"message"`
			Type    string `json:"type"`
			Code    int    `json:"code"`
		} `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable || e.Error.Type != "gateway_error" || e.Error.Code != 503 || e.Error.Message == "" {
		t.Errorf("got %d %+v", resp.StatusCode, e)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("content-type = %q", ct)
	}
	if up.hits.Load() != 0 {
		t.Error("upstream was called")
	}
}

func TestProtocolMessagesAsEnvoySendsThem(t *testing.T) {
	up := startUpstream(t, nil)
	p := newFakePicker(routeTo(up.addr))
	p.respSet = map[string]string{"x-picker-response": "seen"}
	gw, _ := startGateway(t, gateway.Config{
		Picker:     startPicker(t, p),
		SubsetHint: func(*http.Request) ([]string, bool) { return []string{up.addr}, true },
	})

	resp, err := client().Post(gw.URL+"/v1/completions", "application/json", strings.NewReader(`{"model":"m","prompt":"p"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != `{"ok":true}` || resp.Header.Get("X-Picker-Response") != "seen" {
		t.Errorf("client got %q with x-picker-response %q", body, resp.Header.Get("X-Picker-Response"))
	}

	msgs := p.messages()
	first := msgs[0]
	pc := first.GetProtocolConfig()
	if first.GetRequestHeaders() == nil || pc.GetRequestBodyMode() != extprocfilterv3.ProcessingMode_FULL_DUPLEX_STREAMED ||
		pc.GetResponseBodyMode() != extprocfilterv3.ProcessingMode_FULL_DUPLEX_STREAMED {
		t.Errorf("first message = %v", first)
	}
	hdrs := map[string]string{}
	for _, h := range first.GetRequestHeaders().GetHeaders().GetHeaders() {
		if h.GetValue() != "" {
			t.Errorf("header %s uses value instead of raw_value", h.GetKey())
		}
		hdrs[h.GetKey()] = string(h.GetRawValue())
	}
	for k, want := range map[string]string{
		":method": "POST", ":path": "/v1/completions", ":scheme": "http",
		":authority": strings.TrimPrefix(gw.URL, "http://"), "content-type": "application/json", "content-length": "26",
	} {
		if hdrs[k] != want {
			t.Errorf("request header %s = %q, want %q", k, hdrs[k], want)
		}
	}
	subset := first.GetMetadataContext().GetFilterMetadata()[gateway.MetadataNamespaceSubsetHint].
		GetFields()[gateway.MetadataKeySubset].GetListValue().GetValues()
	if len(subset) != 1 || subset[0].GetStringValue() != up.addr {
		t.Errorf("subset hint = %v", subset)
	}
	for i, m := range msgs[1:] {
		if m.GetProtocolConfig() != nil {
			t.Errorf("message %d repeats protocol_config", i+1)
		}
	}

	var respHeaders *extprocv3.ProcessingRequest
	var respBodies []*extprocv3.HttpBody
	for _, m := range msgs {
		if m.GetResponseHeaders() != nil {
			respHeaders = m
		}
		if b := m.GetResponseBody(); b != nil {
			respBodies = append(respBodies, b)
		}
	}
	if respHeaders == nil {
		t.Fatal("no response headers message")
	}
	lb := respHeaders.GetMetadataContext().GetFilterMetadata()[gateway.MetadataNamespaceLB].GetFields()
	if lb[gateway.MetadataKeyServed].GetStringValue() != up.addr || lb[gateway.MetadataKeyDestination].GetStringValue() != up.addr {
		t.Errorf("response metadata envoy.lb = %v", lb)
	}
	var statusHdr string
	for _, h := range respHeaders.GetResponseHeaders().GetHeaders().GetHeaders() {
		if h.GetKey() == ":status" {
			statusHdr = string(h.GetRawValue())
		}
	}
	if statusHdr != "200" {
		t.Errorf(":status = %q", statusHdr)
	}
	if n := len(respBodies); n == 0 || !respBodies[n-1].GetEndOfStream() {
		t.Errorf("response body messages = %v", respBodies)
	}
}

func TestGetWithoutBodySendsHeadersOnly(t *testing.T) {
	up := startUpstream(t, nil)
	p := newFakePicker(routeTo(up.addr))
	gw, _ := startGateway(t, gateway.Config{Picker: startPicker(t, p)})
	resp, err := client().Get(gw.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || up.hits.Load() != 1 {
		t.Fatalf("status = %d hits = %d", resp.StatusCode, up.hits.Load())
	}
	for _, m := range p.messages() {
		if m.GetRequestBody() != nil {
			t.Error("picker got a request body message for a bodiless request")
		}
		if h := m.GetRequestHeaders(); h != nil && !h.GetEndOfStream() {
			t.Error("request headers without end_of_stream for a bodiless request")
		}
	}
}

func TestSSEChunksStreamOneByOne(t *testing.T) {
	release := make(chan struct{})
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: {\"n\":1}\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "data: {\"n\":2}\n\n")
		w.(http.Flusher).Flush()
		_, _ = io.WriteString(w, "data: [DONE]\n\n")
	})
	p := newFakePicker(routeTo(up.addr))
	gw, _ := startGateway(t, gateway.Config{Picker: startPicker(t, p)})

	resp, err := client().Post(gw.URL+"/v1/chat/completions", "application/json", strings.NewReader(`{"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("content-type = %q", ct)
	}
	rd := bufio.NewReader(resp.Body)
	// The upstream is parked until release is closed, so reading the first
	// event here proves it was forwarded before the upstream finished.
	first := readEvent(t, rd)
	if first != "data: {\"n\":1}" {
		t.Fatalf("first event = %q", first)
	}
	close(release)
	if ev := readEvent(t, rd); ev != "data: {\"n\":2}" {
		t.Errorf("second event = %q", ev)
	}
	if ev := readEvent(t, rd); ev != "data: [DONE]" {
		t.Errorf("last event = %q", ev)
	}
	if rest, _ := io.ReadAll(rd); len(rest) != 0 {
		t.Errorf("trailing bytes %q", rest)
	}
}

func readEvent(t *testing.T, rd *bufio.Reader) string {
	t.Helper()
	var lines []string
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatalf("reading event: %v (so far %q)", err, lines)
		}
		line = strings.TrimRight(line, "\n")
		if line == "" {
			return strings.Join(lines, "\n")
		}
		lines = append(lines, line)
	}
}

func TestClientDisconnectCancelsPickerStream(t *testing.T) {
	upstreamGone := make(chan struct{})
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: {\"n\":1}\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		close(upstreamGone)
	})
	p := newFakePicker(routeTo(up.addr))
	gw, _ := startGateway(t, gateway.Config{Picker: startPicker(t, p)})

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, gw.URL+"/v1/chat/completions", strings.NewReader(`{"stream":true}`))
	resp, err := client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if ev := readEvent(t, bufio.NewReader(resp.Body)); ev != "data: {\"n\":1}" {
		t.Fatalf("first event = %q", ev)
	}
	cancel()
	resp.Body.Close()

	select {
	case err := <-p.streamEnds:
		if status.Code(err) != codes.Canceled {
			t.Errorf("picker stream ended with %v, want a cancellation", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("picker never saw the stream end")
	}
	select {
	case <-upstreamGone:
	case <-time.After(10 * time.Second):
		t.Fatal("upstream request was not cancelled")
	}
}

func TestCompleteExchangeEndsPickerStreamCleanly(t *testing.T) {
	up := startUpstream(t, nil)
	p := newFakePicker(routeTo(up.addr))
	gw, _ := startGateway(t, gateway.Config{Picker: startPicker(t, p)})
	resp, err := client().Post(gw.URL+"/v1/completions", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	select {
	case err := <-p.streamEnds:
		if err != nil {
			t.Errorf("stream ended with %v, want a clean half-close", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("picker stream did not end")
	}
}

func TestMissingDestinationAnswers503ThroughPicker(t *testing.T) {
	p := newFakePicker(routeTo("not-an-endpoint"))
	gw, _ := startGateway(t, gateway.Config{Picker: startPicker(t, p)})
	resp, err := client().Post(gw.URL+"/v1/completions", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "gateway_error") {
		t.Errorf("got %d %s", resp.StatusCode, body)
	}
	// As with Envoy's router reply, the picker sees the response phase, with
	// no served endpoint since nothing was served.
	var saw bool
	for _, m := range p.messages() {
		if rh := m.GetResponseHeaders(); rh != nil {
			saw = true
			if _, ok := m.GetMetadataContext().GetFilterMetadata()[gateway.MetadataNamespaceLB].GetFields()[gateway.MetadataKeyServed]; ok {
				t.Error("served endpoint reported for a local reply")
			}
		}
	}
	if !saw {
		t.Error("picker did not see the local reply's headers")
	}
}

func TestMetadataMismatchIsLogged(t *testing.T) {
	up := startUpstream(t, nil)
	other := "10.9.9.9:8000"
	p := newFakePicker(func(map[string]string, []byte) decision {
		return decision{dest: up.addr, metadataDest: &other}
	})
	gw, logs := startGateway(t, gateway.Config{Picker: startPicker(t, p)})
	resp, err := client().Post(gw.URL+"/v1/completions", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d", resp.StatusCode)
	}
	if !strings.Contains(logs.String(), "destination metadata differs") {
		t.Errorf("no mismatch warning in logs:\n%s", logs)
	}
}

func TestPickerSilenceTimesOut(t *testing.T) {
	p := newFakePicker(func(map[string]string, []byte) decision { return decision{hang: true} })
	gw, _ := startGateway(t, gateway.Config{Picker: startPicker(t, p), MessageTimeout: 100 * time.Millisecond})
	resp, err := client().Post(gw.URL+"/v1/completions", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("status = %d, want 504", resp.StatusCode)
	}
}

func TestOversizedBodyRejected(t *testing.T) {
	up := startUpstream(t, nil)
	p := newFakePicker(routeTo(up.addr))
	gw, _ := startGateway(t, gateway.Config{Picker: startPicker(t, p), MaxRequestBodyBytes: 16})
	resp, err := client().Post(gw.URL+"/v1/completions", "application/json", strings.NewReader(strings.Repeat("x", 64)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || up.hits.Load() != 0 {
		t.Errorf("status = %d, upstream hits = %d", resp.StatusCode, up.hits.Load())
	}
}

func TestImmediateResponseWhileClientStillUploads(t *testing.T) {
	up := startUpstream(t, nil)
	p := newFakePicker(routeTo(up.addr))
	p.rejectEarly = &extprocv3.ImmediateResponse{Status: &typev3.HttpStatus{Code: typev3.StatusCode_PayloadTooLarge}}
	gw, _ := startGateway(t, gateway.Config{Picker: startPicker(t, p)})

	pr, pw := io.Pipe()
	defer pw.Close()
	go func() {
		// Send a first part and then stall, like a client still uploading.
		_, _ = io.WriteString(pw, `{"model":"m","prompt":"`)
	}()
	resp, err := client().Post(gw.URL+"/v1/completions", "application/json", pr)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || up.hits.Load() != 0 {
		t.Errorf("status = %d, upstream hits = %d", resp.StatusCode, up.hits.Load())
	}
	// The unread rest of the body must not be parsed as the next request.
	if !resp.Close {
		t.Error("an answer sent before the request body ended must close the connection")
	}
}

// TestKeepAliveAfterImmediateResponse reuses one client connection for requests the picker
// rejects and requests it routes: an early answer must not leave the connection in a state
// where the next request is cancelled or misparsed.
func TestKeepAliveAfterImmediateResponse(t *testing.T) {
	up := startUpstream(t, nil)
	p := newFakePicker(func(_ map[string]string, body []byte) decision {
		if strings.Contains(string(body), "reject") {
			return decision{immediate: &extprocv3.ImmediateResponse{
				Status: &typev3.HttpStatus{Code: typev3.StatusCode_BadRequest}, Body: []byte("rejected")}}
		}
		return decision{dest: up.addr}
	})
	gw, _ := startGateway(t, gateway.Config{Picker: startPicker(t, p)})
	c := client()
	for i := range 100 {
		reject := i%2 == 0
		body := `{"model":"m","prompt":"ok"}`
		if reject {
			body = `{"model":"m","prompt":"reject"}`
		}
		resp, err := c.Post(gw.URL+"/v1/completions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want, wantBody := http.StatusOK, `{"ok":true}`
		if reject {
			want, wantBody = http.StatusBadRequest, "rejected"
		}
		if resp.StatusCode != want || string(got) != wantBody {
			t.Fatalf("request %d: got %d %q, want %d %q", i, resp.StatusCode, got, want, wantBody)
		}
	}
}

func TestEchoedPseudoHeadersIgnoredWithoutWarning(t *testing.T) {
	up := startUpstream(t, nil)
	p := newFakePicker(func(h map[string]string, _ []byte) decision {
		// Pickers built on Envoy's header map often send the pseudo-headers
		// they received straight back.
		set := map[string]string{}
		for _, k := range []string{":method", ":path", ":scheme"} {
			set[k] = h[k]
		}
		// A changed :authority is still refused, as by Envoy, just quietly.
		set[":authority"] = "elsewhere.example"
		return decision{dest: up.addr, set: set, remove: []string{":path"}}
	})
	p.respSet = map[string]string{":status": "200"}
	rec := &logRecorder{}
	gw, _ := startGateway(t, gateway.Config{Picker: startPicker(t, p), Logger: slog.New(rec)})

	resp, err := client().Post(gw.URL+"/v1/completions", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d", resp.StatusCode)
	}
	r, _ := up.request()
	if want := strings.TrimPrefix(gw.URL, "http://"); r.Host != want || r.URL.Path != "/v1/completions" {
		t.Errorf("upstream got host %q path %q, want %q /v1/completions", r.Host, r.URL.Path, want)
	}
	for _, r := range rec.records() {
		if r.Level >= slog.LevelWarn {
			t.Errorf("logged %s %q for echoed pseudo-headers", r.Level, r.Message)
		}
	}
}

// TestResponseEndReachesPickerWhenClientHangsUp covers a client that closes
// its connection as soon as it has read data: [DONE]. The picker must still
// get the response's end of stream, which is how it learns the request is
// done, and the gateway must wait for its answer and close the stream
// cleanly, whether the upstream's end arrived just before the client left or
// just after.
func TestResponseEndReachesPickerWhenClientHangsUp(t *testing.T) {
	for _, tc := range []struct {
		name              string
		upstreamEndsFirst bool
	}{
		{"upstream ended before the client left", true},
		{"upstream ends after the client left", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			var releaseOnce sync.Once
			endUpstream := func() { releaseOnce.Do(func() { close(release) }) }
			up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				_, _ = io.WriteString(w, "data: {\"n\":1}\n\ndata: [DONE]\n\n")
				w.(http.Flusher).Flush()
				// The end of the chunked response follows only on release.
				select {
				case <-release:
				case <-r.Context().Done():
				}
			})
			p := newFakePicker(routeTo(up.addr))
			p.responseEOS = make(chan struct{})
			hold := make(chan struct{})
			if tc.upstreamEndsFirst {
				p.holdEOS = hold
			}
			rec := &logRecorder{}
			gw, err := gateway.New(gateway.Config{Picker: startPicker(t, p), Logger: slog.New(rec)})
			if err != nil {
				t.Fatal(err)
			}
			// Long enough that only the events below decide the outcome.
			gateway.SetDrainGrace(gw, time.Minute)
			srv := httptest.NewServer(gw)
			t.Cleanup(func() {
				srv.Close()
				_ = gw.Close()
			})
			t.Cleanup(endUpstream) // runs first, so a failed test cannot park the upstream

			conn, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			body := `{"stream":true}`
			_, err = io.WriteString(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n"+
				"Content-Type: application/json\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			rd := bufio.NewReader(resp.Body)
			if ev := readEvent(t, rd); ev != "data: {\"n\":1}" {
				t.Fatalf("first event = %q", ev)
			}
			if ev := readEvent(t, rd); ev != "data: [DONE]" {
				t.Fatalf("last event = %q", ev)
			}

			if tc.upstreamEndsFirst {
				endUpstream()
				select {
				case <-p.responseEOS:
				case err := <-p.streamEnds:
					t.Fatalf("picker stream ended (%v) before the response end of stream", err)
				case <-time.After(10 * time.Second):
					t.Fatal("picker never got the response end of stream")
				}
			}
			conn.Close()
			select {
			case <-rec.logged("client went away during the response"):
			case err := <-p.streamEnds:
				t.Fatalf("client hang-up ended the picker stream (%v) before the response end of stream was answered", err)
			case <-time.After(10 * time.Second):
				t.Fatal("gateway did not notice the client leaving")
			}
			if tc.upstreamEndsFirst {
				close(hold)
			} else {
				endUpstream()
				select {
				case <-p.responseEOS:
				case err := <-p.streamEnds:
					t.Fatalf("picker stream ended (%v) without the response end of stream", err)
				case <-time.After(10 * time.Second):
					t.Fatal("picker never got the response end of stream")
				}
			}
			select {
			case err := <-p.streamEnds:
				if err != nil {
					t.Errorf("picker stream ended with %v, want a clean half-close after its answer", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("picker stream did not end")
			}
		})
	}
}
