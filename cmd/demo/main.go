// Command demo runs Augur end to end on one machine, learning loop included: it starts
// simulated vLLM replicas of two speeds, the endpoint picker and the local gateway on
// loopback, and a local Postgres; sends OpenAI requests (streaming and not, with SLO headers)
// through the gateway with the official OpenAI Go client while the picker predicts with its
// cold-start estimate and records every request; runs the trainer job on what was recorded;
// shows the running picker loading the published models; sends more requests; and prints the
// models' holdout accuracy next to the live error of the predictions before and after.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/augur-llm/augur/local/pgserver"
	"github.com/augur-llm/augur/local/stack"
	"github.com/augur-llm/augur/models"
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
	requests, after int
	rate            float64
	pool            string
	seed            uint64
	databaseURL     string
	trainer         string
}

func run(ctx context.Context, args []string, out io.Writer) error {
	var o options
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.IntVar(&o.requests, "requests", 600, "requests to send before training")
	fs.IntVar(&o.after, "after", 300, "requests to send once the trained models serve")
	fs.Float64Var(&o.rate, "rate", 30, "mean arrival rate, requests per second (Poisson)")
	fs.StringVar(&o.pool, "pool", "8b-h100,8b-h100,8b-h100,8b-a100", "simulator profiles of the replicas, one per replica")
	fs.Uint64Var(&o.seed, "seed", 1, "seed of the workload and the simulator")
	fs.StringVar(&o.databaseURL, "database-url", os.Getenv("AUGUR_DATABASE_URL"), "Postgres to record samples and models to (default $AUGUR_DATABASE_URL; empty: a local one under .cache/demo-postgres, emptied first)")
	fs.StringVar(&o.trainer, "trainer", "", "the trainer binary (default: trainer beside this binary)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.requests < 1 || o.after < 1 || o.rate <= 0 {
		return fmt.Errorf("--requests, --after and --rate must be positive")
	}
	profiles := strings.Split(o.pool, ",")
	if o.trainer == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		o.trainer = filepath.Join(filepath.Dir(exe), "trainer")
	}
	if _, err := os.Stat(o.trainer); err != nil {
		return fmt.Errorf("the trainer binary: %w (make build builds it)", err)
	}

	if o.databaseURL == "" {
		fmt.Fprintln(out, "starting a local Postgres under .cache/demo-postgres (set --database-url to use another)...")
		pg, err := pgserver.Start(ctx, pgserver.Options{Dir: filepath.Join(".cache", "demo-postgres")})
		if err != nil {
			return fmt.Errorf("local Postgres: %w", err)
		}
		defer pg.Close()
		// Every demo starts from nothing: no samples, no models.
		if o.databaseURL, err = pg.EmptyDatabase(ctx, "augur_demo"); err != nil {
			return err
		}
	}
	runStart := time.Now()

	var mu sync.Mutex
	picked := map[string]requestcontrol.Completion{}
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := stack.Start(startCtx, stack.Config{
		Profiles: profiles, Seed: o.seed,
		Picker: picker.Config{ProfileName: "augur", DatabaseURL: o.databaseURL, Models: picker.ModelsConfig{PollInterval: metav1.Duration{Duration: 500 * time.Millisecond}}},
		Log:    slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Observe: func(c requestcontrol.Completion) {
			mu.Lock()
			picked[c.ID] = c
			mu.Unlock()
		},
	})
	if err != nil {
		return err
	}
	defer st.Close()
	pred := st.Picker.Predictor
	fmt.Fprintf(out, "Augur demo: %d simulated replicas (%s), picker on %s (policy augur), gateway at %s\n", len(profiles), o.pool, st.PickerAddr, st.GatewayURL)
	fmt.Fprintf(out, "predictions come from: %s (no model trained yet)\n", pred.Version())

	// 1. Traffic before any model: the picker predicts with its cold start and records.
	fmt.Fprintf(out, "\n1. sending %d requests at %.0f req/s (Poisson), 2 of 3 streaming, through the gateway with openai-go...\n", o.requests, o.rate)
	before := drive(ctx, st.NewClient(), o, o.requests, o.seed, "before")
	waitPicked(&mu, picked, before)
	if err := report(out, before, picked); err != nil {
		return err
	}
	rec := st.Picker.Recorder
	for deadline := time.Now().Add(10 * time.Second); rec.Stats().Buffered > 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
	}
	fmt.Fprintf(out, "predictions came from: %s\n", pred.Version())

	coldSource := pred.Version()

	// 2. The trainer job, as the CronJob runs it, on what the picker recorded.
	fmt.Fprintf(out, "\n2. running the trainer job: %s --once\n\n", o.trainer)
	cmd := exec.CommandContext(ctx, o.trainer, "--once", "--quiet", "--min-samples", "200", "--database-url", o.databaseURL)
	cmd.Stdout, cmd.Stderr = out, os.Stderr
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
			return fmt.Errorf("trainer: %w", err)
		}
	}
	db, err := pgxpool.New(ctx, o.databaseURL)
	if err != nil {
		return fmt.Errorf("database: %w", err)
	}
	defer db.Close()
	champs, err := store.Champions(ctx, db)
	if err != nil {
		return err
	}
	if len(champs) == 0 {
		return fmt.Errorf("the trainer published no model")
	}
	run := champs[0].Manifest.Run

	// 3. The running picker picks the published models up.
	published := time.Now()
	for pred.Version() != run {
		if time.Since(published) > 15*time.Second {
			return fmt.Errorf("the picker did not load models %s within 15 s (serving %s)", run, pred.Version())
		}
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Fprintf(out, "\n3. the picker loaded models %s %s after they were published, without a restart\n", run, time.Since(published).Round(time.Millisecond))

	// 4. Traffic with the trained models.
	fmt.Fprintf(out, "\n4. sending %d more requests...\n", o.after)
	after := drive(ctx, st.NewClient(), o, o.after, o.seed+1, "after")
	waitPicked(&mu, picked, after)
	if err := report(out, after, picked); err != nil {
		return err
	}

	if err := st.Close(); err != nil { // the picker flushes its samples as it stops
		return fmt.Errorf("stopping the stack: %w", err)
	}
	mu.Lock()
	defer mu.Unlock()
	fmt.Fprintln(out, "\nprediction error: the trained models on their holdout, and live, before and after they served")
	if err := accuracy(out, champs, before, after, picked); err != nil {
		return err
	}
	fmt.Fprintln(out, "\nSLO attainment before and after the first trained model (streamed requests, as the client measured them)")
	attainment(out, []phase{{"before", coldSource, before}, {"after", run, after}})
	kept, err := store.CountSamples(ctx, db, runStart, time.Now().Add(time.Minute))
	if err != nil {
		return err
	}
	s := rec.Stats()
	fmt.Fprintf(out, "\nsamples kept in Postgres: %d of %d routed requests (recorded %d, dropped %d, invalid %d).\n",
		kept, len(picked), s.Recorded, s.DroppedFull+s.DroppedShutdown, s.Invalid)
	if kept != int64(len(picked)) {
		return fmt.Errorf("%d samples kept for %d routed requests", kept, len(picked))
	}
	return nil
}

