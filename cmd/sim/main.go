package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"k8s.io/utils/clock"

	"github.com/augur-llm/augur/windtunnel/sim"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr, nil); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "sim:", err)
		os.Exit(1)
	}
}

// options are the command-line flags.
type options struct {
	replicas        int
	host            string
	basePort        int
	profile         string
	model           string
	seed            uint64
	streamInterval  int
	tokenText       sim.TokenText
	timeScale       float64
	noPrefixCaching bool
	logLevel        slog.Level
	shutdownTimeout time.Duration

	// Overrides of the chosen profile; zero keeps the profile's value.
	maxNumSeqs, maxNumBatchedTokens, numGPUBlocks, maxModelLen int
	t0, tw, kLin, kKV, kAtt, jitter                            float64
}

func parseFlags(args []string, out io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("sim", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.IntVar(&o.replicas, "replicas", 1, "number of replicas, served on consecutive ports")
	fs.StringVar(&o.host, "host", "127.0.0.1", "address to listen on")
	fs.IntVar(&o.basePort, "base-port", 8001, "port of replica sim-0; sim-i listens on base-port+i (0: any free ports)")
	fs.StringVar(&o.profile, "profile", "8b-h100", fmt.Sprintf("replica profile, one of %v", sim.ProfileNames()))
	fs.StringVar(&o.model, "model", "sim-llama-8b", "served model name")
	fs.Uint64Var(&o.seed, "seed", 1, "jitter seed; replica i uses seed+i")
	fs.IntVar(&o.streamInterval, "stream-interval", 1, "tokens per streamed SSE chunk after the first")
	fs.TextVar(&o.tokenText, "token-text", sim.TokenTextEcho,
		"generated text: echo (the echo rule: 4-byte pieces of the prompt) or natural (English word-pieces of 1-10 bytes, as a real tokenizer's; usage stays exact)")
	fs.Float64Var(&o.timeScale, "time-scale", 1, "multiplies every step time (e.g. 0.1 runs ten times faster than the modelled GPU)")
	fs.BoolVar(&o.noPrefixCaching, "no-prefix-caching", false, "disable the prefix cache")
	fs.TextVar(&o.logLevel, "log-level", slog.LevelInfo, "log level: DEBUG, INFO, WARN or ERROR")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 10*time.Second, "how long in-flight requests may run on after SIGINT/SIGTERM")
	fs.IntVar(&o.maxNumSeqs, "max-num-seqs", 0, "override the profile's max_num_seqs")
	fs.IntVar(&o.maxNumBatchedTokens, "max-num-batched-tokens", 0, "override the profile's max_num_batched_tokens")
	fs.IntVar(&o.numGPUBlocks, "num-gpu-blocks", 0, "override the profile's KV capacity in 16-token blocks")
	fs.IntVar(&o.maxModelLen, "max-model-len", 0, "override the profile's max_model_len")
	fs.Float64Var(&o.t0, "t0-us", 0, "override the per-step overhead T0, microseconds")
	fs.Float64Var(&o.tw, "tw-us", 0, "override the weight-read floor Tw, microseconds")
	fs.Float64Var(&o.kLin, "k-lin-us", 0, "override k_lin, microseconds per token")
	fs.Float64Var(&o.kKV, "k-kv-us", 0, "override k_kv, microseconds per decode context token")
	fs.Float64Var(&o.kAtt, "k-att-us", 0, "override k_att, microseconds per prefill query-key pair")
	fs.Float64Var(&o.jitter, "jitter", -1, "override the step-time jitter fraction (e.g. 0.05; 0 disables)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %v", fs.Args())
	}
	if o.replicas < 1 {
		return o, fmt.Errorf("--replicas %d < 1", o.replicas)
	}
	if o.basePort < 0 || o.basePort+o.replicas-1 > 65535 {
		return o, fmt.Errorf("ports %d..%d out of range", o.basePort, o.basePort+o.replicas-1)
	}
	return o, nil
}

