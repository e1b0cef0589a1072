package gateway

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// Gateway is an http.Handler that processes each request with the picker
// over ext_proc and proxies it to the endpoint the picker chose. It is safe
// for concurrent use; one gRPC connection to the picker is shared by all
// requests, each of which opens its own Process stream on it.
type Gateway struct {
	cfg       Config
	log       *slog.Logger
	conn      *grpc.ClientConn
	client    extprocv3.ExternalProcessorClient
	transport *http.Transport
	// drainGrace is a field so tests can lengthen it; see the constant.
	drainGrace time.Duration
}

// New validates cfg, fills in defaults and prepares the picker connection.
// It does not dial: gRPC connects lazily, so a picker that is down at start
// only fails the requests made while it is down.
func New(cfg Config) (*Gateway, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	recvLimit := 64 << 20
	if cfg.MaxRequestBodyBytes > 0 && cfg.MaxRequestBodyBytes+1<<20 > int64(recvLimit) {
		// A picker may replay a rewritten body as one message.
		recvLimit = int(cfg.MaxRequestBodyBytes + 1<<20)
	}
	creds := insecure.NewCredentials()
	if cfg.PickerTLS != nil {
		tc, err := cfg.PickerTLS.clientConfig()
		if err != nil {
			return nil, err
		}
		if tc.InsecureSkipVerify {
			cfg.Logger.Warn("the picker's TLS certificate is not verified (insecure skip verify)", "picker", cfg.Picker)
		}
		creds = credentials.NewTLS(tc)
	}
	conn, err := grpc.NewClient(cfg.Picker,
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(recvLimit)),
		// gRPC's default reconnect backoff grows to two minutes; a local
		// picker that restarts should be picked up again within seconds.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  100 * time.Millisecond,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   2 * time.Second,
			},
			MinConnectTimeout: cfg.ConnectTimeout,
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("gateway: picker client for %q: %w", cfg.Picker, err)
	}
	dialer := &net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: 30 * time.Second}
	transport := &http.Transport{
		// Never route through a proxy from the environment: the upstream is
		// exactly the endpoint the picker named.
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, &dialError{addr: addr, err: err}
			}
			return c, nil
		},
		// HTTP/1.1 only, like the Envoy cluster, and no transparent gzip:
		// the picker must see the bytes the model server sent.
		ForceAttemptHTTP2:     false,
		TLSNextProto:          map[string]func(string, *tls.Conn) http.RoundTripper{},
		DisableCompression:    true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: cfg.ResponseHeaderTimeout,
	}
	return &Gateway{
		cfg:        cfg,
		log:        cfg.Logger,
		conn:       conn,
		client:     extprocv3.NewExternalProcessorClient(conn),
		transport:  transport,
		drainGrace: drainGrace,
	}, nil
}

// Close releases the picker connection and idle upstream connections. It
// does not wait for in-flight requests; Serve does that on shutdown.
func (g *Gateway) Close() error {
	g.transport.CloseIdleConnections()
	if err := g.conn.Close(); err != nil {
		return fmt.Errorf("gateway: close picker connection: %w", err)
	}
	return nil
}

// ServeHTTP processes one request with the picker and proxies it.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	x := g.newExchange(w, r)
	x.run()
	x.finish()
	if x.aborted {
		// The response has started, so the only honest signal left is to
		// cut the connection, as Envoy resets the downstream stream.
		panic(http.ErrAbortHandler)
	}
}

// ListenAndServe listens on Config.Listen and serves until ctx is cancelled.
func (g *Gateway) ListenAndServe(ctx context.Context) error {
	if g.cfg.Listen == "" {
		return errors.New("gateway: listen address is required")
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", g.cfg.Listen)
	if err != nil {
		return fmt.Errorf("gateway: listen on %s: %w", g.cfg.Listen, err)
	}
	return g.Serve(ctx, ln)
}

// Serve serves HTTP/1.1 on ln until ctx is cancelled, then stops accepting,
// lets in-flight requests finish for up to Config.ShutdownTimeout and closes
// what is left. It returns nil after a shutdown caused by ctx.
func (g *Gateway) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           g,
		ReadHeaderTimeout: g.cfg.ReadHeaderTimeout,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	g.log.Info("gateway listening", "addr", ln.Addr().String(), "picker", g.cfg.Picker, "picker_tls", g.cfg.PickerTLS != nil)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("gateway: serve: %w", err)
	case <-ctx.Done():
	}
	g.log.Info("gateway shutting down", "grace", g.cfg.ShutdownTimeout)
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.cfg.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(shutdownCtx)
	if err != nil {
		// Streams still running past the grace period are cut.
		_ = srv.Close()
		err = fmt.Errorf("gateway: graceful shutdown: %w", err)
	}
	if serveErr := <-served; serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) && err == nil {
		err = fmt.Errorf("gateway: serve: %w", serveErr)
	}
	return err
}

// dialError marks a failure to establish the upstream connection, the only
// failure after which the next fallback endpoint is tried.
type dialError struct {
	addr string
	err  error
}

func (e *dialError) Error() string { return "connect to " + e.addr + ": " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// writeError sends the gateway's own error body, shaped like an OpenAI error
// so clients of the inference API can parse it.
func writeError(w http.ResponseWriter, code int, message string) {
	body := errorBody(code, message)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

func errorBody(code int, message string) []byte {
	type detail struct {
		Message string `json:"message"`
		Type    string `json:"type"`
		Code    int    `json:"code"`
	}
	b, _ := json.Marshal(struct {
		Error detail `json:"error"`
	}{detail{Message: message, Type: "gateway_error", Code: code}})
	return b
}
