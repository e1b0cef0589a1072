package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

var (
	errPickerUnavailable = errors.New("endpoint picker unavailable")
	errPickerClosed      = errors.New("endpoint picker closed the stream")
	errPickerProtocol    = errors.New("endpoint picker broke the ext_proc protocol")
	errPickerTimeout     = errors.New("endpoint picker did not answer within the message timeout")
	errImmediateResponse = errors.New("endpoint picker answered immediately")
	errBodyTooLarge      = errors.New("request body exceeds the configured limit")
	errClientBody        = errors.New("reading the request body from the client failed")
	errUpstreamReset     = errors.New("upstream response body failed")
	errSendClosed        = errors.New("ext_proc stream already half-closed")
	errExchangeDone      = errors.New("exchange finished")
)

const (
	// chunkSize caps one body message; Envoy's chunks are of the same order.
	chunkSize = 32 << 10
	// closeGrace is how long a finished exchange waits for the picker to end
	// the stream after the gateway half-closed it, so the picker sees a clean
	// end of stream rather than a cancellation.
	closeGrace = 2 * time.Second
	// drainGrace is how long the upstream may still take to end its response
	// after the client went away in the middle of it. The picker counts a
	// completion only by the response's end of stream, which usually follows
	// the last bytes within milliseconds, and a client typically hangs up as
	// soon as it has read them; a response still being generated after the
	// grace is cut, as Envoy resets the upstream of a vanished downstream.
	drainGrace = 2 * time.Second
	// eventBuffer decouples reading the gRPC stream from writing to a slow
	// client; beyond it, gRPC flow control pushes back on the picker.
	eventBuffer = 32
)

// pickerEvent is a message from the picker for the request's main goroutine,
// or the error that ended the stream.
type pickerEvent struct {
	resp *extprocv3.ProcessingResponse
	err  error
}

// exchange is one HTTP request and its ext_proc stream. The handler
// goroutine drives the phases; a receiver goroutine reads the stream, feeds
// replayed request body straight into the upstream request and passes every
// other message on; one pump per direction streams body chunks to the picker
// as they are read.
type exchange struct {
	g   *Gateway
	w   http.ResponseWriter
	r   *http.Request
	rc  *http.ResponseController
	log *slog.Logger

	ctx             context.Context
	cancel          context.CancelCauseFunc
	stopClientWatch func() bool

	// phaseMu orders the client's departure against the start of the
	// response phase and the end of the exchange (see clientGone).
	phaseMu      sync.Mutex
	responding   bool
	clientLeft   bool
	watchStopped bool
	drainTimer   *time.Timer
	// respEnded is set once the whole upstream response has been read, so
	// its end of stream is owed to the picker whatever the client does.
	respEnded atomic.Bool

	stream     extprocv3.ExternalProcessor_ProcessClient
	sendMu     sync.Mutex
	sentAny    bool
	sendClosed bool

	md     metadataStore
	wd     *watchdog
	events chan pickerEvent

	hasReqBody bool
	reqBodyEOF atomic.Bool
	upBody     *streamBuffer

	trailerMu    sync.Mutex
	reqTrailers  headerList
	respTrailers headerList

	recvDone     chan struct{}
	reqPumpDone  chan struct{}
	respPumpDone chan struct{}
	respBody     io.Closer

	wroteHeader bool
	completed   bool
	aborted     bool
	finished    bool
}

func (g *Gateway) newExchange(w http.ResponseWriter, r *http.Request) *exchange {
	// The stream and the upstream request outlive r.Context() by design
	// (see finish and clientGone); a client that goes away still cancels
	// both, at once or after the response has had its chance to end.
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(r.Context()))
	x := &exchange{
		g:          g,
		w:          w,
		r:          r,
		rc:         http.NewResponseController(w),
		log:        g.log,
		ctx:        ctx,
		cancel:     cancel,
		events:     make(chan pickerEvent, eventBuffer),
		hasReqBody: r.Body != nil && r.Body != http.NoBody,
		upBody:     newStreamBuffer(),
	}
	x.wd = newWatchdog(g.cfg.MessageTimeout, func() { cancel(errPickerTimeout) })
	x.stopClientWatch = context.AfterFunc(r.Context(), func() { x.clientGone(context.Cause(r.Context())) })
	return x
}

