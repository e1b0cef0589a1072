package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"k8s.io/utils/clock"

	"github.com/augur-llm/augur/models"
	"github.com/augur-llm/augur/predictor"
	"github.com/augur-llm/augur/scheduler"
	"github.com/augur-llm/augur/trainer"
	"github.com/augur-llm/augur/windtunnel/corpus"
	"github.com/augur-llm/augur/windtunnel/report"
	"github.com/augur-llm/augur/windtunnel/sim"
	"github.com/augur-llm/augur/windtunnel/virtual"
	"github.com/augur-llm/augur/windtunnel/workload"
)

// Policies a comparison runs, in the order tables show them: the baselines, Augur, and the
// clairvoyant reference.
var comparePolicies = []string{"round-robin", "llm-d", "llm-d-token", "llm-d-active", "llm-d-predicted", "augur", "clairvoyant"}

// heuristicBaselines are the baselines that need no predictor; capacity is measured with
// the best of them.
var heuristicBaselines = []string{"round-robin", "llm-d", "llm-d-token", "llm-d-active"}

// usesPredictor reports whether a policy needs latency models.
func usesPredictor(policy string) bool { return policy == "augur" || policy == "llm-d-predicted" }

// benchWorkload is one workload of a comparison: a stream on a pool.
type benchWorkload struct {
	Name     string // as --workloads names it
	Workload string // workload.New's name
	Pool     string
	// Classes: the stream carries no objectives of its own; the reference classes are
	// assigned by a seeded rule.
	Classes bool
}

func compareWorkloads() []benchWorkload {
	return []benchWorkload{
		{Name: "shared-prefix", Workload: workload.NameSharedPrefix, Pool: "8x8b-h100", Classes: true},
		{Name: "mixed-slo", Workload: workload.NameMixedSLO, Pool: "8x8b-h100"},
		{Name: "heterogeneous", Workload: workload.NameHeterogeneous, Pool: "6x8b-h100,2x8b-a100"},
		{Name: "azure-conv", Workload: workload.NameAzureConv, Pool: "8x8b-h100"},
		{Name: "mooncake", Workload: workload.NameMooncake, Pool: "8x8b-h100"},
	}
}

func (w benchWorkload) generator(seed uint64, rate float64, d time.Duration) (workload.Generator, error) {
	specs, err := virtual.ParsePool(w.Pool)
	if err != nil {
		return nil, err
	}
	g, err := workload.New(w.Workload, workload.Options{Seed: seed, Ladder: workload.ConstantLadder(rate, d),
		Trace: workload.TraceOptions{MaxModelLen: corpus.MaxModelLen(specs)}})
	if err != nil {
		return nil, err
	}
	return w.wrap(seed)(g)
}

// wrap is what the workload's stream passes through: the reference classes by seed, for a
// workload without objectives.
func (w benchWorkload) wrap(seed uint64) func(workload.Generator) (workload.Generator, error) {
	return func(g workload.Generator) (workload.Generator, error) {
		if w.Classes {
			return workload.WithClasses(g, seed, nil)
		}
		return g, nil
	}
}

// predictorFor builds, for a virtual run, a predictor serving set on the run's clock.
// Drift onsets are counted in onsets when it is set, and not logged: a comparison runs
// hundreds of virtual runs, whose onsets would bury its results.
func predictorFor(set *predictor.Set, onsets *atomic.Int64) func(clock.PassiveClock) scheduler.Predictor {
	return func(clk clock.PassiveClock) scheduler.Predictor {
		opts := predictor.Options{Clock: clk, SyncRefit: true}
		if onsets != nil {
			opts.Log = slog.New(slog.DiscardHandler)
			opts.OnDrift = func(string, models.Target, float64) { onsets.Add(1) }
		}
		p := predictor.New(opts)
		p.Swap(set)
		return p
	}
}

// compareOptions are the flags of --compare.
type compareOptions struct {
	workloads  string
	policies   string
	loads      string
	seeds      string
	runLength  time.Duration
	capacities string
	plots      string
	models     string
	parallel   int
	sloArgs    string
	oracleSpec string
	oracle     virtual.Oracle
}

