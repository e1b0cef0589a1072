// Command demo runs Augur end to end on one machine: it starts simulated vLLM replicas, the
// endpoint picker and the local gateway on loopback, sends a few hundred OpenAI requests
// (streaming and not, with SLO headers) through the gateway with the official OpenAI Go
// client, and prints, per replica, the latency the picker measured next to what the client saw.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"gonum.org/v1/gonum/stat"

	"github.com/augur-llm/augur/local/pgserver"
	"github.com/augur-llm/augur/local/stack"
	"github.com/augur-llm/augur/picker"
	"github.com/augur-llm/augur/requestcontrol"
	"github.com/augur-llm/augur/store"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

type options struct {
	requests, replicas int
	rate               float64
	profile            string
	seed               uint64
	databaseURL        string
}

func run(ctx context.Context, args []string, out io.Writer) error {
	var o options
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.IntVar(&o.requests, "requests", 300, "requests to send")
	fs.Float64Var(&o.rate, "rate", 15, "mean arrival rate, requests per second (Poisson)")
	fs.IntVar(&o.replicas, "replicas", 4, "simulated replicas")
	fs.StringVar(&o.profile, "profile", "8b-h100", "simulator profile")
	fs.Uint64Var(&o.seed, "seed", 1, "seed of the workload and the simulator")
	fs.StringVar(&o.databaseURL, "database-url", os.Getenv("AUGUR_DATABASE_URL"), "Postgres to record samples to (default $AUGUR_DATABASE_URL; empty: start a local one under .cache/demo-postgres)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.requests < 1 || o.rate <= 0 || o.replicas < 1 {
		return fmt.Errorf("--requests, --rate and --replicas must be positive")
	}

	if o.databaseURL == "" {
		fmt.Fprintln(out, "starting a local Postgres under .cache/demo-postgres (set --database-url to use another)...")
		pg, err := pgserver.Start(ctx, pgserver.Options{Dir: filepath.Join(".cache", "demo-postgres")})
		if err != nil {
			return fmt.Errorf("local Postgres: %w", err)
		}
		defer pg.Close()
		o.databaseURL = pg.URL()
	}
	runStart := time.Now()

	var mu sync.Mutex
	picked := map[string]requestcontrol.Completion{}
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := stack.Start(startCtx, stack.Config{
		Replicas: o.replicas, Profile: o.profile, Seed: o.seed, Picker: picker.Config{DatabaseURL: o.databaseURL},
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Observe: func(c requestcontrol.Completion) {
			mu.Lock()
			picked[c.ID] = c
			mu.Unlock()
		},
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "Augur demo: %d simulated %s replicas, picker on %s, gateway at %s\n", o.replicas, o.profile, st.PickerAddr, st.GatewayURL)
	fmt.Fprintf(out, "sending %d requests at %.0f req/s (Poisson), 2 of 3 streaming, through the gateway with openai-go...\n", o.requests, o.rate)

	results := drive(ctx, st.NewClient(), o)
	// The picker records a request when the response's end passes through it, which can be
	// just after the client has read it; give the last ones a moment.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		n := len(picked)
		mu.Unlock()
		if n >= countOK(results) {
			break
		}
	}
	rec := st.Picker.Recorder
	if err := st.Close(); err != nil { // the picker flushes its samples as it stops
		return fmt.Errorf("stopping the stack: %w", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if err := report(out, results, picked); err != nil {
		return err
	}
	db, err := pgxpool.New(ctx, o.databaseURL)
	if err != nil {
		return fmt.Errorf("database: %w", err)
	}
	defer db.Close()
	kept, err := store.CountSamples(ctx, db, runStart, time.Now().Add(time.Minute))
	if err != nil {
		return err
	}
	s := rec.Stats()
	fmt.Fprintf(out, "samples kept in Postgres: %d of %d routed requests (recorded %d, dropped %d, invalid %d).\n",
		kept, len(picked), s.Recorded, s.DroppedFull+s.DroppedShutdown, s.Invalid)
	if kept != int64(len(picked)) {
		return fmt.Errorf("%d samples kept for %d routed requests", kept, len(picked))
	}
	return nil
}

type sent struct {
	id     string
	stream bool
	class  string
	stack.Result
}

// drive sends the workload: a few shared system prompts (so prefix caching matters), user
// questions of varied length, two SLO classes, Poisson arrivals.
func drive(ctx context.Context, client openai.Client, o options) []sent {
	rng := rand.New(rand.NewPCG(o.seed, 42))
	systems := make([]string, 6)
	for i := range systems {
		systems[i] = words(rng, 600+rng.IntN(1200))
	}
	results := make([]sent, o.requests)
	var wg sync.WaitGroup
	start := time.Now()
	next := time.Duration(0)
	for i := range o.requests {
		next += time.Duration(rng.ExpFloat64() / o.rate * float64(time.Second))
		if d := time.Until(start.Add(next)); d > 0 {
			select {
			case <-ctx.Done():
				return results[:i]
			case <-time.After(d):
			}
		}
		s := &results[i]
		s.id = fmt.Sprintf("demo-%04d", i)
		s.stream = i%3 != 2
		ttft, tpot := "2000", "100"
		s.class = "standard"
		if rng.IntN(2) == 0 {
			ttft, tpot, s.class = "500", "50", "interactive"
		}
		params := openai.ChatCompletionNewParams{
			Model: "sim-llama-8b",
			Messages: []openai.ChatCompletionMessageParamUnion{
				openai.SystemMessage(systems[rng.IntN(len(systems))]),
				openai.UserMessage(words(rng, 50+rng.IntN(250))),
			},
			MaxTokens: openai.Int(int64(32 + rng.IntN(128))),
		}
		opts := []option.RequestOption{
			option.WithHeader("x-request-id", s.id),
			option.WithHeader("x-slo-ttft-ms", ttft), option.WithHeader("x-slo-tpot-ms", tpot),
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if s.stream {
				s.Result = stack.StreamChat(ctx, client, params, opts...)
			} else {
				s.Result = stack.Chat(ctx, client, params, opts...)
			}
		}()
	}
	wg.Wait()
	return results
}

// words returns about n tokens of text (4 bytes a token, the project's rule).
func words(rng *rand.Rand, n int) string {
	vocab := []string{"the", "GPU", "cache", "token", "route", "model", "batch", "queue", "prefix", "latency", "replica", "stream"}
	var sb strings.Builder
	for sb.Len() < 4*n {
		sb.WriteString(vocab[rng.IntN(len(vocab))])
		sb.WriteByte(' ')
	}
	return sb.String()
}

func countOK(rs []sent) int {
	n := 0
	for _, r := range rs {
		if r.Err == nil {
			n++
		}
	}
	return n
}

type row struct {
	requests, streams          int
	pickTTFT, cliTTFT          []float64
	pickTPOT, cliTPOT          []float64
	promptTokens, cachedTokens int
}

func report(out io.Writer, rs []sent, picked map[string]requestcontrol.Completion) error {
	rows := map[string]*row{}
	var failed []string
	var all row
	for _, r := range rs {
		if r.Err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", r.id, r.Err))
			continue
		}
		for _, rw := range []*row{rowFor(rows, r.Replica), &all} {
			rw.requests++
			rw.promptTokens += r.PromptTokens
			rw.cachedTokens += r.CachedTokens
			if !r.stream {
				continue
			}
			rw.streams++
			rw.cliTTFT = append(rw.cliTTFT, ms(r.TTFT))
			rw.cliTPOT = append(rw.cliTPOT, ms(r.TPOT))
			if c, ok := picked[r.id]; ok {
				rw.pickTTFT = append(rw.pickTTFT, ms(c.TTFT))
				rw.pickTPOT = append(rw.pickTPOT, ms(c.TPOT))
			}
		}
	}
	names := make([]string, 0, len(rows))
	for n := range rows {
		names = append(names, n)
	}
	slices.Sort(names)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "replica\trequests\tstreamed\tcache hit\tTTFT p50 picker\tclient\tTTFT p99 picker\tclient\tTPOT p50 picker\tclient\t")
	line := func(name string, r *row) {
		hit := 0.0
		if r.promptTokens > 0 {
			hit = float64(r.cachedTokens) / float64(r.promptTokens)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f%%\t%s\t%s\t%s\t%s\t%s\t%s\t\n", name, r.requests, r.streams, 100*hit,
			q(r.pickTTFT, 0.5), q(r.cliTTFT, 0.5), q(r.pickTTFT, 0.99), q(r.cliTTFT, 0.99), q(r.pickTPOT, 0.5), q(r.cliTPOT, 0.5))
	}
	for _, n := range names {
		line(n, rows[n])
	}
	line("all", &all)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(out, "times in ms; TTFT and TPOT from the streamed requests; the picker's TTFT runs from its decision, the client's from sending the request.")
	fmt.Fprintf(out, "%d of %d requests succeeded; the picker recorded %d.\n", all.requests, len(rs), len(picked))
	if len(failed) > 0 {
		for _, f := range failed[:min(len(failed), 10)] {
			fmt.Fprintln(out, "  failed:", f)
		}
		return fmt.Errorf("%d requests failed", len(failed))
	}
	return nil
}

func rowFor(rows map[string]*row, name string) *row {
	if name == "" {
		name = "(unknown)"
	}
	if rows[name] == nil {
		rows[name] = &row{}
	}
	return rows[name]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func q(v []float64, p float64) string {
	if len(v) == 0 {
		return "-"
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return fmt.Sprintf("%.1f", stat.Quantile(p, stat.Empirical, s, nil))
}