func (x *exchange) run() {
	reqHeaders := requestHeaders(x.r)
	id, _ := reqHeaders.get("x-request-id")
	x.log = x.g.log.With("request_id", id, "method", x.r.Method, "path", x.r.URL.Path)
	// Envoy streams both directions independently; without this, Go's
	// HTTP/1 server would close the request body once the response starts.
	if err := x.rc.EnableFullDuplex(); err != nil {
		x.log.Debug("full duplex unsupported by the response writer", "error", err)
	}
	if hint := x.g.cfg.SubsetHint; hint != nil {
		if endpoints, ok := hint(x.r); ok {
			x.md.setSubset(endpoints)
		}
	}

	stream, err := x.g.client.Process(x.ctx)
	if err != nil {
		x.fail(fmt.Errorf("%w: open ext_proc stream to %s: %w", errPickerUnavailable, x.g.cfg.Picker, err))
		return
	}
	x.stream = stream
	x.recvDone = make(chan struct{})
	go x.receive()

	x.wd.expect()
	err = x.send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{
		RequestHeaders: &extprocv3.HttpHeaders{Headers: reqHeaders.proto(), EndOfStream: !x.hasReqBody},
	}})
	if err != nil {
		// The receiver reports why the stream broke.
		x.log.Debug("sending request headers failed", "error", err)
	}
	if x.hasReqBody {
		x.reqPumpDone = make(chan struct{})
		go x.pumpRequest()
	}

	hr, ok := x.headersAnswer((*extprocv3.ProcessingResponse).GetRequestHeaders, "request headers")
	if !ok || !x.applyPickerMutation(&reqHeaders, hr.GetResponse(), "request headers") {
		return
	}
	if !hr.GetResponse().GetClearRouteCache() {
		x.log.Debug("picker did not set clear_route_cache; Envoy may route on a cached route")
	}

	dest, _ := reqHeaders.get(HeaderDestinationEndpoint)
	x.checkMetadata(dest)
	endpoints, skipped, err := parseDestinations(dest)
	if len(skipped) > 0 {
		x.log.Warn("skipping invalid destination endpoints", "skipped", skipped, "header", dest)
	}
	if err != nil {
		// Envoy's ORIGINAL_DST cluster finds no host, and the router's 503
		// local reply still passes through ext_proc's response path.
		x.log.Warn("no usable destination", "error", err)
		x.respond(localReply(http.StatusServiceUnavailable, err.Error()))
		return
	}

	upResp, served, err := x.forward(reqHeaders, endpoints)
	if err != nil {
		// A timeout, an oversized body or a vanished client cancels the
		// context and explains the failure better than the picker stream's
		// resulting error does.
		if x.ctx.Err() != nil {
			x.fail(context.Cause(x.ctx))
			return
		}
		if x.pickerEnded() {
			return
		}
		code := http.StatusServiceUnavailable
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			code = http.StatusGatewayTimeout
		}
		x.log.Warn("upstream request failed", "endpoints", endpoints, "error", err)
		x.respond(localReply(code, "upstream request failed: "+err.Error()))
		return
	}
	x.log.Debug("upstream answered", "endpoint", served, "status", upResp.StatusCode)
	x.respond(upstreamResponse(upResp, served))
}

// clientGone reacts to the client going away. Before the response phase
// nothing is owed to anyone, so the exchange is cancelled at once. Once the
// response phase has begun, the picker is owed the response's end of stream:
// Envoy hands the upstream's end to the ext_proc filter as it arrives,
// whatever the downstream does, and a picker accounts for a finished request
// only by it. So the upstream gets drainGrace to end (not at all if it
// already has); its end then goes to the picker, whose answer is awaited
// under the message timeout as always, and the stream is closed cleanly.
func (x *exchange) clientGone(cause error) {
	x.phaseMu.Lock()
	defer x.phaseMu.Unlock()
	if x.clientLeft || x.watchStopped {
		return
	}
	x.clientLeft = true
	if !x.responding {
		x.cancel(cause)
		return
	}
	ended := x.respEnded.Load()
	x.log.Debug("client went away during the response; finishing the exchange with the picker",
		"upstream_ended", ended, "grace", x.g.drainGrace, "cause", cause)
	if ended {
		return
	}
	x.drainTimer = time.AfterFunc(x.g.drainGrace, func() {
		if !x.respEnded.Load() {
			x.cancel(cause)
		}
	})
}