// waitPicked waits until the picker has completed the successful requests of rs: it records a
// request when the response's end passes through it, which can be just after the client read it.
func waitPicked(mu *sync.Mutex, picked map[string]requestcontrol.Completion, rs []sent) {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		missing := 0
		for _, r := range rs {
			if _, ok := picked[r.id]; !ok && r.Err == nil {
				missing++
			}
		}
		mu.Unlock()
		if missing == 0 {
			return
		}
	}
}

// accuracy prints the trained models' holdout metrics beside the live error of the
// predictions the picker made for the requests before and after the models served.
func accuracy(out io.Writer, champs []models.Artifact, before, after []sent, picked map[string]requestcontrol.Completion) error {
	holdout := map[models.Target][2]models.Metrics{}
	for _, a := range champs {
		h := holdout[a.Manifest.Target]
		if a.Manifest.Kind == models.Mean {
			h[0] = a.Manifest.Holdout.Overall
		} else {
			h[1] = a.Manifest.Holdout.Overall
		}
		holdout[a.Manifest.Target] = h
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tpredicted by\tTTFT samples\tTTFT MAPE\tTTFT p90 coverage\tTPOT samples\tTPOT MAPE\tTPOT p90 coverage\t")
	h1, h2 := holdout[models.TTFT], holdout[models.TPOT]
	fmt.Fprintf(tw, "trainer's holdout\t%s\t%d\t%s\t%s\t%d\t%s\t%s\t\n", champs[0].Manifest.Run,
		h1[0].Count, pct(h1[0].MAPE), pct(h1[1].Coverage), h2[0].Count, pct(h2[0].MAPE), pct(h2[1].Coverage))
	for _, phase := range []struct {
		name string
		rs   []sent
	}{{"live, before", before}, {"live, after", after}} {
		var ttft, tpot liveError
		versions := map[string]bool{}
		for _, r := range phase.rs {
			c, ok := picked[r.id]
			if !ok || !r.stream || r.Err != nil {
				continue
			}
			versions[c.ModelVersion] = true
			if c.TTFT > 0 && c.PredictedTTFTMs != nil {
				ttft.add(ms(c.TTFT), *c.PredictedTTFTMs, c.PredictedTTFTUpperMs)
			}
			if c.TPOT > 0 && c.PredictedTPOTMs != nil && c.Outcome == requestcontrol.OutcomeOK {
				tpot.add(ms(c.TPOT), *c.PredictedTPOTMs, c.PredictedTPOTUpperMs)
			}
		}
		var vs []string
		for v := range versions {
			vs = append(vs, v)
		}
		slices.Sort(vs)
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%d\t%s\t%s\t\n", phase.name, strings.Join(vs, " "),
			ttft.n, pct(ttft.mape()), pct(ttft.coverage()), tpot.n, pct(tpot.mape()), pct(tpot.coverage()))
	}
	return tw.Flush()
}

