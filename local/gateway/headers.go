package gateway

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"golang.org/x/net/http/httpguts"
)

// headerList holds headers the way Envoy's header map presents them to an
// external processor: lower-case names, pseudo-headers first, and a repeated
// header as separate entries rather than one joined value.
type headerList []headerField

type headerField struct {
	name, value string
}

func (h headerList) get(name string) (string, bool) {
	for _, f := range h {
		if f.name == name {
			return f.value, true
		}
	}
	return "", false
}

func (h *headerList) del(name string) {
	*h = slices.DeleteFunc(*h, func(f headerField) bool { return f.name == name })
}

// set replaces every value of name, keeping the position of the first one so
// the order stays stable across mutations.
func (h *headerList) set(name, value string) {
	for i, f := range *h {
		if f.name == name {
			(*h)[i].value = value
			rest := (*h)[i+1:]
			*h = append((*h)[:i+1], slices.DeleteFunc(rest, func(f headerField) bool { return f.name == name })...)
			return
		}
	}
	h.add(name, value)
}

func (h *headerList) add(name, value string) {
	*h = append(*h, headerField{name: name, value: value})
}

func (h headerList) proto() *corev3.HeaderMap {
	m := &corev3.HeaderMap{Headers: make([]*corev3.HeaderValue, 0, len(h))}
	for _, f := range h {
		m.Headers = append(m.Headers, &corev3.HeaderValue{Key: f.name, RawValue: []byte(f.value)})
	}
	return m
}

// hopByHop lists headers that describe one connection rather than the
// message, which a proxy neither forwards nor shows to the processor.
var hopByHop = map[string]bool{
	"connection":          true,
	"proxy-connection":    true,
	"keep-alive":          true,
	"transfer-encoding":   true,
	"te":                  true,
	"trailer":             true,
	"upgrade":             true,
	"proxy-authenticate":  true,
	"proxy-authorization": true,
	// The proxy answers 100-continue itself, as Envoy does by default.
	"expect": true,
}

// appendHTTPHeader adds an http.Header in a deterministic order, dropping
// hop-by-hop headers and any header the Connection header names.
func (h *headerList) appendHTTPHeader(src http.Header) {
	dropped := map[string]bool{}
	for _, v := range src.Values("Connection") {
		for _, name := range strings.Split(v, ",") {
			if name = strings.ToLower(strings.TrimSpace(name)); name != "" {
				dropped[name] = true
			}
		}
	}
	names := make([]string, 0, len(src))
	for k := range src {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		name := strings.ToLower(k)
		if hopByHop[name] || dropped[name] || name == "host" {
			continue
		}
		for _, v := range src[k] {
			h.add(name, v)
		}
	}
}

// httpHeader returns the regular headers for a Go request or response; the
// pseudo-headers, Host and Content-Length travel in dedicated fields there.
func (h headerList) httpHeader() http.Header {
	out := make(http.Header, len(h))
	for _, f := range h {
		if strings.HasPrefix(f.name, ":") || f.name == "host" || f.name == "content-length" || hopByHop[f.name] {
			continue
		}
		out.Add(f.name, f.value)
	}
	return out
}

// requestHeaders builds what Envoy's HTTP connection manager hands to the
// ext_proc filter for an HTTP/1.1 request: the four request pseudo-headers,
// the client's headers, x-forwarded-proto, and a generated x-request-id when
// the client sent none.
func requestHeaders(r *http.Request) headerList {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	path := r.RequestURI
	if path == "" || !strings.HasPrefix(path, "/") {
		path = r.URL.RequestURI()
	}
	h := headerList{
		{":method", r.Method},
		{":path", path},
		{":authority", r.Host},
		{":scheme", scheme},
	}
	h.appendHTTPHeader(r.Header)
	if _, ok := h.get("x-forwarded-proto"); !ok {
		h.add("x-forwarded-proto", scheme)
	}
	if id, ok := h.get("x-request-id"); !ok || id == "" {
		h.set("x-request-id", newRequestID())
	}
	return h
}