// pickerEnded handles an ImmediateResponse or stream failure that arrived
// while the upstream request was in flight and caused it to fail.
func (x *exchange) pickerEnded() bool {
	select {
	case ev := <-x.events:
		if ev.err != nil {
			x.fail(x.pickerError(ev.err))
			return true
		}
		if imm := ev.resp.GetImmediateResponse(); imm != nil {
			x.immediate(imm)
			return true
		}
		x.fail(fmt.Errorf("%w: unexpected %T while the request was being forwarded", errPickerProtocol, ev.resp.GetResponse()))
		return true
	default:
		return false
	}
}

// applyPickerMutation applies the header mutation of a headers answer and
// reports false after failing the request when Envoy would reject it.
func (x *exchange) applyPickerMutation(h *headerList, common *extprocv3.CommonResponse, phase string) bool {
	if common.GetStatus() == extprocv3.CommonResponse_CONTINUE_AND_REPLACE {
		x.log.Warn("picker asked for CONTINUE_AND_REPLACE, which this gateway treats as CONTINUE", "phase", phase)
	}
	if names := rawValueMisuse(common.GetHeaderMutation()); len(names) > 0 {
		x.log.Warn("picker set headers through value instead of raw_value; Envoy reads only raw_value, so they are empty",
			"phase", phase, "headers", names)
	}
	ignored, err := applyMutation(h, common.GetHeaderMutation(), mutationRules{})
	x.logIgnored(ignored, phase)
	if err != nil {
		x.fail(fmt.Errorf("%w: %s: %w", errPickerProtocol, phase, err))
		return false
	}
	return true
}

// logIgnored reports the mutations Envoy's default rules made the gateway
// ignore. Pseudo-headers are only logged at debug level: pickers commonly echo
// the request's pseudo-headers back in their mutation, Envoy drops those
// silently, and a warning per request would drown the log. Anything else
// (host, x-envoy-*) is a deliberate change that did not happen, so it warns.
func (x *exchange) logIgnored(ignored []string, phase string) {
	pseudo, other := splitPseudo(ignored)
	if len(pseudo) > 0 {
		x.log.Debug("ignoring pseudo-header mutations, as Envoy does by default", "phase", phase, "headers", pseudo)
	}
	if len(other) > 0 {
		x.log.Warn("ignoring header mutations Envoy forbids by default", "phase", phase, "headers", other)
	}
}

// checkMetadata compares the destination header with the dynamic metadata;
// the protocol requires both to carry the same value because data planes
// may read either.
func (x *exchange) checkMetadata(header string) {
	md, ok := x.md.destination()
	switch {
	case !ok:
		x.log.Warn("picker set no "+MetadataNamespaceLB+"/"+MetadataKeyDestination+" string metadata", "header", header)
	case strings.TrimSpace(md) != strings.TrimSpace(header):
		x.log.Warn("destination metadata differs from the destination header", "header", header, "metadata", md)
	}
}

// forward sends the request upstream, trying the endpoints in order. It
// moves to the next endpoint only when the TCP connection to the current one
// cannot be established: then not a byte of the request has left, so the
// same replayed body can be sent again. Any later failure is final, since
// the model server may already be working on the request.
func (x *exchange) forward(h headerList, endpoints []string) (*http.Response, string, error) {
	method, _ := h.get(":method")
	path, _ := h.get(":path")
	authority, _ := h.get(":authority")
	target, err := url.ParseRequestURI(path)
	if err != nil {
		return nil, "", fmt.Errorf("invalid :path %q: %w", path, err)
	}
	header := h.httpHeader()
	var body io.ReadCloser
	contentLength := int64(0)
	if x.hasReqBody {
		body = upstreamBody{x.upBody}
		contentLength = -1
	}
	if v, ok := h.get("content-length"); ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return nil, "", fmt.Errorf("invalid content-length %q", v)
		}
		contentLength = n
		if n == 0 {
			body = nil
		}
	}
	var errs []error
	for i, addr := range endpoints {
		u := *target
		u.Scheme, u.Host = "http", addr
		req, err := http.NewRequestWithContext(x.ctx, method, u.String(), body)
		if err != nil {
			return nil, "", fmt.Errorf("build upstream request: %w", err)
		}
		req.Header = header.Clone()
		req.Host = authority
		req.ContentLength = contentLength
		resp, err := x.g.transport.RoundTrip(req)
		if err == nil {
			return resp, addr, nil
		}
		errs = append(errs, err)
		var de *dialError
		if !errors.As(err, &de) || x.upBody.wasRead() || x.ctx.Err() != nil {
			return nil, "", err
		}
		if i+1 < len(endpoints) {
			x.log.Warn("endpoint refused the connection; trying the next fallback",
				"endpoint", addr, "next", endpoints[i+1], "error", err)
		}
	}
	return nil, "", fmt.Errorf("no endpoint accepted a connection: %w", errors.Join(errs...))
}