// buildProfile applies the overrides: a custom profile is a built-in one with its fields
// replaced.
func (o options) buildProfile() (sim.Profile, error) {
	p, err := sim.LookupProfile(o.profile)
	if err != nil {
		return p, err
	}
	setInt := func(dst *int, v int) {
		if v > 0 {
			*dst = v
		}
	}
	setFloat := func(dst *float64, v float64) {
		if v > 0 {
			*dst = v
		}
	}
	setInt(&p.MaxNumSeqs, o.maxNumSeqs)
	setInt(&p.MaxNumBatchedTokens, o.maxNumBatchedTokens)
	setInt(&p.NumGPUBlocks, o.numGPUBlocks)
	setInt(&p.MaxModelLen, o.maxModelLen)
	setFloat(&p.T0Micros, o.t0)
	setFloat(&p.TwMicros, o.tw)
	setFloat(&p.KLinMicros, o.kLin)
	setFloat(&p.KKVMicros, o.kKV)
	setFloat(&p.KAttMicros, o.kAtt)
	if o.jitter >= 0 {
		p.Jitter = o.jitter
	}
	if o.numGPUBlocks > 0 && o.maxModelLen == 0 {
		// A smaller cache must not leave the profile's model length out of reach.
		p.MaxModelLen = min(p.MaxModelLen, (p.NumGPUBlocks-1)*sim.BlockSize)
	}
	return p, p.Validate()
}

// replica is one engine and its HTTP server.
type replica struct {
	name   string
	engine *sim.Engine
	server *http.Server
	ln     net.Listener
}

// run serves the replicas until ctx ends, then shuts them down gracefully. ready, when not
// nil, receives the replicas' listening addresses once all of them listen.
func run(ctx context.Context, args []string, stderr io.Writer, ready func(addrs []string)) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: o.logLevel}))
	prof, err := o.buildProfile()
	if err != nil {
		return err
	}

	var replicas []*replica
	defer func() {
		for _, r := range replicas {
			_ = r.ln.Close()
		}
	}()
	for i := range o.replicas {
		name := "sim-" + strconv.Itoa(i)
		eng, err := sim.New(sim.Config{
			Model: o.model, Profile: prof, Seed: o.seed + uint64(i),
			DisablePrefixCaching: o.noPrefixCaching, TimeScale: o.timeScale,
		}, clock.RealClock{})
		if err != nil {
			return fmt.Errorf("replica %s: %w", name, err)
		}
		srv, err := sim.NewServer(eng, sim.ServerOptions{Name: name, StreamInterval: o.streamInterval, TokenText: o.tokenText, Logger: log})
		if err != nil {
			return fmt.Errorf("replica %s: %w", name, err)
		}
		port := 0
		if o.basePort != 0 {
			port = o.basePort + i
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(o.host, strconv.Itoa(port)))
		if err != nil {
			return fmt.Errorf("replica %s: %w", name, err)
		}
		replicas = append(replicas, &replica{
			name: name, engine: eng, ln: ln,
			server: &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second},
		})
	}

	// Engines outlive the HTTP servers' shutdown so that in-flight streams can finish.
	engineCtx, stopEngines := context.WithCancel(context.Background())
	defer stopEngines()
	var engines, servers sync.WaitGroup
	serveErr := make(chan error, len(replicas))
	addrs := make([]string, len(replicas))
	for i, r := range replicas {
		addrs[i] = r.ln.Addr().String()
		engines.Go(func() { _ = r.engine.Run(engineCtx) })
		servers.Go(func() {
			if err := r.server.Serve(r.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("replica %s: %w", r.name, err)
			}
		})
		log.Info("replica listening", "replica", r.name, "addr", addrs[i], "profile", prof.Name, "model", o.model)
	}
	if ready != nil {
		ready(addrs)
	}

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "timeout", o.shutdownTimeout)
	case runErr = <-serveErr:
		log.Error("server failed, shutting down", "err", runErr)
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), o.shutdownTimeout)
	defer cancel()
	var shutdowns sync.WaitGroup
	for _, r := range replicas {
		shutdowns.Go(func() {
			if err := r.server.Shutdown(shutdownCtx); err != nil {
				log.Warn("graceful shutdown timed out; closing connections", "replica", r.name, "err", err)
				_ = r.server.Close()
			}
		})
	}
	shutdowns.Wait()
	servers.Wait()
	stopEngines()
	engines.Wait()
	log.Info("stopped")
	return runErr
}