// checkSLOArgs refuses --slo-args the SLO picker would refuse, before any work starts.
func checkSLOArgs(args string) error {
	if args == "" {
		return nil
	}
	pc := scheduler.ProfileConfig{Name: "--slo-args", Picker: scheduler.PluginConfig{Name: "slo", Args: json.RawMessage(args)}}
	if _, err := scheduler.DefaultRegistry().Build(pc, scheduler.Handle{}, nil); err != nil {
		return fmt.Errorf("--slo-args: %w", err)
	}
	return nil
}

// cell is one policy's figures at one load of one workload, for one seed.
type cell struct {
	Attainment  *float64            `json:"attainment"`
	ByClass     map[string]*float64 `json:"attainment_by_class"`
	GoodputRPS  *float64            `json:"goodput_rps"`
	TTFTP50     *float64            `json:"ttft_p50_ms"`
	TTFTP99     *float64            `json:"ttft_p99_ms"`
	TPOTP99     *float64            `json:"tpot_p99_ms"`
	HitRate     *float64            `json:"hit_rate"`
	Requests    int                 `json:"requests"`
	WallSeconds float64             `json:"wall_s"`
	// DriftOnsets counts the replicas the predictor found drifting from the models.
	DriftOnsets int64 `json:"drift_onsets"`
}

// comparison is the whole result, as written with --json.
type comparison struct {
	RunLength  string                                  `json:"run_length"`
	Seeds      []uint64                                `json:"seeds"`
	Loads      []float64                               `json:"loads"`
	Policies   []string                                `json:"policies"`
	Models     string                                  `json:"models"`
	Oracle     string                                  `json:"oracle,omitempty"` // --oracle: an ablation, not a policy's result
	Workloads  []benchWorkload                         `json:"workloads"`
	Capacities map[string]float64                      `json:"capacities"`
	Results    map[string]map[string]map[string][]cell `json:"results"` // workload -> load -> policy -> per seed
}

func loadKey(l float64) string { return strconv.FormatFloat(l, 'f', 2, 64) }

func parseList[T any](s, what string, conv func(string) (T, error)) ([]T, error) {
	var out []T
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		v, err := conv(f)
		if err != nil {
			return nil, fmt.Errorf("--%s: %q: %w", what, f, err)
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--%s: empty", what)
	}
	return out, nil
}

