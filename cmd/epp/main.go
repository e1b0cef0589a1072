// Command epp is Augur's endpoint picker: the ext_proc gRPC server a gateway asks, for every
// request, which model-server replica should serve it.
//
// Usage:
//
//	epp --config epp.yaml
//	epp --endpoints endpoints.yaml --grpc-addr 0.0.0.0:9002 --metrics-addr 0.0.0.0:9090
//
// Flags override the configuration file.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/augur-llm/augur/picker"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "epp:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("epp", flag.ContinueOnError)
	configPath := fs.String("config", "", "YAML configuration file")
	endpoints := fs.String("endpoints", "", "endpoint file (overrides the config's endpointsFile)")
	grpcAddr := fs.String("grpc-addr", "", "ext_proc gRPC listen address (default "+picker.DefaultGRPCAddress+")")
	metricsAddr := fs.String("metrics-addr", "", "Prometheus /metrics listen address (default "+picker.DefaultMetricsAddress+"; \"off\" disables)")
	scrape := fs.Duration("scrape-interval", 0, "replica /metrics scrape interval (default 50ms)")
	dbURL := fs.String("database-url", os.Getenv("AUGUR_DATABASE_URL"), "Postgres URL every routed request is recorded to (default $AUGUR_DATABASE_URL; empty records nothing)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))

	// Flags override the file, at start and on every reload of it.
	override := func(cfg *picker.Config) {
		if *endpoints != "" {
			cfg.EndpointsFile, cfg.Endpoints = *endpoints, nil
		}
		if *grpcAddr != "" {
			cfg.GRPCAddress = *grpcAddr
		}
		if *metricsAddr != "" {
			cfg.MetricsAddress = *metricsAddr
		}
		if cfg.MetricsAddress == "" {
			cfg.MetricsAddress = picker.DefaultMetricsAddress
		}
		if *scrape > 0 {
			cfg.ScrapeInterval.Duration = *scrape
		}
		if *dbURL != "" {
			cfg.DatabaseURL = *dbURL
		}
	}
	var cfg picker.Config
	if *configPath != "" {
		var err error
		if cfg, err = picker.LoadConfig(*configPath); err != nil {
			return err
		}
	}
	override(&cfg)
	p, err := picker.New(cfg, picker.Options{Log: log})
	if err != nil {
		return err
	}
	cfg = p.Config()
	glis, err := net.Listen("tcp", cfg.GRPCAddress)
	if err != nil {
		return fmt.Errorf("listen grpc: %w", err)
	}
	var mlis net.Listener
	if cfg.MetricsAddress != "off" {
		if mlis, err = net.Listen("tcp", cfg.MetricsAddress); err != nil {
			return fmt.Errorf("listen metrics: %w", err)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *configPath != "" {
		// A valid edit of the file applies to new requests; an invalid one is logged and counted.
		go p.WatchConfig(ctx, *configPath, 0, override)
	}
	start := time.Now()
	err = p.Serve(ctx, glis, mlis)
	log.Info("picker stopped", "uptime", time.Since(start).Round(time.Second).String())
	return err
}