// responseSource is what the response phase streams: an upstream response,
// or a local reply that, as in Envoy, still goes through the picker.
type responseSource struct {
	status        int
	header        http.Header
	contentLength int64
	body          io.ReadCloser // nil when the message has no body
	trailer       http.Header
	served        string // empty for local replies
}

func upstreamResponse(resp *http.Response, served string) responseSource {
	src := responseSource{
		status:        resp.StatusCode,
		header:        resp.Header,
		contentLength: resp.ContentLength,
		trailer:       resp.Trailer,
		served:        served,
	}
	if resp.Body != nil && resp.Body != http.NoBody {
		src.body = resp.Body
	}
	return src
}

func localReply(code int, message string) responseSource {
	body := errorBody(code, message)
	return responseSource{
		status:        code,
		header:        http.Header{"Content-Type": {"application/json"}},
		contentLength: int64(len(body)),
		body:          io.NopCloser(bytes.NewReader(body)),
	}
}

// respond runs the response phase: headers to the picker (with the served
// endpoint in envoy.lb), the picker's header mutation onto the client
// response, then every body chunk through the picker and straight on to the
// client, flushed one by one.
func (x *exchange) respond(src responseSource) {
	if src.body != nil {
		x.respBody = src.body
	}
	if src.served != "" {
		x.md.setServed(src.served)
	}
	h := responseHeaders(src.status, src.header, src.contentLength)
	hasBody := src.body != nil
	x.phaseMu.Lock()
	x.responding = true
	// Without a body the response headers carry the end of stream.
	x.respEnded.Store(!hasBody)
	x.phaseMu.Unlock()
	x.wd.expect()
	err := x.send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
		ResponseHeaders: &extprocv3.HttpHeaders{Headers: h.proto(), EndOfStream: !hasBody},
	}})
	if err != nil {
		x.log.Debug("sending response headers failed", "error", err)
	}
	if hasBody {
		x.respPumpDone = make(chan struct{})
		go x.pumpResponse(src)
	}

	hr, ok := x.headersAnswer((*extprocv3.ProcessingResponse).GetResponseHeaders, "response headers")
	if !ok || !x.applyPickerMutation(&h, hr.GetResponse(), "response headers") {
		return
	}
	x.writeHeader(h)
	if !hasBody {
		x.completed = true
		return
	}
	warnedNoStream := false
	// Once the client is gone the picker's chunks are only consumed, so the
	// exchange can still reach the response's end of stream (see clientGone).
	discard := false
	for {
		resp, err := x.next()
		if err != nil {
			x.fail(err)
			return
		}
		switch {
		case resp.GetResponseBody() != nil:
			sr := resp.GetResponseBody().GetResponse().GetBodyMutation().GetStreamedResponse()
			if sr == nil {
				if !warnedNoStream {
					x.log.Warn("picker answered a response body chunk without body_mutation.streamed_response; in FULL_DUPLEX_STREAMED nothing is forwarded for it")
					warnedNoStream = true
				}
				continue
			}
			discard = discard || x.r.Context().Err() != nil
			if len(sr.GetBody()) > 0 && !discard {
				if _, err := x.w.Write(sr.GetBody()); err != nil {
					x.log.Debug("writing to the client failed", "error", err)
					discard = true
					x.clientGone(fmt.Errorf("writing to the client: %w", err))
				} else if err := x.rc.Flush(); err != nil {
					x.log.Debug("flushing to the client failed", "error", err)
				}
			}
			if sr.GetEndOfStream() {
				x.completed = true
				return
			}
		case resp.GetResponseTrailers() != nil:
			x.trailerMu.Lock()
			t := x.respTrailers
			x.trailerMu.Unlock()
			ignored, err := applyMutation(&t, resp.GetResponseTrailers().GetHeaderMutation(), mutationRules{})
			x.logIgnored(ignored, "response trailers")
			if err != nil {
				x.fail(fmt.Errorf("%w: response trailers: %w", errPickerProtocol, err))
				return
			}
			for _, f := range t {
				x.w.Header().Add(http.TrailerPrefix+f.name, f.value)
			}
			x.completed = true
			return
		case resp.GetImmediateResponse() != nil:
			x.fail(fmt.Errorf("%w with status %d after the response had started",
				errImmediateResponse, resp.GetImmediateResponse().GetStatus().GetCode()))
			return
		default:
			x.fail(fmt.Errorf("%w: unexpected %T while streaming the response body", errPickerProtocol, resp.GetResponse()))
			return
		}
	}
}