// responseHeaders builds the response-headers message content: ":status"
// followed by the upstream's headers, with Content-Length restated from the
// parsed length because Go may have consumed it.
func responseHeaders(status int, header http.Header, contentLength int64) headerList {
	h := headerList{{":status", strconv.Itoa(status)}}
	h.appendHTTPHeader(header)
	h.del("content-length")
	if contentLength >= 0 {
		h.add("content-length", strconv.FormatInt(contentLength, 10))
	}
	return h
}

// trailerList turns trailers into the list form, skipping keys that were
// announced but never received a value.
func trailerList(t http.Header) headerList {
	var h headerList
	h.appendHTTPHeader(t)
	return h
}

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// mutationRules mirrors Envoy's default HeaderMutationRules: a processor may
// change anything except the routing-sensitive :method, :authority, :scheme
// and host, and the proxy's own x-envoy-* headers, and may not remove
// pseudo-headers or host. Local replies are built with everything allowed.
type mutationRules struct {
	allowAll bool
}

var (
	errInvalidMutation = errors.New("invalid header mutation")
)

// applyMutation applies a picker's header mutation with Envoy's semantics and
// returns the names it ignored because the rules forbid touching them. An
// error means Envoy would reject the whole response as a processing failure.
func applyMutation(h *headerList, m *extprocv3.HeaderMutation, rules mutationRules) (ignored []string, err error) {
	if m == nil {
		return nil, nil
	}
	for _, name := range m.GetRemoveHeaders() {
		if !validHeaderName(name) {
			return ignored, fmt.Errorf("%w: remove_headers has invalid name %q", errInvalidMutation, name)
		}
		name = strings.ToLower(name)
		if !rules.allowAll && (strings.HasPrefix(name, ":") || name == "host") {
			ignored = append(ignored, name)
			continue
		}
		h.del(name)
	}
	for _, opt := range m.GetSetHeaders() {
		hv := opt.GetHeader()
		if hv == nil {
			continue
		}
		if hv.GetValue() != "" && len(hv.GetRawValue()) > 0 {
			return ignored, fmt.Errorf("%w: header %q sets both value and raw_value", errInvalidMutation, hv.GetKey())
		}
		name := strings.ToLower(hv.GetKey())
		// Envoy reads only raw_value from an ext_proc mutation; a picker that
		// fills value instead gets an empty header there, and must get one
		// here too or the bug would only show up in production.
		value := string(hv.GetRawValue())
		if !validHeaderName(name) || !httpguts.ValidHeaderFieldValue(value) {
			return ignored, fmt.Errorf("%w: invalid header %q", errInvalidMutation, name)
		}
		if !rules.allowAll && mutationForbidden(name) {
			ignored = append(ignored, name)
			continue
		}
		if name == ":status" {
			if code, err := strconv.Atoi(value); err != nil || code < 100 || code > 599 {
				return ignored, fmt.Errorf("%w: :status %q", errInvalidMutation, value)
			}
		}
		if opt.GetAppend().GetValue() {
			h.add(name, value)
		} else {
			h.set(name, value)
		}
	}
	return ignored, nil
}

// splitPseudo separates pseudo-header names from the others, keeping order.
func splitPseudo(names []string) (pseudo, other []string) {
	for _, n := range names {
		if strings.HasPrefix(n, ":") {
			pseudo = append(pseudo, n)
		} else {
			other = append(other, n)
		}
	}
	return pseudo, other
}

func mutationForbidden(name string) bool {
	switch name {
	case ":method", ":authority", ":scheme", "host":
		return true
	}
	return strings.HasPrefix(name, "x-envoy")
}

func validHeaderName(name string) bool {
	if strings.HasPrefix(name, ":") {
		name = name[1:]
	}
	return httpguts.ValidHeaderFieldName(name)
}

// rawValueMisuse names headers a mutation set through the value field only;
// Envoy ignores that field, so the picker almost certainly has a bug.
func rawValueMisuse(m *extprocv3.HeaderMutation) []string {
	var names []string
	for _, opt := range m.GetSetHeaders() {
		if hv := opt.GetHeader(); hv != nil && hv.GetValue() != "" && len(hv.GetRawValue()) == 0 {
			names = append(names, hv.GetKey())
		}
	}
	return names
}