// profiles are the scheduling profiles of a comparison by pool and policy: the built-in
// profiles (clairvoyant: augur's), with llm-d's peak prefill throughput calibrated for the
// pool's replica classes as llm-d calibrates it, and --slo-args for the SLO picker.
func profiles(pools, policies []string, sloArgs string) (map[[2]string]scheduler.ProfileConfig, error) {
	peaks := map[string]float64{} // by replica profile, calibrated once
	out := map[[2]string]scheduler.ProfileConfig{}
	for _, pool := range pools {
		specs, err := virtual.ParsePool(pool)
		if err != nil {
			return nil, err
		}
		classes := map[string]float64{}
		for _, sp := range specs {
			if _, ok := peaks[sp.Profile.Name]; !ok {
				if peaks[sp.Profile.Name], err = sim.PeakPrefillThroughput(sp.Profile); err != nil {
					return nil, err
				}
			}
			classes[sp.Profile.Name] = peaks[sp.Profile.Name]
		}
		for _, policy := range policies {
			name := policy
			if policy == "clairvoyant" {
				name = "augur"
			}
			pc, ok := scheduler.BuiltinProfiles()[name]
			if !ok {
				return nil, fmt.Errorf("unknown policy %q", policy)
			}
			if sloArgs != "" && pc.Picker.Name == "slo" {
				pc.Picker.Args = json.RawMessage(sloArgs)
			}
			if out[[2]string{pool, policy}], err = scheduler.WithPeakPrefillThroughput(pc, classes); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// loadsAndSeeds parses --loads and --seeds: multiples of capacity in (0, 10], and seeds
// below those that train the models.
func (co compareOptions) loadsAndSeeds() ([]float64, []uint64, error) {
	loads, err := parseList(co.loads, "loads", func(s string) (float64, error) {
		v, err := strconv.ParseFloat(s, 64)
		if err == nil && !(v > 0 && v <= 10) {
			err = errors.New("want a multiple of capacity in (0, 10]")
		}
		return v, err
	})
	if err != nil {
		return nil, nil, err
	}
	seeds, err := parseList(co.seeds, "seeds", func(s string) (uint64, error) {
		v, err := strconv.ParseUint(s, 10, 64)
		if err == nil && v >= firstModelSeed {
			err = fmt.Errorf("seeds from %d on train the models", firstModelSeed)
		}
		return v, err
	})
	if err != nil {
		return nil, nil, err
	}
	return loads, seeds, nil
}

// compare runs every policy over every workload's load ladder and seeds in virtual time, with
// the same arrivals for every policy, and reports attainment and latency side by side.
func compare(ctx context.Context, o options, stdout, stderr io.Writer) error {
	co := o.compare
	progress := progressTo(o, stderr)
	byName := map[string]benchWorkload{}
	for _, w := range compareWorkloads() {
		byName[w.Name] = w
	}
	var wls []benchWorkload
	names, err := parseList(co.workloads, "workloads", func(s string) (string, error) { return s, nil })
	if err != nil {
		return err
	}
	for _, n := range names {
		w, ok := byName[n]
		if !ok {
			return fmt.Errorf("--workloads: unknown %q", n)
		}
		wls = append(wls, w)
	}
	policies, err := parseList(co.policies, "policies", func(s string) (string, error) {
		if s == "clairvoyant" || slices.Contains(policyNames(), s) {
			return s, nil
		}
		return "", errors.New("unknown policy")
	})
	if err != nil {
		return err
	}
	predicting := slices.DeleteFunc(slices.Clone(policies), func(p string) bool { return !usesPredictor(p) })
	if co.oracle.Active() && len(predicting) == 0 {
		return fmt.Errorf("--oracle %s: none of --policies %s predicts with models (augur and llm-d-predicted do)", co.oracle, co.policies)
	}
	loads, seeds, err := co.loadsAndSeeds()
	if err != nil {
		return err
	}
	caps := map[string]float64{}
	if co.capacities != "" {
		kvs, err := parseList(co.capacities, "capacities", func(s string) ([2]string, error) {
			k, v, ok := strings.Cut(s, "=")
			if !ok {
				return [2]string{}, errors.New("want WORKLOAD=REQ/S")
			}
			return [2]string{k, v}, nil
		})
		if err != nil {
			return err
		}
		for _, kv := range kvs {
			if _, ok := byName[kv[0]]; !ok {
				return fmt.Errorf("--capacities: %s is not a workload of --compare", kv[0])
			}
			v, err := strconv.ParseFloat(kv[1], 64)
			if err != nil || !(v > 0) {
				return fmt.Errorf("--capacities: %s: bad rate %q", kv[0], kv[1])
			}
			caps[kv[0]] = v
		}
	}

	var pools []string
	for _, w := range wls {
		if !slices.Contains(pools, w.Pool) {
			pools = append(pools, w.Pool)
		}
	}
	profs, err := profiles(pools, append(slices.Clone(heuristicBaselines), policies...), co.sloArgs)
	if err != nil {
		return err
	}

	var set *predictor.Set
	modelsNote := "none needed"
	if slices.ContainsFunc(policies, usesPredictor) {
		if set, modelsNote, err = benchModels(ctx, o, stdout, progress); err != nil {
			return err
		}
	}

	// Capacity: the highest rate at which the best heuristic baseline completes 97% of what
	// arrives.
	for _, w := range wls {
		if _, ok := caps[w.Name]; ok {
			fmt.Fprintf(stdout, "capacity of %s on %s: %.1f req/s (given)\n", w.Name, w.Pool, caps[w.Name])
			continue
		}
		start := time.Now()
		best, bestPolicy := 0.0, ""
		for _, pol := range heuristicBaselines {
			progress("\rcapacity of %s under %s...            ", w.Name, pol)
			c, err := corpus.CapacityWith(ctx, corpus.Scenario{Workload: w.Workload, Pool: w.Pool}, seeds[0], corpus.CapacityWindow,
				profs[[2]string{w.Pool, pol}], w.wrap(seeds[0]))
			if err != nil {
				return err
			}
			if c > best {
				best, bestPolicy = c, pol
			}
		}
		progress("\n")
		caps[w.Name] = best
		fmt.Fprintf(stdout, "capacity of %s on %s: %.1f req/s, under %s, the best heuristic baseline (measured in %s)\n",
			w.Name, w.Pool, best, bestPolicy, time.Since(start).Round(100*time.Millisecond))
	}

	type job struct {
		w      benchWorkload
		load   float64
		seed   uint64
		policy string
	}
	var jobs []job
	for _, w := range wls {
		for _, l := range loads {
			for _, s := range seeds {
				for _, p := range policies {
					jobs = append(jobs, job{w, l, s, p})
				}
			}
		}
	}
	res := comparison{RunLength: co.runLength.String(), Seeds: seeds, Loads: loads, Policies: policies, Models: modelsNote, Oracle: co.oracle.String(),
		Workloads: wls, Capacities: caps, Results: map[string]map[string]map[string][]cell{}}
	for _, w := range wls {
		res.Results[w.Name] = map[string]map[string][]cell{}
		for _, l := range loads {
			res.Results[w.Name][loadKey(l)] = map[string][]cell{}
			for _, p := range policies {
				res.Results[w.Name][loadKey(l)][p] = make([]cell, len(seeds))
			}
		}
	}
	par := co.parallel
	if par <= 0 {
		par = runtime.GOMAXPROCS(0)
	}
	var mu sync.Mutex
	var firstErr error
	done := 0
	work := make(chan job)
	var wg sync.WaitGroup
	start := time.Now()
	for range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range work {
				c, err := runCell(ctx, j.w, caps[j.w.Name]*j.load, j.seed, j.policy, co.runLength, profs[[2]string{j.w.Pool, j.policy}], set, co.oracle)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = fmt.Errorf("%s at %.2fx, seed %d, %s: %w", j.w.Name, j.load, j.seed, j.policy, err)
				}
				res.Results[j.w.Name][loadKey(j.load)][j.policy][slices.Index(seeds, j.seed)] = c
				done++
				progress("\rruns: %d/%d (%s)        ", done, len(jobs), time.Since(start).Round(time.Second))
				mu.Unlock()
			}
		}()
	}
	for _, j := range jobs {
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed || ctx.Err() != nil {
			break
		}
		work <- j
	}
	close(work)
	wg.Wait()
	progress("\n")
	if firstErr != nil {
		return firstErr
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%d runs of %s (%d workloads x %d loads x %d seeds x %d policies) in %s; models: %s\n",
		len(jobs), co.runLength, len(wls), len(loads), len(seeds), len(policies), time.Since(start).Round(time.Second), modelsNote)
	if co.oracle.Active() {
		fmt.Fprintf(stdout, "ablation (--oracle %s): the clairvoyant's predictions replace the models' for %s; these are not the policies' results\n",
			co.oracle, strings.Join(predicting, " and "))
	}
	if n := driftOnsets(&res); n > 0 {
		fmt.Fprintf(stdout, "the predictor found replicas drifting from the models %d times in these runs (predictions corrected; drift_onsets per run in --json)\n", n)
	}
	writeComparison(stdout, &res)
	if co.plots != "" {
		if err := writePlots(co.plots, &res); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "plots written to %s\n", co.plots)
	}
	return writeJSON(o.jsonPath, stdout, &res)
}