func (x *exchange) writeHeader(h headerList) {
	status := http.StatusOK
	if v, ok := h.get(":status"); ok {
		status, _ = strconv.Atoi(v)
	}
	dst := x.w.Header()
	for _, f := range h {
		if strings.HasPrefix(f.name, ":") || hopByHop[f.name] {
			continue
		}
		dst.Add(f.name, f.value)
	}
	x.closeIfBodyUnread()
	x.w.WriteHeader(status)
	x.wroteHeader = true
	if err := x.rc.Flush(); err != nil {
		x.log.Debug("flushing response headers failed", "error", err)
	}
}

// immediate sends the picker's ImmediateResponse as Envoy's local reply:
// status (200 if unset), the mutation applied on top of a text/plain
// content type, and the body.
func (x *exchange) immediate(ir *extprocv3.ImmediateResponse) {
	status := int(ir.GetStatus().GetCode())
	if status == 0 {
		status = http.StatusOK
	}
	if status < 200 || status > 599 {
		x.log.Warn("picker sent an immediate response with an invalid status; answering 500", "status", status)
		status = http.StatusInternalServerError
	}
	if x.wroteHeader {
		x.fail(fmt.Errorf("%w with status %d after the response had started", errImmediateResponse, status))
		return
	}
	var h headerList
	if len(ir.GetBody()) > 0 {
		h.set("content-type", "text/plain")
	}
	if _, err := applyMutation(&h, ir.GetHeaders(), mutationRules{allowAll: true}); err != nil {
		x.log.Warn("invalid header mutation in the immediate response", "error", err)
	}
	h.set("content-length", strconv.Itoa(len(ir.GetBody())))
	h.set(":status", strconv.Itoa(status))
	x.log.Info("endpoint picker answered immediately", "status", status, "details", ir.GetDetails())
	x.writeHeader(h)
	if _, err := x.w.Write(ir.GetBody()); err != nil {
		x.log.Debug("writing the immediate response failed", "error", err)
	}
}

// fail ends the request with the gateway's own answer: nothing if the
// client is gone, a cut connection if the response already started, an
// error status otherwise.
func (x *exchange) fail(err error) {
	if x.r.Context().Err() != nil {
		x.log.Debug("client went away", "error", err)
		return
	}
	if x.wroteHeader {
		x.log.Warn("aborting the response mid-stream", "error", err)
		x.aborted = true
		return
	}
	code := http.StatusServiceUnavailable
	switch {
	case errors.Is(err, errPickerTimeout):
		code = http.StatusGatewayTimeout
	case errors.Is(err, errBodyTooLarge):
		code = http.StatusRequestEntityTooLarge
	case errors.Is(err, errClientBody):
		code = http.StatusBadRequest
	}
	x.log.Warn("request failed", "status", code, "error", err)
	x.closeIfBodyUnread()
	writeError(x.w, code, err.Error())
	x.wroteHeader = true
}

