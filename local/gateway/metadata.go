package gateway

import (
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// metadataStore is the per-request dynamic metadata, limited to what the
// Envoy bootstrap lets through: the envoy.lb namespace is received from the
// picker and forwarded back to it, envoy.lb.subset_hint is forwarded.
// Snapshots are deep copies because request and response messages are built
// on different goroutines while the receiver keeps merging.
type metadataStore struct {
	mu     sync.Mutex
	lb     *structpb.Struct
	subset *structpb.Struct
}

// receive merges the picker's dynamic_metadata, whose top-level keys are
// namespaces, and returns the namespaces it refused.
func (m *metadataStore) receive(dm *structpb.Struct) (refused []string) {
	if dm == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for ns, v := range dm.GetFields() {
		s := v.GetStructValue()
		if ns != MetadataNamespaceLB || s == nil {
			refused = append(refused, ns)
			continue
		}
		if m.lb == nil {
			m.lb = &structpb.Struct{Fields: map[string]*structpb.Value{}}
		}
		for k, fv := range s.GetFields() {
			m.lb.Fields[k] = proto.Clone(fv).(*structpb.Value)
		}
	}
	return refused
}

func (m *metadataStore) setServed(endpoint string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.lb == nil {
		m.lb = &structpb.Struct{Fields: map[string]*structpb.Value{}}
	}
	m.lb.Fields[MetadataKeyServed] = structpb.NewStringValue(endpoint)
}

func (m *metadataStore) setSubset(endpoints []string) {
	list := make([]*structpb.Value, 0, len(endpoints))
	for _, e := range endpoints {
		list = append(list, structpb.NewStringValue(e))
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.subset = &structpb.Struct{Fields: map[string]*structpb.Value{
		MetadataKeySubset: structpb.NewListValue(&structpb.ListValue{Values: list}),
	}}
}

// destination returns the picked endpoint(s) the picker put in envoy.lb.
func (m *metadataStore) destination() (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.lb.GetFields()[MetadataKeyDestination]
	if !ok {
		return "", false
	}
	if _, isString := v.GetKind().(*structpb.Value_StringValue); !isString {
		return "", false
	}
	return v.GetStringValue(), true
}

// context returns the metadata_context for the next message, or nil when
// there is nothing to forward.
func (m *metadataStore) context() *corev3.Metadata {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.lb == nil && m.subset == nil {
		return nil
	}
	md := &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{}}
	if m.lb != nil {
		md.FilterMetadata[MetadataNamespaceLB] = proto.Clone(m.lb).(*structpb.Struct)
	}
	if m.subset != nil {
		md.FilterMetadata[MetadataNamespaceSubsetHint] = proto.Clone(m.subset).(*structpb.Struct)
	}
	return md
}