type liveError struct {
	n, covered, withUpper int
	ape                   float64
}

func (l *liveError) add(observed, mean float64, upper *float64) {
	l.n++
	l.ape += math.Abs(mean-observed) / observed
	if upper != nil {
		l.withUpper++
		if observed <= *upper {
			l.covered++
		}
	}
}

func (l *liveError) mape() float64 {
	if l.n == 0 {
		return math.NaN()
	}
	return l.ape / float64(l.n)
}

func (l *liveError) coverage() float64 {
	if l.withUpper == 0 {
		return math.NaN()
	}
	return float64(l.covered) / float64(l.withUpper)
}

func pct(x float64) string {
	if math.IsNaN(x) {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*x)
}

type sent struct {
	id     string
	stream bool
	class  string
	stack.Result
}

// drive sends n requests of the demo's workload: a few shared system prompts (so prefix
// caching matters), user questions of varied length, two SLO classes, Poisson arrivals.
func drive(ctx context.Context, client openai.Client, o options, n int, seed uint64, phase string) []sent {
	rng := rand.New(rand.NewPCG(seed, 42))
	systems := make([]string, 6)
	sys := rand.New(rand.NewPCG(o.seed, 43)) // the same system prompts in every phase
	for i := range systems {
		systems[i] = words(sys, 600+sys.IntN(1200))
	}
	results := make([]sent, n)
	var wg sync.WaitGroup
	start := time.Now()
	next := time.Duration(0)
	for i := range n {
		next += time.Duration(rng.ExpFloat64() / o.rate * float64(time.Second))
		if d := time.Until(start.Add(next)); d > 0 {
			select {
			case <-ctx.Done():
				return results[:i]
			case <-time.After(d):
			}
		}
		s := &results[i]
		s.id = fmt.Sprintf("demo-%s-%04d", phase, i)
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

type phase struct {
	name, predictedBy string
	rs                []sent
}

// attainment prints, per phase, the share of streamed requests that met both the TTFT and
// the TPOT objective they sent, overall and per class.
func attainment(out io.Writer, phases []phase) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\tpredicted by\tall\tinteractive (500 ms, 50 ms)\tstandard (2 s, 100 ms)\t")
	for _, ph := range phases {
		met, n := map[string]int{}, map[string]int{}
		for _, s := range ph.rs {
			if !s.stream {
				continue
			}
			n[s.class]++
			n[""]++
			ttft, tpot := 2*time.Second, 100*time.Millisecond
			if s.class == "interactive" {
				ttft, tpot = 500*time.Millisecond, 50*time.Millisecond
			}
			if s.Status == 200 && s.TTFT <= ttft && s.TPOT <= tpot {
				met[s.class]++
				met[""]++
			}
		}
		share := func(k string) string {
			if n[k] == 0 {
				return "n/a"
			}
			return fmt.Sprintf("%.1f%% of %d", 100*float64(met[k])/float64(n[k]), n[k])
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", ph.name, ph.predictedBy, share(""), share("interactive"), share("standard"))
	}
	tw.Flush()
}