// headersAnswer waits for the picker's answer to a headers phase. It answers the client
// itself (an immediate response or an error) and reports false when the exchange ends there.
func (x *exchange) headersAnswer(get func(*extprocv3.ProcessingResponse) *extprocv3.HeadersResponse, phase string) (*extprocv3.HeadersResponse, bool) {
	resp, err := x.next()
	if err != nil {
		x.fail(err)
		return nil, false
	}
	if imm := resp.GetImmediateResponse(); imm != nil {
		x.immediate(imm)
		return nil, false
	}
	hr := get(resp)
	if hr == nil {
		x.fail(fmt.Errorf("%w: expected the answer to the %s, got %T", errPickerProtocol, phase, resp.GetResponse()))
		return nil, false
	}
	return hr, true
}

// closeIfBodyUnread asks net/http to close the connection after this response
// when the client's body has not been read to its end: the unread bytes would
// otherwise be parsed as the next request on a kept-alive connection. Envoy
// closes HTTP/1.1 connections after such early replies too.
func (x *exchange) closeIfBodyUnread() {
	if x.hasReqBody && !x.reqBodyEOF.Load() {
		x.w.Header().Set("Connection", "close")
	}
}

// next waits for the picker's next message for the main goroutine.
func (x *exchange) next() (*extprocv3.ProcessingResponse, error) {
	select {
	case ev := <-x.events:
		if ev.err != nil {
			if x.ctx.Err() != nil {
				return nil, context.Cause(x.ctx)
			}
			return nil, x.pickerError(ev.err)
		}
		return ev.resp, nil
	case <-x.ctx.Done():
		return nil, context.Cause(x.ctx)
	}
}

func (x *exchange) pickerError(err error) error {
	switch {
	case errors.Is(err, errPickerProtocol):
		return err
	case errors.Is(err, io.EOF):
		return fmt.Errorf("%w before the exchange was complete", errPickerClosed)
	default:
		return fmt.Errorf("%w: %w", errPickerUnavailable, err)
	}
}

// send serialises writes to the stream, which gRPC requires, and stamps
// each message the way Envoy does: protocol_config on the first one, the
// forwarded metadata namespaces on every one.
func (x *exchange) send(req *extprocv3.ProcessingRequest) error {
	x.sendMu.Lock()
	defer x.sendMu.Unlock()
	if x.sendClosed {
		return errSendClosed
	}
	if !x.sentAny {
		x.sentAny = true
		req.ProtocolConfig = &extprocv3.ProtocolConfiguration{
			RequestBodyMode:  extprocfilterv3.ProcessingMode_FULL_DUPLEX_STREAMED,
			ResponseBodyMode: extprocfilterv3.ProcessingMode_FULL_DUPLEX_STREAMED,
		}
	}
	req.MetadataContext = x.md.context()
	if err := x.stream.Send(req); err != nil {
		return fmt.Errorf("send to endpoint picker: %w", err)
	}
	return nil
}

func (x *exchange) closeSend() {
	x.sendMu.Lock()
	defer x.sendMu.Unlock()
	if x.sendClosed {
		return
	}
	x.sendClosed = true
	if err := x.stream.CloseSend(); err != nil {
		x.log.Debug("half-closing the ext_proc stream failed", "error", err)
	}
}

func (x *exchange) deliver(ev pickerEvent) bool {
	select {
	case x.events <- ev:
		return true
	case <-x.ctx.Done():
		return false
	}
}

