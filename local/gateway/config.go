package gateway

import (
	"errors"
	"log/slog"
	"net/http"
	"time"
)

// Names fixed by the endpoint-picker protocol.
const (
	// HeaderDestinationEndpoint carries the picked endpoint(s), "ip:port" or
	// "ip:port,ip:port,..." with the primary first.
	HeaderDestinationEndpoint = "x-gateway-destination-endpoint"
	// MetadataNamespaceLB is the dynamic-metadata namespace the picker writes
	// its decision into and the gateway reports the served endpoint in.
	MetadataNamespaceLB = "envoy.lb"
	// MetadataKeyDestination holds the picked endpoint(s) inside MetadataNamespaceLB.
	MetadataKeyDestination = "x-gateway-destination-endpoint"
	// MetadataKeyServed holds the endpoint that actually served the request
	// inside MetadataNamespaceLB, on response-path messages.
	MetadataKeyServed = "x-gateway-destination-endpoint-served"
	// MetadataNamespaceSubsetHint is where a data plane may restrict the
	// endpoints the picker may choose from.
	MetadataNamespaceSubsetHint = "envoy.lb.subset_hint"
	// MetadataKeySubset lists the allowed "ip:port" endpoints inside
	// MetadataNamespaceSubsetHint.
	MetadataKeySubset = "x-gateway-destination-endpoint-subset"
)

// Defaults applied by New to zero Config fields.
const (
	// DefaultMessageTimeout is generous because the picker legitimately holds
	// the answer to the request headers while the request waits in its queue.
	DefaultMessageTimeout = 2 * time.Minute
	// DefaultConnectTimeout matches Envoy's default cluster connect_timeout.
	DefaultConnectTimeout = 5 * time.Second
	// DefaultMaxRequestBodyBytes bounds what one client may make the gateway
	// stream to the picker.
	DefaultMaxRequestBodyBytes = 32 << 20
	// DefaultReadHeaderTimeout bounds how long a client may take to send its
	// request headers.
	DefaultReadHeaderTimeout = 30 * time.Second
	// DefaultShutdownTimeout bounds the graceful drain of in-flight requests.
	DefaultShutdownTimeout = 30 * time.Second
)

// Config configures a Gateway. The zero value of every duration or size field
// means "use the default"; fields documented as disabled by a negative value
// accept one.
type Config struct {
	// Listen is the address ListenAndServe binds, e.g. "127.0.0.1:8080".
	Listen string
	// Picker is the gRPC address of the endpoint picker's ext_proc service,
	// e.g. "127.0.0.1:9002". Required. The connection is plaintext HTTP/2
	// unless PickerTLS is set.
	Picker string
	// PickerTLS, when set, makes the picker connection TLS (optionally
	// mutual), as Envoy can reach an ext_proc service over TLS.
	PickerTLS *PickerTLS

	// MessageTimeout bounds how long the gateway waits for the picker while it
	// is owed an answer that completes a phase: the answer to the request
	// headers (counted from the last request message sent), the end of the
	// replayed request body, the answer to the response headers and the end of
	// the echoed response body. Any message from the picker restarts the
	// clock. On expiry the client gets 504, as from Envoy's ext_proc filter.
	MessageTimeout time.Duration
	// ConnectTimeout bounds establishing the TCP connection to one upstream
	// endpoint; a failure moves on to the next fallback endpoint.
	ConnectTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for the upstream's response
	// headers once the request has been sent. Zero or negative disables it:
	// prefill of a long prompt on a loaded server can take minutes.
	ResponseHeaderTimeout time.Duration
	// MaxRequestBodyBytes is the largest request body accepted; larger ones
	// are answered with 413. Negative disables the limit.
	MaxRequestBodyBytes int64
	// ReadHeaderTimeout is the downstream server's limit for reading request
	// headers. Negative disables it.
	ReadHeaderTimeout time.Duration
	// ShutdownTimeout bounds how long Serve waits for in-flight requests after
	// its context is cancelled before closing their connections.
	ShutdownTimeout time.Duration

	// SubsetHint, when set, is asked for every request; when it reports ok the
	// gateway sends the endpoints as
	// metadata_context["envoy.lb.subset_hint"]["x-gateway-destination-endpoint-subset"],
	// the way a data plane restricts the picker to a subset.
	SubsetHint func(r *http.Request) (endpoints []string, ok bool)

	// Logger receives the gateway's logs. Nil means slog.Default().
	Logger *slog.Logger
}

func (c Config) withDefaults() (Config, error) {
	if c.Picker == "" {
		return c, errors.New("gateway: picker address is required")
	}
	if c.MessageTimeout <= 0 {
		c.MessageTimeout = DefaultMessageTimeout
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.ResponseHeaderTimeout < 0 {
		c.ResponseHeaderTimeout = 0
	}
	if c.MaxRequestBodyBytes == 0 {
		c.MaxRequestBodyBytes = DefaultMaxRequestBodyBytes
	}
	switch {
	case c.ReadHeaderTimeout == 0:
		c.ReadHeaderTimeout = DefaultReadHeaderTimeout
	case c.ReadHeaderTimeout < 0:
		c.ReadHeaderTimeout = 0
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}
