// Package envoy_test checks deploy/envoy/envoy.yaml against Envoy's own API
// schema and pins the settings the endpoint-picker protocol depends on.
package envoy_test

import (
	"os"
	"slices"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	headertometadatav3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_to_metadata/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"

	"github.com/augur-llm/augur/local/gateway"
)

const (
	pickerCluster   = "augur-epp"
	upstreamCluster = "original_destination_cluster"
	hcmFilter       = "envoy.filters.network.http_connection_manager"
	extProcFilter   = "envoy.filters.http.ext_proc"
	h2mFilter       = "envoy.filters.http.header_to_metadata"
	routerFilter    = "envoy.filters.http.router"
	h2Options       = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
)

// validator is what protoc-gen-validate generates for every Envoy message.
type validator interface {
	proto.Message
	ValidateAll() error
}

func loadBootstrap(t *testing.T) *bootstrapv3.Bootstrap {
	t.Helper()
	raw, err := os.ReadFile("envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		t.Fatalf("envoy.yaml is not valid YAML: %v", err)
	}
	bs := &bootstrapv3.Bootstrap{}
	// Strict: an unknown or misspelt field fails, as it would in Envoy.
	if err := protojson.Unmarshal(js, bs); err != nil {
		t.Fatalf("envoy.yaml does not match the v3 Bootstrap schema: %v", err)
	}
	if err := bs.ValidateAll(); err != nil {
		t.Fatalf("bootstrap fails validation: %v", err)
	}
	return bs
}

// unpack opens a typed_config and validates it, since Bootstrap validation
// stops at the Any boundary.
func unpack[T validator](t *testing.T, what string, a *anypb.Any, msg T) T {
	t.Helper()
	if a == nil {
		t.Fatalf("%s has no typed_config", what)
	}
	if err := a.UnmarshalTo(msg); err != nil {
		t.Fatalf("%s: typed_config is %s: %v", what, a.GetTypeUrl(), err)
	}
	if err := msg.ValidateAll(); err != nil {
		t.Fatalf("%s fails validation: %v", what, err)
	}
	return msg
}

func httpConnectionManager(t *testing.T, bs *bootstrapv3.Bootstrap) *hcmv3.HttpConnectionManager {
	t.Helper()
	listeners := bs.GetStaticResources().GetListeners()
	if len(listeners) != 1 {
		t.Fatalf("want one listener, got %d", len(listeners))
	}
	var filters []*listenerv3.Filter
	for _, fc := range listeners[0].GetFilterChains() {
		filters = append(filters, fc.GetFilters()...)
	}
	if len(filters) != 1 || filters[0].GetName() != hcmFilter {
		t.Fatalf("want exactly the %s network filter, got %v", hcmFilter, filters)
	}
	return unpack(t, hcmFilter, filters[0].GetTypedConfig(), &hcmv3.HttpConnectionManager{})
}

func cluster(t *testing.T, bs *bootstrapv3.Bootstrap, name string) *clusterv3.Cluster {
	t.Helper()
	for _, c := range bs.GetStaticResources().GetClusters() {
		if c.GetName() == name {
			return c
		}
	}
	t.Fatalf("no cluster %q", name)
	return nil
}

func TestBootstrapIsValid(t *testing.T) {
	bs := loadBootstrap(t)
	hcm := httpConnectionManager(t, bs)
	for _, al := range hcm.GetAccessLog() {
		unpack(t, "access log "+al.GetName(), al.GetTypedConfig(), &streamv3.StdoutAccessLog{})
	}
	if err := hcm.GetRouteConfig().ValidateAll(); err != nil {
		t.Fatal(err)
	}
}