// receive reads the stream until it ends. It keeps the watchdog's books,
// merges dynamic metadata, writes replayed request body into the upstream
// request itself (so the upstream never waits on the handler goroutine) and
// hands everything else to the handler goroutine.
func (x *exchange) receive() {
	defer close(x.recvDone)
	decided := false
	reqBodyDone := !x.hasReqBody
	for {
		resp, err := x.stream.Recv()
		if err != nil {
			x.deliver(pickerEvent{err: err})
			x.upBody.finish(fmt.Errorf("endpoint picker stream ended before the request body was replayed: %w", err))
			return
		}
		x.wd.progress()
		if refused := x.md.receive(resp.GetDynamicMetadata()); len(refused) > 0 {
			x.log.Debug("ignoring dynamic metadata outside the received namespaces", "namespaces", refused)
		}
		switch v := resp.GetResponse().(type) {
		case *extprocv3.ProcessingResponse_RequestHeaders:
			if !reqBodyDone {
				x.wd.expect()
			}
			x.wd.satisfy()
			decided = true
		case *extprocv3.ProcessingResponse_RequestBody:
			if !decided {
				perr := fmt.Errorf("%w: request body chunk before the answer to the request headers", errPickerProtocol)
				x.deliver(pickerEvent{err: perr})
				x.upBody.abort(perr)
				return
			}
			x.forwardRequestChunk(v.RequestBody, &reqBodyDone)
			continue
		case *extprocv3.ProcessingResponse_RequestTrailers:
			x.noteRequestTrailers(v.RequestTrailers)
			if !reqBodyDone {
				reqBodyDone = true
				x.wd.satisfy()
				x.upBody.finish(nil)
			}
			continue
		case *extprocv3.ProcessingResponse_ResponseHeaders:
			x.wd.satisfy()
		case *extprocv3.ProcessingResponse_ResponseBody:
			if v.ResponseBody.GetResponse().GetBodyMutation().GetStreamedResponse().GetEndOfStream() {
				x.wd.satisfy()
			}
		case *extprocv3.ProcessingResponse_ResponseTrailers:
			x.wd.satisfy()
		case *extprocv3.ProcessingResponse_ImmediateResponse:
			// Envoy stops listening after a local reply; so does this.
			x.deliver(pickerEvent{resp: resp})
			x.upBody.abort(errImmediateResponse)
			return
		case nil:
			x.log.Debug("ignoring a picker message without a response case")
			continue
		}
		if !x.deliver(pickerEvent{resp: resp}) {
			return
		}
	}
}

func (x *exchange) forwardRequestChunk(br *extprocv3.BodyResponse, done *bool) {
	sr := br.GetResponse().GetBodyMutation().GetStreamedResponse()
	if sr == nil {
		x.log.Warn("picker answered a request body chunk without body_mutation.streamed_response; in FULL_DUPLEX_STREAMED nothing is forwarded for it")
		return
	}
	x.upBody.push(sr.GetBody())
	if sr.GetEndOfStream() && !*done {
		*done = true
		x.wd.satisfy()
		x.upBody.finish(nil)
	}
}

// noteRequestTrailers logs what the picker made of the request trailers.
// They are not forwarded upstream: see docs/gateway.md.
func (x *exchange) noteRequestTrailers(tr *extprocv3.TrailersResponse) {
	x.trailerMu.Lock()
	t := append(headerList(nil), x.reqTrailers...)
	x.trailerMu.Unlock()
	if _, err := applyMutation(&t, tr.GetHeaderMutation(), mutationRules{}); err != nil {
		x.log.Warn("invalid request trailer mutation", "error", err)
	}
	x.log.Debug("request trailers processed but not forwarded upstream", "trailers", len(t))
}

// pumpRequest streams the client's body to the picker chunk by chunk as it
// arrives, never buffering it whole.
func (x *exchange) pumpRequest() {
	defer close(x.reqPumpDone)
	limit := x.g.cfg.MaxRequestBodyBytes
	buf := make([]byte, chunkSize)
	var total int64
	for {
		n, err := x.r.Body.Read(buf)
		total += int64(n)
		if limit > 0 && total > limit {
			x.cancel(fmt.Errorf("%w of %d bytes", errBodyTooLarge, limit))
			return
		}
		chunk := bytes.Clone(buf[:n])
		switch {
		case err == nil:
			if n == 0 {
				continue
			}
			if x.sendBody(true, chunk, false) != nil {
				return
			}
			x.wd.progress()
		case errors.Is(err, io.EOF):
			x.reqBodyEOF.Store(true)
			trailers := trailerList(x.r.Trailer)
			if len(trailers) == 0 {
				_ = x.sendBody(true, chunk, true)
				x.wd.progress()
				return
			}
			if n > 0 && x.sendBody(true, chunk, false) != nil {
				return
			}
			x.trailerMu.Lock()
			x.reqTrailers = trailers
			x.trailerMu.Unlock()
			_ = x.send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestTrailers{
				RequestTrailers: &extprocv3.HttpTrailers{Trailers: trailers.proto()},
			}})
			x.wd.progress()
			return
		default:
			x.cancel(fmt.Errorf("%w: %w", errClientBody, err))
			return
		}
	}
}

