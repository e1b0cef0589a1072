// Command gateway is a local stand-in for Envoy in front of Augur's endpoint
// picker: it sends every request through the picker over ext_proc, the way
// deploy/envoy/envoy.yaml configures Envoy, and proxies it to the endpoint
// the picker chose. See docs/gateway.md for where it differs from Envoy.
//
// Usage:
//
//	gateway --listen 127.0.0.1:8080 --picker 127.0.0.1:9002
//	gateway --picker epp.example:9002 --picker-ca ca.pem --picker-cert gw.pem --picker-key gw-key.pem
//
// SIGINT or SIGTERM stops accepting connections and lets in-flight requests
// finish for up to --shutdown-timeout.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/augur-llm/augur/local/gateway"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8080", "HTTP listen address")
	picker := fs.String("picker", "127.0.0.1:9002", "endpoint picker ext_proc gRPC address")
	messageTimeout := fs.Duration("message-timeout", gateway.DefaultMessageTimeout,
		"longest picker silence while the gateway waits for an answer that completes a phase (504 after it)")
	connectTimeout := fs.Duration("connect-timeout", gateway.DefaultConnectTimeout,
		"timeout for connecting to one upstream endpoint before trying the next fallback")
	responseHeaderTimeout := fs.Duration("response-header-timeout", 0,
		"timeout for the upstream's response headers after the request was sent (0 disables)")
	maxBody := fs.Int64("max-request-body", gateway.DefaultMaxRequestBodyBytes,
		"largest accepted request body in bytes (negative disables the limit)")
	readHeaderTimeout := fs.Duration("read-header-timeout", gateway.DefaultReadHeaderTimeout,
		"timeout for reading a client's request headers (negative disables)")
	shutdownTimeout := fs.Duration("shutdown-timeout", gateway.DefaultShutdownTimeout,
		"grace period for in-flight requests on SIGINT/SIGTERM")
	tlsOn := fs.Bool("picker-tls", false,
		"connect to the picker over TLS, verified against the system roots unless --picker-ca is given")
	tlsCA := fs.String("picker-ca", "", "PEM file of the CAs trusted to sign the picker's certificate (implies --picker-tls)")
	tlsCert := fs.String("picker-cert", "", "PEM client certificate for mutual TLS with the picker, with --picker-key (implies --picker-tls)")
	tlsKey := fs.String("picker-key", "", "PEM private key of --picker-cert (implies --picker-tls)")
	tlsServerName := fs.String("picker-server-name", "",
		"name the picker's certificate must carry, also sent as SNI (default: the host of --picker; implies --picker-tls)")
	tlsInsecure := fs.Bool("picker-insecure-skip-verify", false,
		"accept any picker certificate, for local testing only (implies --picker-tls)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "json", "json or text")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	var handler slog.Handler
	switch *logFormat {
	case "json":
		handler = slog.NewJSONHandler(os.Stderr, opts)
	case "text":
		handler = slog.NewTextHandler(os.Stderr, opts)
	default:
		return fmt.Errorf("--log-format: want json or text, got %q", *logFormat)
	}
	log := slog.New(handler)

	gw, err := gateway.New(gateway.Config{
		Listen:                *listen,
		Picker:                *picker,
		PickerTLS:             pickerTLS(*tlsOn, *tlsCA, *tlsCert, *tlsKey, *tlsServerName, *tlsInsecure),
		MessageTimeout:        *messageTimeout,
		ConnectTimeout:        *connectTimeout,
		ResponseHeaderTimeout: *responseHeaderTimeout,
		MaxRequestBodyBytes:   *maxBody,
		ReadHeaderTimeout:     *readHeaderTimeout,
		ShutdownTimeout:       *shutdownTimeout,
		Logger:                log,
	})
	if err != nil {
		return err
	}
	defer func() {
		if err := gw.Close(); err != nil {
			log.Warn("closing the gateway", "error", err)
		}
	}()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := gw.ListenAndServe(ctx); err != nil {
		return err
	}
	log.Info("gateway stopped")
	return nil
}

// pickerTLS returns the TLS settings the flags ask for, or nil for a
// plaintext picker connection. Any TLS flag turns TLS on: a CA file that was
// given but silently unused would leave an operator believing the picker is
// authenticated.
func pickerTLS(on bool, ca, cert, key, serverName string, insecureSkipVerify bool) *gateway.PickerTLS {
	if !on && ca == "" && cert == "" && key == "" && serverName == "" && !insecureSkipVerify {
		return nil
	}
	return &gateway.PickerTLS{
		CAFile:             ca,
		CertFile:           cert,
		KeyFile:            key,
		ServerName:         serverName,
		InsecureSkipVerify: insecureSkipVerify,
	}
}
