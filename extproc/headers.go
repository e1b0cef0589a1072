package extproc

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// Header and metadata names of the endpoint-picker protocol.
const (
	HeaderDestination       = "x-gateway-destination-endpoint"
	HeaderDroppedReason     = "x-llm-d-request-dropped-reason"
	HeaderRequestID         = "x-request-id"
	HeaderSessionID         = "x-session-id"
	MetadataLBNamespace     = "envoy.lb"
	MetadataSubsetNamespace = "envoy.lb.subset_hint"
	MetadataSubsetKey       = "x-gateway-destination-endpoint-subset"
	MetadataServedKey       = "x-gateway-destination-endpoint-served"

	// DefaultFairnessID is the flow of requests that name none.
	DefaultFairnessID = "default-flow"
)

// Request headers with their accepted names: the Gateway API name first, then llm-d's.
var (
	headersSLOTTFT    = []string{"x-slo-ttft-ms", "x-llm-d-slo-ttft-ms"}
	headersSLOTPOT    = []string{"x-slo-tpot-ms", "x-llm-d-slo-tpot-ms"}
	headersObjective  = []string{"x-gateway-inference-objective", "x-llm-d-inference-objective"}
	headersFairnessID = []string{"x-gateway-inference-fairness-id", "x-llm-d-inference-fairness-id"}
)

// maxSLO bounds SLO headers: an objective beyond an hour is a client error, not a latency goal.
const maxSLO = time.Hour

// headerValue returns a header's value as Envoy sends it (raw_value, or value from older
// versions).
func headerValue(h *corev3.HeaderValue) string {
	if rv := h.GetRawValue(); len(rv) > 0 {
		return string(rv)
	}
	return h.GetValue()
}

// requestHeaders is what the picker reads from the request-headers phase.
type requestHeaders struct {
	path       string
	requestID  string
	sessionID  string
	objective  string
	fairnessID string
	sloTTFT    time.Duration
	sloTPOT    time.Duration
}

// readHeaders extracts the picker's inputs from Envoy's header map. Errors are client errors.
func readHeaders(hm *corev3.HeaderMap) (requestHeaders, error) {
	var rh requestHeaders
	var ttft, tpot, objective, fairness string
	var ttftName, tpotName string
	// A repeated SLO header must repeat the same value: proxies and clients that append a
	// header instead of replacing it would otherwise have the last value silently win.
	var conflict error
	for _, h := range hm.GetHeaders() {
		k := strings.ToLower(h.GetKey())
		switch k {
		case ":path":
			rh.path = headerValue(h)
		case HeaderRequestID:
			rh.requestID = headerValue(h)
		case HeaderSessionID:
			rh.sessionID = headerValue(h)
		default:
			if prev := ttftName; pick(k, headersSLOTTFT, &ttftName) {
				ttft = repeatedSLO(k, prev, ttft, headerValue(h), &conflict)
			} else if prev := tpotName; pick(k, headersSLOTPOT, &tpotName) {
				tpot = repeatedSLO(k, prev, tpot, headerValue(h), &conflict)
			} else if i := indexOf(headersObjective, k); i >= 0 && (objective == "" || i == 0) {
				objective = headerValue(h)
			} else if i := indexOf(headersFairnessID, k); i >= 0 && (fairness == "" || i == 0) {
				fairness = headerValue(h)
			}
		}
	}
	if conflict != nil {
		return rh, conflict
	}
	var err error
	if ttftName != "" {
		if rh.sloTTFT, err = parseSLO(ttftName, ttft); err != nil {
			return rh, err
		}
	}
	if tpotName != "" {
		if rh.sloTPOT, err = parseSLO(tpotName, tpot); err != nil {
			return rh, err
		}
	}
	rh.objective = objective
	rh.fairnessID = fairness
	if rh.fairnessID == "" {
		rh.fairnessID = DefaultFairnessID
	}
	return rh, nil
}

// pick reports whether k is one of names and records which; the standard name wins over the
// alias when a client sends both.
func pick(k string, names []string, chosen *string) bool {
	i := indexOf(names, k)
	if i < 0 {
		return false
	}
	if *chosen == names[0] && i != 0 {
		return false
	}
	*chosen = k
	return true
}

// repeatedSLO returns the value v of SLO header k, which already had the value prev when the
// header chosen so far, prevName, is k itself. Two different values are a conflict, recorded
// in *conflict (the first one wins); values that differ only in surrounding spaces, or parse to
// the same duration, are the same objective.
func repeatedSLO(k, prevName, prev, v string, conflict *error) string {
	if prevName != k || *conflict != nil {
		return v
	}
	if a, b := strings.TrimSpace(prev), strings.TrimSpace(v); a != b {
		da, errA := parseSLO(k, a)
		db, errB := parseSLO(k, b)
		if errA != nil || errB != nil || da != db {
			*conflict = bodyErrorf("header %s: sent more than once with different values %q and %q; send it once", k, truncate(a, 64), truncate(b, 64))
		}
	}
	return v
}

func indexOf(list []string, s string) int {
	for i, v := range list {
		if v == s {
			return i
		}
	}
	return -1
}

// parseSLO parses an SLO header: a positive number of milliseconds, at most an hour.
func parseSLO(name, v string) (time.Duration, error) {
	s := strings.TrimSpace(v)
	ms, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(ms) || math.IsInf(ms, 0) {
		return 0, bodyErrorf("header %s: %q is not a number of milliseconds", name, truncate(v, 64))
	}
	if ms <= 0 || ms > float64(maxSLO/time.Millisecond) {
		return 0, bodyErrorf("header %s: %s ms is out of range; it must be more than 0 and at most %d", name, truncate(s, 64), maxSLO/time.Millisecond)
	}
	return time.Duration(ms * float64(time.Millisecond)), nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// subsetHint returns the gateway's subset hint: nil when absent, possibly empty when present.
func subsetHint(md *corev3.Metadata) ([]string, error) {
	ns, ok := md.GetFilterMetadata()[MetadataSubsetNamespace]
	if !ok {
		return nil, nil
	}
	v, ok := ns.GetFields()[MetadataSubsetKey]
	if !ok {
		return nil, nil
	}
	list := v.GetListValue()
	if list == nil {
		return nil, fmt.Errorf("subset hint %s is not a list", MetadataSubsetKey)
	}
	out := make([]string, 0, len(list.GetValues()))
	for _, e := range list.GetValues() {
		out = append(out, e.GetStringValue())
	}
	return out, nil
}

// servedEndpoint returns the endpoint the gateway reports as having served the request.
func servedEndpoint(md *corev3.Metadata) string {
	ns, ok := md.GetFilterMetadata()[MetadataLBNamespace]
	if !ok {
		return ""
	}
	return ns.GetFields()[MetadataServedKey].GetStringValue()
}
