package extproc

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/augur-llm/augur/requestcontrol"
	"github.com/augur-llm/augur/scheduler"
)

func (x *exchange) onResponseHeaders(h *extprocv3.HttpHeaders, md *corev3.Metadata) error {
	for _, hv := range h.GetHeaders().GetHeaders() {
		switch strings.ToLower(hv.GetKey()) {
		case ":status":
			x.respStatus, _ = strconv.Atoi(headerValue(hv))
		case "content-type":
			x.sse = strings.HasPrefix(strings.ToLower(strings.TrimSpace(headerValue(hv))), "text/event-stream")
		}
	}
	if served := servedEndpoint(md); served != "" && x.flight != nil && served != x.flight.Served().Address() {
		// A fallback served: what the decision credited to the primary moves to it.
		x.flight.ServedBy(x.ctx, x.s.cfg.Pool.ByAddress(served))
	}
	var common extprocv3.CommonResponse
	if x.stripUsage && x.sse {
		// The stream loses its usage chunk, so a length the server stated would be wrong.
		common.HeaderMutation = &extprocv3.HeaderMutation{RemoveHeaders: []string{"content-length"}}
	}
	err := x.send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{
		ResponseHeaders: &extprocv3.HeadersResponse{Response: &common}}})
	if h.GetEndOfStream() {
		x.complete(x.s.cfg.Clock.Now())
	}
	return err
}

func (x *exchange) onResponseBody(b *extprocv3.HttpBody) error {
	// The arrival time is read before forwarding, so a Send held up by flow control towards a
	// slow client does not shift the token timestamps.
	now := x.s.cfg.Clock.Now()
	out := b.GetBody()
	if x.stripUsage && x.sse {
		out = x.usageFilter.filter(out, b.GetEndOfStream())
	}
	// Pass the chunk on first: measuring must never delay the client's tokens.
	err := x.send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{
		ResponseBody: &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{
			BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_StreamedResponse{
				StreamedResponse: &extprocv3.StreamedBodyResponse{Body: out, EndOfStream: b.GetEndOfStream()},
			}},
		}},
	}})
	if x.sse {
		hadFirst, hadLast := !x.reader.FirstToken.IsZero(), x.reader.LastToken
		x.reader.Feed(b.GetBody(), now)
		if !hadFirst && !x.reader.FirstToken.IsZero() && x.flight != nil {
			x.flight.FirstToken(x.reader.FirstToken)
		}
		if hadFirst && x.reader.LastToken != hadLast && x.flight != nil {
			x.flight.Generated(x.reader.LastToken, x.reader.CountedTokens())
		}
	} else if !x.respOverflow {
		if len(x.respBody)+len(b.GetBody()) > maxResponseBodyKept {
			x.respOverflow, x.respBody = true, nil // usage is lost, not misread from a cut body
		} else {
			x.respBody = append(x.respBody, b.GetBody()...)
		}
	}
	// Clients close the connection as soon as they read [DONE], often before the gateway sees
	// the end of the body; the response is complete at [DONE] either way.
	if b.GetEndOfStream() || x.reader.Done {
		x.complete(now)
	}
	return err
}

// complete ends a request whose response ended.
func (x *exchange) complete(now time.Time) {
	if x.done || x.flight == nil {
		return
	}
	outcome := requestcontrol.OutcomeOK
	if x.respStatus >= 400 {
		outcome = requestcontrol.OutcomeUpstreamError
	}
	x.end(now, outcome)
}

// finish runs when the stream ends: a routed request that did not complete was cut (the
// client left, or its replica died) and must still release its replica; what was measured of
// its stream is kept, and the lifecycle tells the two causes apart.
func (x *exchange) finish() {
	if x.done || x.flight == nil {
		return
	}
	x.done = true
	now := x.s.cfg.Clock.Now()
	x.flight.Cut(now, x.observed(now), nil)
}

// end hands what the response showed to the lifecycle.
func (x *exchange) end(now time.Time, outcome Outcome) {
	x.done = true
	e := x.observed(now)
	e.Outcome = outcome
	x.flight.End(now, e)
}

// observed is what the response showed until now.
func (x *exchange) observed(now time.Time) requestcontrol.End {
	e := requestcontrol.End{Status: x.respStatus}
	if x.sse {
		x.reader.Close(now)
		e.LastToken, e.OutputTokens = x.reader.LastToken, x.reader.OutputTokens()
		e.Usage, e.HasUsage = requestcontrol.Usage(x.reader.Usage), x.reader.HasUsage
	} else if u, ok := parseCompletionUsage(x.respBody); ok {
		e.Usage, e.HasUsage, e.OutputTokens = requestcontrol.Usage(u), true, u.CompletionTokens
	}
	return e
}

func destination(targets []scheduler.Candidate) string {
	if len(targets) == 1 {
		return targets[0].Endpoint.Address
	}
	var sb strings.Builder
	for i, t := range targets {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(t.Endpoint.Address)
	}
	return sb.String()
}

func setHeader(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: k, RawValue: []byte(v)},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

func lbMetadata(dest string) *structpb.Struct {
	return &structpb.Struct{Fields: map[string]*structpb.Value{
		MetadataLBNamespace: structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
			HeaderDestination: structpb.NewStringValue(dest),
		}}),
	}}
}

// immediateResponse is an error answer in the OpenAI error shape, so OpenAI clients show the
// message.
func immediateResponse(code int, reason, msg string) *extprocv3.ProcessingResponse {
	typ := "invalid_request_error"
	switch {
	case code == 429:
		typ = "rate_limit_exceeded"
	case code >= 500:
		typ = "service_unavailable"
	}
	body, _ := json.Marshal(map[string]any{"error": map[string]any{"message": msg, "type": typ, "code": code}})
	hdrs := []*corev3.HeaderValueOption{setHeader("content-type", "application/json")}
	if reason != "" {
		hdrs = append(hdrs, setHeader(HeaderDroppedReason, reason))
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{
		ImmediateResponse: &extprocv3.ImmediateResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode(code)},
			Headers: &extprocv3.HeaderMutation{SetHeaders: hdrs},
			Body:    body,
			Details: reason,
		},
	}}
}