// pumpResponse streams the upstream body to the picker chunk by chunk as it
// arrives, which is what keeps SSE tokens flowing without delay.
func (x *exchange) pumpResponse(src responseSource) {
	defer close(x.respPumpDone)
	buf := make([]byte, chunkSize)
	for {
		n, err := src.body.Read(buf)
		chunk := bytes.Clone(buf[:n])
		switch {
		case err == nil:
			if n == 0 {
				continue
			}
			if x.sendBody(false, chunk, false) != nil {
				return
			}
		case errors.Is(err, io.EOF):
			x.respEnded.Store(true)
			trailers := trailerList(src.trailer)
			if len(trailers) == 0 {
				x.wd.expect()
				_ = x.sendBody(false, chunk, true)
				return
			}
			if n > 0 && x.sendBody(false, chunk, false) != nil {
				return
			}
			x.trailerMu.Lock()
			x.respTrailers = trailers
			x.trailerMu.Unlock()
			x.wd.expect()
			_ = x.send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseTrailers{
				ResponseTrailers: &extprocv3.HttpTrailers{Trailers: trailers.proto()},
			}})
			return
		default:
			x.cancel(fmt.Errorf("%w: %w", errUpstreamReset, err))
			return
		}
	}
}

func (x *exchange) sendBody(request bool, chunk []byte, eos bool) error {
	body := &extprocv3.HttpBody{Body: chunk, EndOfStream: eos}
	req := &extprocv3.ProcessingRequest{}
	if request {
		req.Request = &extprocv3.ProcessingRequest_RequestBody{RequestBody: body}
	} else {
		req.Request = &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: body}
	}
	err := x.send(req)
	if err != nil {
		x.log.Debug("sending a body chunk failed", "request", request, "error", err)
	}
	return err
}

// finish releases everything the exchange started, and nothing it leaves
// running touches the request or the response writer. After a complete
// exchange it half-closes the stream and lets the receiver wait, off the
// handler goroutine, for the picker to end it, so the picker sees a clean end
// of stream and the client's response is not held back meanwhile; otherwise
// it cancels, which the picker sees as the stream being reset.
func (x *exchange) finish() {
	if x.finished {
		return
	}
	x.finished = true
	// From here on the handler returning is not the client going away.
	x.stopClientWatch()
	x.phaseMu.Lock()
	x.watchStopped = true
	if x.drainTimer != nil {
		x.drainTimer.Stop()
	}
	x.phaseMu.Unlock()
	graceful := x.stream != nil && x.completed
	if graceful {
		x.closeSend()
	} else {
		x.cancel(errExchangeDone)
	}
	x.wd.stop()
	x.upBody.abort(errExchangeDone)
	if x.respBody != nil {
		_ = x.respBody.Close()
	}
	x.releaseRequestBody()
	if x.respPumpDone != nil {
		<-x.respPumpDone
	}
	if x.recvDone == nil {
		x.cancel(errExchangeDone)
		return
	}
	if !graceful {
		<-x.recvDone
		return
	}
	go func() {
		timer := time.NewTimer(closeGrace)
		defer timer.Stop()
		select {
		case <-x.recvDone:
		case <-timer.C:
			x.log.Debug("picker did not end the stream after the half-close")
		}
		x.cancel(errExchangeDone)
	}()
}

// releaseRequestBody stops the request pump and closes the body inside the
// handler. The client may still be uploading, so a past read deadline makes
// a pending read return. Closing here matters in full-duplex mode: net/http
// would otherwise drain an unread body after the handler returned and race
// its own connection reader.
func (x *exchange) releaseRequestBody() {
	if !x.hasReqBody {
		return
	}
	running := x.reqPumpDone != nil
	if running {
		select {
		case <-x.reqPumpDone:
			running = false
		default:
		}
	}
	// Interrupt only a read still blocked on the client. Once the body reached
	// EOF, net/http's own background read owns the connection, and a past
	// deadline would make it cancel every later request on the connection.
	if !x.reqBodyEOF.Load() {
		if err := x.rc.SetReadDeadline(time.Now()); err != nil {
			x.log.Debug("cannot interrupt the request body reader", "error", err)
			if running {
				return
			}
		}
	}
	if running {
		<-x.reqPumpDone
	}
	_ = x.r.Body.Close()
}