func TestHTTPFilterChain(t *testing.T) {
	hcm := httpConnectionManager(t, loadBootstrap(t))
	var names []string
	for _, f := range hcm.GetHttpFilters() {
		names = append(names, f.GetName())
		switch f.GetName() {
		case extProcFilter:
			unpack(t, f.GetName(), f.GetTypedConfig(), &extprocv3.ExternalProcessor{})
		case h2mFilter:
			unpack(t, f.GetName(), f.GetTypedConfig(), &headertometadatav3.Config{})
		case routerFilter:
			unpack(t, f.GetName(), f.GetTypedConfig(), &routerv3.Router{})
		default:
			t.Errorf("unexpected HTTP filter %s", f.GetName())
		}
	}
	// ext_proc first so it sees the client's request untouched; on the
	// response path filters run in reverse, so header_to_metadata must sit
	// between it and the router to set the served endpoint before ext_proc
	// sends the response headers.
	if want := []string{extProcFilter, h2mFilter, routerFilter}; !slices.Equal(names, want) {
		t.Errorf("HTTP filters = %v, want %v", names, want)
	}
}

func extProc(t *testing.T) *extprocv3.ExternalProcessor {
	t.Helper()
	hcm := httpConnectionManager(t, loadBootstrap(t))
	for _, f := range hcm.GetHttpFilters() {
		if f.GetName() == extProcFilter {
			return unpack(t, f.GetName(), f.GetTypedConfig(), &extprocv3.ExternalProcessor{})
		}
	}
	t.Fatal("no ext_proc filter")
	return nil
}

func TestExtProcFollowsTheContract(t *testing.T) {
	ep := extProc(t)
	pm := ep.GetProcessingMode()
	for name, got := range map[string]any{
		"request_header_mode":   pm.GetRequestHeaderMode(),
		"response_header_mode":  pm.GetResponseHeaderMode(),
		"request_trailer_mode":  pm.GetRequestTrailerMode(),
		"response_trailer_mode": pm.GetResponseTrailerMode(),
	} {
		if got != extprocv3.ProcessingMode_SEND {
			t.Errorf("%s = %v, want SEND", name, got)
		}
	}
	if pm.GetRequestBodyMode() != extprocv3.ProcessingMode_FULL_DUPLEX_STREAMED ||
		pm.GetResponseBodyMode() != extprocv3.ProcessingMode_FULL_DUPLEX_STREAMED {
		t.Errorf("body modes = %v / %v, want FULL_DUPLEX_STREAMED for both",
			pm.GetRequestBodyMode(), pm.GetResponseBodyMode())
	}
	if got := ep.GetGrpcService().GetEnvoyGrpc().GetClusterName(); got != pickerCluster {
		t.Errorf("grpc_service cluster = %q, want %q", got, pickerCluster)
	}
	if ep.GetFailureModeAllow() {
		t.Error("failure_mode_allow must be false: the gateway fails closed")
	}
	if got := ep.GetStatusOnError().GetCode(); got != typev3.StatusCode_ServiceUnavailable {
		t.Errorf("status_on_error = %v, want ServiceUnavailable like the Go gateway", got)
	}
	if d := ep.GetMessageTimeout().AsDuration(); d < 30*time.Second {
		t.Errorf("message_timeout = %v; the picker queues requests, keep it generous", d)
	}
	if !ep.GetAllowContentLengthHeader() {
		t.Error("allow_content_length_header must be true: the picker states Content-Length for rewritten bodies")
	}
	if ep.GetObservabilityMode() || ep.GetAllowModeOverride() || ep.GetDisableImmediateResponse() {
		t.Error("observability_mode, allow_mode_override and disable_immediate_response must stay off")
	}
	mo := ep.GetMetadataOptions()
	for _, ns := range []string{gateway.MetadataNamespaceLB, gateway.MetadataNamespaceSubsetHint} {
		if !slices.Contains(mo.GetForwardingNamespaces().GetUntyped(), ns) {
			t.Errorf("metadata namespace %q is not forwarded to the picker", ns)
		}
	}
	if !slices.Contains(mo.GetReceivingNamespaces().GetUntyped(), gateway.MetadataNamespaceLB) {
		t.Errorf("metadata namespace %q is not accepted from the picker", gateway.MetadataNamespaceLB)
	}
}