// writeJSON writes v as indented JSON to path (--json): "-" is stdout, "" writes nothing.
func writeJSON(path string, stdout io.Writer, v any) error {
	if path == "" {
		return nil
	}
	b, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		return err
	}
	if path == "-" {
		_, err = stdout.Write(append(b, '\n'))
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// runCell runs one workload at one rate under one policy and summarises it.
func runCell(ctx context.Context, w benchWorkload, rate float64, seed uint64, policy string, d time.Duration, pc scheduler.ProfileConfig, set *predictor.Set, oracle virtual.Oracle) (cell, error) {
	start := time.Now()
	specs, err := virtual.ParsePool(w.Pool)
	if err != nil {
		return cell{}, err
	}
	g, err := w.generator(seed, rate, d)
	if err != nil {
		return cell{}, err
	}
	vc := virtual.Config{Replicas: specs, Profile: pc, Seed: seed}
	var onsets atomic.Int64
	switch {
	case policy == "clairvoyant":
		vc.Clairvoyant = true
	case usesPredictor(policy):
		if set == nil {
			return cell{}, errors.New("no models")
		}
		vc.PredictorFor = predictorFor(set, &onsets)
		vc.Oracle = oracle
	}
	r, err := virtual.Run(ctx, vc, g.Next)
	if err != nil {
		return cell{}, err
	}
	rep := report.Compute(r.Outcomes, report.Options{Window: report.Window{From: 0, To: d}})
	c := cell{Attainment: rep.Overall.SLOAttainment, GoodputRPS: rep.Overall.GoodputRPS, TTFTP50: rep.Overall.TTFT.P50,
		TTFTP99: rep.Overall.TTFT.P99, TPOTP99: rep.Overall.TPOT.P99, HitRate: rep.Overall.PrefixHitRate,
		Requests: rep.Overall.Requests, ByClass: map[string]*float64{}, WallSeconds: time.Since(start).Seconds(), DriftOnsets: onsets.Load()}
	for _, cl := range rep.Classes {
		c.ByClass[cl.Name] = cl.SLOAttainment
	}
	return c, nil
}

// firstModelSeed is where the seeds of the traffic that trains a comparison's models begin:
// far from the seeds benchmarks run (1, 2, 3, ...) and from --learn's held-out seeds (1001+).
const firstModelSeed = 2001

// modelsCache is where models trained for benchmarks are kept between runs.
const modelsCache = ".cache/bench-models"

// recipeFile, in modelsCache, says what the kept models were trained on; models trained
// on another recipe are trained again.
const recipeFile = "recipe.txt"

// modelGenerations is how many generations a comparison's models are trained in (see
// trainCorpus). With two, whether the models had seen the queues Augur's packing builds
// hung on one publication decision: the second generation's TTFT model lost to the first
// on the holdout under one trainer seed and won under another, and attainment below
// capacity moved by up to 3 points with it; the third generation's models, trained on
// traffic routed by the second's, were published under the seed kept (docs/benchmarks.md).
const modelGenerations = 3

// trainingScenarios are what a comparison's models are trained on: the corpus of the
// learning loop, the reference mix on a pool of one class, and the Azure code trace. The
// trace teaches the models bursts and the long prompts of production traffic; it is not a
// trace the comparison replays (the conversation trace and Mooncake), so no benchmark
// request is one the models saw.
func trainingScenarios() []corpus.Scenario {
	return append(corpus.DefaultScenarios(),
		corpus.Scenario{Workload: workload.NameMixedSLO, Pool: "8x8b-h100"},
		corpus.Scenario{Workload: workload.NameAzureCode, Pool: "8x8b-h100"})
}

// compareMinTPOTTokens is the fewest output tokens a TPOT label needs in a comparison's
// training (trainer.Options.MinTPOTTokens): the Azure code trace's answers of a few tokens
// otherwise made the second generation's TPOT model lose to the first on holdout noise.
const compareMinTPOTTokens = 16

// recipe says how models are trained for a comparison with options o.
func recipe(o options) string {
	var b strings.Builder
	lo := o.learn
	fmt.Fprintf(&b, "seeds from %d, %d generations, %d requests, runs of %s, TPOT labels from %d tokens\n",
		firstModelSeed, modelGenerations, lo.samples, lo.runLength, compareMinTPOTTokens)
	fmt.Fprintf(&b, "trainer seed %d, quantile method %q, trees %d, depth %d, eta %v, bucket cap %d\n%s\n",
		o.seed, lo.method, lo.trees, lo.depth, lo.eta, lo.bucketCap, trainer.Form())
	for _, sc := range trainingScenarios() {
		fmt.Fprintf(&b, "%s\n", sc)
	}
	// Later generations' traffic is routed by Augur's policy too: a change to it changes
	// what the models learn.
	fmt.Fprintf(&b, "later generations also routed by augur %s\n", scheduler.BuiltinProfiles()["augur"].Picker.Args)
	return b.String()
}

// benchModels returns the models predictor-based policies use: those in --models DIR, else
// those trained earlier into modelsCache, else models it trains now on wind-tunnel traffic
// from seeds firstModelSeed on (never the benchmark's seeds) and keeps there.
func benchModels(ctx context.Context, o options, stdout io.Writer, progress func(string, ...any)) (*predictor.Set, string, error) {
	dir := o.compare.models
	if dir != "" {
		arts, err := models.ReadDir(dir)
		if err != nil {
			return nil, "", fmt.Errorf("--models: %w", err)
		}
		set, err := predictor.Load(arts)
		if err != nil {
			return nil, "", fmt.Errorf("--models %s: %w", dir, err)
		}
		note := fmt.Sprintf("%s from %s", set.Version(), dir)
		fmt.Fprintf(stdout, "models: %s\n", note)
		return set, note, nil
	}
	// The trainer's seed is the traffic's, not --seed's (which seeds single runs), so the
	// same comparison always trains the same models.
	o.seed = firstModelSeed
	want := recipe(o)
	if arts, err := models.ReadDir(modelsCache); err == nil && len(arts) > 0 {
		set, err := predictor.Load(arts)
		got, rerr := os.ReadFile(filepath.Join(modelsCache, recipeFile))
		switch {
		case err != nil:
			fmt.Fprintf(stdout, "models: those in %s do not load (%v): training new ones\n", modelsCache, err)
		case rerr != nil || string(got) != want:
			fmt.Fprintf(stdout, "models: those in %s were trained on other traffic than this comparison's: training new ones\n", modelsCache)
		default:
			note := fmt.Sprintf("%s, trained earlier on wind-tunnel traffic from seeds %d on, kept in %s (delete it to retrain)", set.Version(), firstModelSeed, modelsCache)
			fmt.Fprintf(stdout, "models: %s\n", note)
			return set, note, nil
		}
	}
	fmt.Fprintf(stdout, "models: none given (--models DIR): training them first on wind-tunnel traffic from seeds %d on, not the benchmark's\n", firstModelSeed)
	o.learn.minTPOTTokens = compareMinTPOTTokens
	tr, err := trainCorpus(ctx, o, trainingScenarios(), firstModelSeed, modelGenerations, stdout, progress)
	if err != nil {
		return nil, "", err
	}
	tr.stop()
	// Old models go first, so that a cache never holds models of two trainings.
	if err := os.RemoveAll(modelsCache); err != nil {
		return nil, "", err
	}
	if err := os.MkdirAll(modelsCache, 0o755); err != nil {
		return nil, "", err
	}
	if err := writeModels(modelsCache, tr.champions); err != nil {
		return nil, "", err
	}
	if err := os.WriteFile(filepath.Join(modelsCache, recipeFile), []byte(want), 0o644); err != nil {
		return nil, "", err
	}
	note := fmt.Sprintf("%s, trained now on wind-tunnel traffic from seeds %d on, kept in %s", tr.set.Version(), firstModelSeed, modelsCache)
	fmt.Fprintf(stdout, "models: %s\n", note)
	return tr.set, note, nil
}

// stats are a figure's mean over seeds and its range.
type stats struct {
	mean, lo, hi float64
	n            int
}

func over(cells []cell, get func(cell) *float64) stats {
	s := stats{lo: math.Inf(1), hi: math.Inf(-1)}
	for _, c := range cells {
		if v := get(c); v != nil && !math.IsNaN(*v) {
			s.mean += *v
			s.lo, s.hi = min(s.lo, *v), max(s.hi, *v)
			s.n++
		}
	}
	if s.n > 0 {
		s.mean /= float64(s.n)
	}
	return s
}

func (s stats) pct() string {
	if s.n == 0 {
		return "n/a"
	}
	if s.n == 1 || s.hi-s.lo < 0.0005 {
		return fmt.Sprintf("%.1f", 100*s.mean)
	}
	return fmt.Sprintf("%.1f (%.1f-%.1f)", 100*s.mean, 100*s.lo, 100*s.hi)
}

func (s stats) num(prec int) string {
	if s.n == 0 {
		return "-"
	}
	return strconv.FormatFloat(s.mean, 'f', prec, 64)
}

func attainmentOf(c cell) *float64 { return c.Attainment }

// writeComparison prints, per workload, attainment by load and policy, a detailed table, and
// the goals' verdicts.
func writeComparison(w io.Writer, res *comparison) {
	for _, wl := range res.Workloads {
		fmt.Fprintf(w, "\n%s on %s, capacity %.1f req/s: SLO attainment %% (mean over seeds %v, range)\n", wl.Name, wl.Pool, res.Capacities[wl.Name], res.Seeds)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprint(tw, "load\treq/s\t")
		for _, p := range res.Policies {
			fmt.Fprintf(tw, "%s\t", p)
		}
		fmt.Fprintln(tw)
		for _, l := range res.Loads {
			fmt.Fprintf(tw, "%.2fx\t%.1f\t", l, l*res.Capacities[wl.Name])
			for _, p := range res.Policies {
				fmt.Fprintf(tw, "%s\t", over(res.Results[wl.Name][loadKey(l)][p], attainmentOf).pct())
			}
			fmt.Fprintln(tw)
		}
		tw.Flush()

		classes := map[string]bool{}
		for _, byPol := range res.Results[wl.Name] {
			for _, cells := range byPol {
				for _, c := range cells {
					for k := range c.ByClass {
						classes[k] = true
					}
				}
			}
		}
		cls := make([]string, 0, len(classes))
		for k := range classes {
			cls = append(cls, k)
		}
		sort.Strings(cls)
		fmt.Fprintf(w, "\n%s: per policy and load (means over seeds; latencies in ms)\n", wl.Name)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprint(tw, "load\tpolicy\tslo%\t")
		for _, k := range cls {
			fmt.Fprintf(tw, "%s%%\t", k)
		}
		fmt.Fprintln(tw, "goodput/s\tttft p50\tttft p99\ttpot p99\thit%\t")
		for _, l := range res.Loads {
			for _, p := range res.Policies {
				cells := res.Results[wl.Name][loadKey(l)][p]
				fmt.Fprintf(tw, "%.2fx\t%s\t%s\t", l, p, over(cells, attainmentOf).pct())
				for _, k := range cls {
					fmt.Fprintf(tw, "%s\t", over(cells, func(c cell) *float64 { return c.ByClass[k] }).pct())
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n",
					over(cells, func(c cell) *float64 { return c.GoodputRPS }).num(2),
					over(cells, func(c cell) *float64 { return c.TTFTP50 }).num(0),
					over(cells, func(c cell) *float64 { return c.TTFTP99 }).num(0),
					over(cells, func(c cell) *float64 { return c.TPOTP99 }).num(1),
					pctOrDash(over(cells, func(c cell) *float64 { return c.HitRate })))
			}
		}
		tw.Flush()
		writeVerdicts(w, res, wl)
	}
}

func pctOrDash(s stats) string {
	if s.n == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", 100*s.mean)
}

// writeVerdicts states Augur's standing against the goals on one workload.
func writeVerdicts(w io.Writer, res *comparison, wl benchWorkload) {
	if !slices.Contains(res.Policies, "augur") {
		return
	}
	att := func(l float64, p string) stats { return over(res.Results[wl.Name][loadKey(l)][p], attainmentOf) }
	var baselines []string
	for _, p := range res.Policies {
		if p != "augur" && p != "clairvoyant" {
			baselines = append(baselines, p)
		}
	}
	var behind []string
	knee := -1.0
	for _, l := range res.Loads {
		a := att(l, "augur")
		bestBase, bestName := -1.0, ""
		for _, b := range baselines {
			if s := att(l, b); s.n > 0 && s.mean > bestBase {
				bestBase, bestName = s.mean, b
			}
		}
		if a.n > 0 && bestBase >= 0 && a.mean < bestBase-0.01 {
			behind = append(behind, fmt.Sprintf("%.2fx: %.1f vs %s %.1f", l, 100*a.mean, bestName, 100*bestBase))
		}
		if knee < 0 && bestBase >= 0 && bestBase < 0.8 {
			knee = l
			gain := 100 * (a.mean - bestBase)
			line := fmt.Sprintf("%s: at %.2fx, where the best baseline (%s) falls below 80%% (%.1f%%), Augur scores %.1f%%: %+.1f points",
				wl.Name, l, bestName, 100*bestBase, 100*a.mean, gain)
			goal := "goal +15: " + metOrMissed(gain >= 15)
			if cv := att(l, "clairvoyant"); cv.n > 0 {
				over := 100 * (cv.mean - bestBase)
				line += fmt.Sprintf("; clairvoyant %.1f%% (%+.1f over the baseline)", 100*cv.mean, over)
				if over < 15 {
					// The goal cannot ask more than the limit gives: within 2 points of it.
					goal = fmt.Sprintf("goal within 2 points of the clairvoyant (%.1f): %s", 100*(cv.mean-a.mean), metOrMissed(100*(cv.mean-a.mean) <= 2))
				}
			}
			line += "; " + goal
			fmt.Fprintln(w, line)
		}
	}
	if len(behind) == 0 {
		fmt.Fprintf(w, "%s: Augur at least every baseline (within 1 point) at every load\n", wl.Name)
	} else {
		fmt.Fprintf(w, "%s: Augur more than 1 point behind a baseline at %s\n", wl.Name, strings.Join(behind, "; "))
	}
	if knee < 0 {
		fmt.Fprintf(w, "%s: no load of the ladder brings the best baseline below 80%%\n", wl.Name)
	}
	if slices.Contains(res.Policies, "clairvoyant") {
		worst, at, measured := 0.0, 0.0, false
		for _, l := range res.Loads {
			a, cv := att(l, "augur"), att(l, "clairvoyant")
			measured = measured || (a.n > 0 && cv.n > 0)
			if a.n > 0 && cv.n > 0 && cv.mean-a.mean > worst {
				worst, at = cv.mean-a.mean, l
			}
		}
		switch {
		case !measured:
		case at == 0:
			fmt.Fprintf(w, "%s: Augur at least the clairvoyant at every load\n", wl.Name)
		default:
			fmt.Fprintf(w, "%s: largest gap to the clairvoyant %.1f points (at %.2fx); goal within 5: %s\n", wl.Name, 100*worst, at, metOrMissed(100*worst <= 5))
		}
	}
}

// benchModelsDir is the directory of the models benchModels returns: --models, or the cache
// it trains into.
func benchModelsDir(ctx context.Context, o options, stderr io.Writer) (string, error) {
	if _, _, err := benchModels(ctx, o, stderr, progressTo(o, stderr)); err != nil {
		return "", err
	}
	if o.compare.models != "" {
		return o.compare.models, nil
	}
	return modelsCache, nil
}

func metOrMissed(ok bool) string {
	if ok {
		return "met"
	}
	return "missed"
}

// driftOnsets is the drift onsets of every run of res.
func driftOnsets(res *comparison) int64 {
	var n int64
	for _, loads := range res.Results {
		for _, pols := range loads {
			for _, cells := range pols {
				for _, c := range cells {
					n += c.DriftOnsets
				}
			}
		}
	}
	return n
}