func TestServedEndpointReachesThePicker(t *testing.T) {
	bs := loadBootstrap(t)
	hcm := httpConnectionManager(t, bs)
	var rules []*headertometadatav3.Config_Rule
	for _, f := range hcm.GetHttpFilters() {
		if f.GetName() == h2mFilter {
			rules = unpack(t, f.GetName(), f.GetTypedConfig(), &headertometadatav3.Config{}).GetResponseRules()
		}
	}
	if len(rules) != 1 {
		t.Fatalf("want one response rule, got %d", len(rules))
	}
	r := rules[0]
	kv := r.GetOnHeaderPresent()
	if r.GetHeader() != gateway.MetadataKeyServed || kv.GetMetadataNamespace() != gateway.MetadataNamespaceLB ||
		kv.GetKey() != gateway.MetadataKeyServed || kv.GetType() != headertometadatav3.Config_STRING || !r.GetRemove() {
		t.Errorf("response rule = %v", r)
	}
	routes := hcm.GetRouteConfig().GetVirtualHosts()[0].GetRoutes()
	for _, rt := range routes {
		var stamped bool
		for _, h := range rt.GetResponseHeadersToAdd() {
			if h.GetHeader().GetKey() == gateway.MetadataKeyServed && h.GetHeader().GetValue() == "%UPSTREAM_REMOTE_ADDRESS%" {
				stamped = h.GetAppendAction() == corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
			}
		}
		if !stamped {
			t.Errorf("route %v does not overwrite %s with the upstream address", rt.GetMatch(), gateway.MetadataKeyServed)
		}
	}
}

func TestRoutesGoToTheOriginalDestinationCluster(t *testing.T) {
	hcm := httpConnectionManager(t, loadBootstrap(t))
	var routes []*routev3.Route
	for _, vh := range hcm.GetRouteConfig().GetVirtualHosts() {
		routes = append(routes, vh.GetRoutes()...)
	}
	if len(routes) == 0 {
		t.Fatal("no routes")
	}
	for _, r := range routes {
		ra := r.GetRoute()
		if ra.GetCluster() != upstreamCluster {
			t.Errorf("route %v goes to %q, want %q", r.GetMatch(), ra.GetCluster(), upstreamCluster)
		}
		// Envoy's default 15s route timeout would cut long generations.
		if ra.GetTimeout() == nil || ra.GetTimeout().AsDuration() != 0 {
			t.Errorf("route %v timeout = %v, want 0s (disabled)", r.GetMatch(), ra.GetTimeout())
		}
	}
}

func TestOriginalDestinationCluster(t *testing.T) {
	c := cluster(t, loadBootstrap(t), upstreamCluster)
	if c.GetType() != clusterv3.Cluster_ORIGINAL_DST {
		t.Errorf("type = %v, want ORIGINAL_DST", c.GetType())
	}
	if c.GetLbPolicy() != clusterv3.Cluster_CLUSTER_PROVIDED {
		t.Errorf("lb_policy = %v, want CLUSTER_PROVIDED", c.GetLbPolicy())
	}
	od := c.GetOriginalDstLbConfig()
	if !od.GetUseHttpHeader() || od.GetHttpHeaderName() != gateway.HeaderDestinationEndpoint {
		t.Errorf("original_dst_lb_config = %v, want use_http_header with %s", od, gateway.HeaderDestinationEndpoint)
	}
	if od.GetMetadataKey() != nil {
		t.Error("metadata_key would take precedence over the header in Envoy; the contract routes on the header")
	}
	if c.GetLoadAssignment() != nil {
		t.Error("ORIGINAL_DST clusters must not have a load assignment")
	}
}

func TestPickerClusterSpeaksHTTP2(t *testing.T) {
	c := cluster(t, loadBootstrap(t), pickerCluster)
	opts := unpack(t, h2Options, c.GetTypedExtensionProtocolOptions()[h2Options], &upstreamhttpv3.HttpProtocolOptions{})
	if opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
		t.Error("gRPC needs HTTP/2 to the picker")
	}
	var ports []uint32
	for _, le := range c.GetLoadAssignment().GetEndpoints() {
		for _, ep := range le.GetLbEndpoints() {
			ports = append(ports, ep.GetEndpoint().GetAddress().GetSocketAddress().GetPortValue())
		}
	}
	if !slices.Equal(ports, []uint32{9002}) {
		t.Errorf("picker ports = %v, want [9002]", ports)
	}
}
