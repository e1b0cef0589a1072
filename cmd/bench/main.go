// Command bench drives a workload through a scheduling policy and reports what users care
// about: SLO attainment, goodput, TTFT/TPOT/e2e percentiles, shedding, cache hits and
// per-replica load.
//
// Two targets run the same workload:
//
//	bench --virtual ...            simulated replicas and the real scheduler in virtual time
//	bench --gateway URL ...        real streaming OpenAI requests to a running gateway
//
// Examples:
//
//	bench --workload shared-prefix --rate 20 --duration 10m --replicas 8 --profile 32b-tp2-h100 --policy prefix-load
//	bench --workload shared-prefix --ladder published --policy round-robin --by-stage
//	bench --workload mixed-slo --pool 6x8b-h100,2x8b-a100 --rate 10 --duration 2m
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/augur-llm/augur/local/stack"

	"github.com/augur-llm/augur/picker"
	"github.com/augur-llm/augur/pool"
	"github.com/augur-llm/augur/scheduler"
	"github.com/augur-llm/augur/windtunnel/corpus"
	"github.com/augur-llm/augur/windtunnel/report"
	"github.com/augur-llm/augur/windtunnel/sim"
	"github.com/augur-llm/augur/windtunnel/virtual"
	"github.com/augur-llm/augur/windtunnel/workload"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type options struct {
	workload    string
	ladder      string
	rate        float64
	duration    time.Duration
	maxReqs     int
	outputLen   int
	trace       string
	seed        uint64
	replicas    int
	profile     string
	pool        string
	policy      string
	gateway     string
	localStack  bool
	model       string
	jsonPath    string
	byStage     bool
	noProgress  bool
	recordDB    string
	recordFile  string
	scrape      time.Duration
	learning    bool
	learn       learnOptions
	classes     bool
	flow        bool
	flowControl bool
	flowArgs    string
	comparing   bool
	compare     compareOptions
}

func parse(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.workload, "workload", workload.NameSharedPrefix, "workload: "+strings.Join(workload.Names(), ", "))
	fs.StringVar(&o.ladder, "ladder", "", `rate ladder "RATExSECONDS,..." or "published" (the shared-prefix ladder); overrides --rate/--duration`)
	fs.Float64Var(&o.rate, "rate", 5, "constant arrival rate, requests/s (Poisson)")
	fs.DurationVar(&o.duration, "duration", time.Minute, "run length at --rate")
	fs.IntVar(&o.maxReqs, "requests", 0, "stop after this many requests (0: when the ladder ends)")
	fs.IntVar(&o.outputLen, "output-len", 0, "shared-prefix output tokens (0: the benchmark's 1000)")
	fs.StringVar(&o.trace, "trace", "", "trace file (Azure CSV or Mooncake JSONL) for --workload trace; replaces the shared file of azure-conv, azure-code and mooncake")
	fs.Uint64Var(&o.seed, "seed", 1, "seed of the workload, the replicas and the scheduler")
	fs.IntVar(&o.replicas, "replicas", 8, "virtual: number of replicas (with --profile)")
	fs.StringVar(&o.profile, "profile", "32b-tp2-h100", "virtual: replica profile, one of "+strings.Join(sim.ProfileNames(), ", "))
	fs.StringVar(&o.pool, "pool", "", `virtual: heterogeneous pool "COUNTxPROFILE,...", e.g. 6x8b-h100,2x8b-a100 (overrides --replicas/--profile)`)
	fs.StringVar(&o.policy, "policy", "prefix-load", "virtual: scheduling profile: "+strings.Join(policyNames(), ", "))
	fs.DurationVar(&o.scrape, "scrape-interval", pool.DefaultScrapeInterval, "virtual and --local-stack: how often the picker scrapes every replica's metrics")
	fs.StringVar(&o.gateway, "gateway", "", "send real requests to this gateway base URL (e.g. http://127.0.0.1:8080/v1) instead of simulating")
	fs.BoolVar(&o.localStack, "local-stack", false, "start simulated replicas (--replicas, --profile), the picker (--policy) and the gateway on loopback, and send real requests through them")
	fs.StringVar(&o.model, "model", "sim-llama-8b", "gateway: model name to request")
	fs.StringVar(&o.jsonPath, "json", "", "also write the report as JSON to this file (- for stdout)")
	fs.BoolVar(&o.byStage, "by-stage", false, "report every ladder stage as well")
	fs.BoolVar(&o.noProgress, "no-progress", false, "no progress bar")
	fs.StringVar(&o.recordDB, "record-db", "", `virtual: record every request's sample to this Postgres URL, as the picker does ("local": start one under .cache/bench-postgres)`)
	fs.StringVar(&o.recordFile, "record-file", "", "virtual: write every request's sample to this CSV file, in the request_samples schema")
	fs.BoolVar(&o.learning, "learn", false, "the learning loop in the wind tunnel: record virtual traffic from seeds 1, 2, ... to --record-db (default local: database augur_learn under .cache/bench-postgres, emptied first), train from it, judge the models on traffic from seeds 1001, 1002, ...")
	fs.IntVar(&o.learn.samples, "samples", 100_000, "learn: training requests to simulate (seeds 1, 2, ... until reached)")
	fs.IntVar(&o.learn.testSamples, "test-samples", 50_000, "learn: held-out samples to judge on (seeds 1001, 1002, ...)")
	fs.DurationVar(&o.learn.runLength, "run-length", 15*time.Second, "learn: arrivals of each run (scenario, load, seed)")
	fs.StringVar(&o.learn.modelsOut, "models-out", "", "learn: also write the published models to this directory")
	fs.StringVar(&o.learn.method, "quantile-method", "", "learn: calibrated (default) or pinball")
	fs.IntVar(&o.learn.trees, "trees", 0, "learn: boosting rounds (0: the trainer's default)")
	fs.IntVar(&o.learn.depth, "depth", 0, "learn: tree depth (0: the trainer's default)")
	fs.Float64Var(&o.learn.eta, "eta", 0, "learn: learning rate (0: the trainer's default)")
	fs.IntVar(&o.learn.bucketCap, "bucket-cap", 0, "learn: training samples kept per balancing bucket (0: the trainer's default, -1: all)")
	fs.BoolVar(&o.learn.byRun, "by-run", false, "learn: break the held-out accuracy down by scenario and load")
	fs.BoolVar(&o.classes, "classes", false, "give every request one of the mixed-slo reference classes (objectives, priority, tenant) by a seeded rule, for workloads without objectives of their own")
	fs.BoolVar(&o.flowControl, "flow-control", false, "virtual: admit requests through Augur's flow control, with one objective per class of the workload (its priority and SLOs); the report adds time queued and 429s per class")
	fs.StringVar(&o.flowArgs, "flow-args", "", `--flow-control and --flow: flow control settings over the defaults, as JSON (flowcontrol.Config), e.g. '{"ordering":"deadline","saturation":{"stepShare":0.9}}'`)
	fs.BoolVar(&o.flow, "flow", false, "virtual time: overload mixed-slo on 8x8b-h100 (--capacities mixed-slo=REQ/S) at --loads with no flow control, llm-d's design (1 ms ticker, utilization detector) and Augur's, under --policy, over --seeds; print attainment, shedding and time queued per class")
	fs.BoolVar(&o.comparing, "compare", false, "virtual time: run every --policies policy over every --workloads workload's load ladder (--loads x capacity, measured unless --capacities) and --seeds, each run --duration long, with the same arrivals for every policy; print attainment and latency side by side")
	fs.StringVar(&o.compare.workloads, "workloads", "shared-prefix,mixed-slo,heterogeneous", "compare: workloads")
	fs.StringVar(&o.compare.policies, "policies", strings.Join(comparePolicies, ","), "compare: policies")
	fs.StringVar(&o.compare.loads, "loads", "0.25,0.5,0.75,1,1.25,1.5", "compare: loads, as multiples of each workload's capacity")
	fs.StringVar(&o.compare.seeds, "seeds", "1,2,3", "compare: seeds (below 2001, which train models)")
	fs.StringVar(&o.compare.capacities, "capacities", "", `compare: known capacities "WORKLOAD=REQ/S,..." instead of measuring them`)
	fs.StringVar(&o.compare.plots, "plots", "", "compare: write PNG charts to this directory")
	fs.StringVar(&o.compare.models, "models", "", "latency models (a directory of artifacts) for the policies that predict; default: train them first on other seeds (kept in "+modelsCache+")")
	fs.StringVar(&o.compare.sloArgs, "slo-args", "", `compare: the SLO picker's arguments for augur and clairvoyant instead of the profile's, e.g. '{"explore":0,"tpotQuantile":"mean"}' (they replace the profile's, tpotQuantile included)`)
	fs.IntVar(&o.compare.parallel, "parallel", 0, "compare: runs at once (0: one per core)")
	fs.StringVar(&o.compare.oracleSpec, "oracle", "", `compare: an ablation: the clairvoyant's predictions replace the models' for the policies that predict, "TARGETS[:OBJECTIVES]", e.g. "ttft", "tpot" or "ttft:batch" (only requests of those objectives)`)
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.comparing && (o.learning || o.localStack || o.gateway != "" || o.recordDB != "" || o.recordFile != "" || o.classes || o.trace != "") {
		return o, fmt.Errorf("--compare runs its own workloads in virtual time: drop --learn, --local-stack, --gateway, recording, --classes and --trace")
	}
	if o.trace != "" && !slices.Contains([]string{workload.NameTrace, workload.NameAzureConv, workload.NameAzureCode, workload.NameMooncake}, o.workload) {
		return o, fmt.Errorf("--trace: workload %s replays no trace", o.workload)
	}
	if err := checkSLOArgs(o.compare.sloArgs); err != nil {
		return o, err
	}
	if o.flowControl && (o.localStack || o.gateway != "" || o.comparing || o.learning || o.flow) {
		return o, fmt.Errorf("--flow-control applies to single virtual runs (--flow compares flow-control designs itself)")
	}
	if o.compare.oracleSpec != "" {
		if !o.comparing {
			return o, fmt.Errorf("--oracle applies to --compare only")
		}
		var err error
		if o.compare.oracle, err = virtual.ParseOracle(o.compare.oracleSpec); err != nil {
			return o, fmt.Errorf("--oracle: %w", err)
		}
	}
	if o.compare.sloArgs != "" && !o.comparing && !o.flow {
		return o, fmt.Errorf("--slo-args applies to --compare and --flow only; a single run takes the profile of --policy")
	}
	if o.comparing && o.duration <= 0 {
		return o, fmt.Errorf("--duration %v: each compared run needs a positive length", o.duration)
	}
	if o.classes && !slices.Contains([]string{workload.NameSharedPrefix, workload.NameMultiTurn, workload.NameAgentic}, o.workload) {
		return o, fmt.Errorf("--classes: workload %s assigns classes of its own", o.workload)
	}
	if o.learning && (o.localStack || o.gateway != "" || o.recordFile != "") {
		return o, fmt.Errorf("--learn runs in virtual time and records to --record-db")
	}
	if o.learning && (o.learn.samples < 1000 || o.learn.testSamples < 1000 || o.learn.runLength < time.Second) {
		return o, fmt.Errorf("--samples and --test-samples must be at least 1000, --run-length at least 1s")
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %v", fs.Args())
	}
	if o.localStack && (o.gateway != "" || o.pool != "") {
		return o, fmt.Errorf("--local-stack starts its own gateway and a uniform pool: drop --gateway and --pool")
	}
	if (o.recordDB != "" || o.recordFile != "") && (o.localStack || o.gateway != "") {
		return o, fmt.Errorf("--record-db and --record-file record virtual runs; over HTTP the picker records (its databaseURL)")
	}
	if o.scrape <= 0 {
		return o, fmt.Errorf("--scrape-interval must be positive")
	}
	if o.recordDB != "" && o.recordFile != "" {
		return o, fmt.Errorf("set --record-db or --record-file, not both")
	}
	if _, ok := scheduler.BuiltinProfiles()[o.policy]; !ok && o.gateway == "" {
		return o, fmt.Errorf("--policy %q: unknown (known: %s)", o.policy, strings.Join(policyNames(), ", "))
	}
	return o, nil
}

func policyNames() []string {
	var names []string
	for n := range scheduler.BuiltinProfiles() {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func (o options) generator() (workload.Generator, workload.Ladder, error) {
	var ladder workload.Ladder
	var err error
	switch o.ladder {
	case "":
		if o.rate <= 0 || o.duration <= 0 {
			return nil, nil, fmt.Errorf("--rate and --duration must be positive")
		}
		ladder = workload.ConstantLadder(o.rate, o.duration)
	case "published":
		ladder = workload.SharedPrefixLadder()
	default:
		if ladder, err = workload.ParseLadder(o.ladder); err != nil {
			return nil, nil, fmt.Errorf("--ladder: %w", err)
		}
	}
	maxLen := 0
	if specs, err := o.replicaSpecs(); err == nil {
		maxLen = corpus.MaxModelLen(specs)
	}
	g, err := workload.New(o.workload, workload.Options{Seed: o.seed, Ladder: ladder, MaxRequests: o.maxReqs,
		SharedPrefix: workload.SharedPrefixOptions{OutputLen: o.outputLen}, Trace: workload.TraceOptions{Path: o.trace, MaxModelLen: maxLen}})
	if err == nil && o.classes {
		g, err = workload.WithClasses(g, o.seed, nil)
	}
	return g, ladder, err
}

func (o options) replicaSpecs() ([]virtual.ReplicaSpec, error) {
	if o.pool != "" {
		return virtual.ParsePool(o.pool)
	}
	return virtual.ParsePool(fmt.Sprintf("%dx%s", o.replicas, o.profile))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parse(args, stderr)
	if err != nil {
		return err
	}
	if o.learning {
		return learn(ctx, o, stdout, stderr)
	}
	if o.comparing {
		o.compare.runLength = o.duration
		return compare(ctx, o, stdout, stderr)
	}
	if o.flow {
		return flowBench(ctx, o, stdout, stderr)
	}
	m, err := execute(ctx, o, stderr)
	if err != nil {
		return err
	}
	rep := m.report(o)
	fmt.Fprintf(stdout, "workload %s, seed %d, %s; %d requests in %s of wall time\n", o.workload, o.seed, m.target, len(m.outcomes), m.wall.Round(time.Millisecond))
	if err := rep.WriteText(stdout); err != nil {
		return err
	}
	if p := m.path; p != nil {
		fmt.Fprintf(stdout, "HTTP path: client TTFT mean %.1f ms, of which %.1f ms in the replicas' engines and %.1f ms outside them (client, gateway, picker, loopback)\n",
			ms(p.clientTTFT), ms(p.engineTTFT), ms(p.outside()))
	}
	fmt.Fprint(stdout, m.recorded)
	if o.jsonPath == "" {
		return nil
	}
	if o.jsonPath == "-" {
		return rep.WriteJSON(stdout)
	}
	f, err := os.Create(o.jsonPath)
	if err != nil {
		return fmt.Errorf("--json: %w", err)
	}
	if err := rep.WriteJSON(f); err != nil {
		f.Close()
		return fmt.Errorf("--json: %w", err)
	}
	return f.Close()
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// measurement is what one run of the workload produced.
type measurement struct {
	ladder       workload.Ladder
	outcomes     []report.Outcome
	target       string
	replicaNames []string
	recorded     string
	wall         time.Duration
	path         *pathStats // --local-stack only
}

// pathStats splits the TTFT a local-stack client measured into the replicas' engines' own
// share and the rest: what the client, gateway, picker and loopback added. On an idle machine
// the rest is a millisecond or two; when it is much more, the machine was too busy for the
// HTTP measurement to stand for production.
type pathStats struct {
	clientTTFT time.Duration // mean over the requests that produced a first token
	engineTTFT time.Duration // mean over the same requests, arrival at the engine to first token
}

func (p pathStats) outside() time.Duration { return p.clientTTFT - p.engineTTFT }

func (m measurement) report(o options) *report.Report {
	ro := report.Options{PerStage: o.byStage, Replicas: m.replicaNames, Window: report.Window{From: m.ladder.WarmupEnd()}}
	for i, st := range m.ladder {
		ro.StageWindows = append(ro.StageWindows, report.Window{From: m.ladder.Start(i), To: m.ladder.Start(i) + st.Duration})
	}
	return report.Compute(m.outcomes, ro)
}

// execute runs the workload o describes against its target.
func execute(ctx context.Context, o options, stderr io.Writer) (measurement, error) {
	var m measurement
	g, ladder, err := o.generator()
	if err != nil {
		return m, err
	}
	m.ladder = ladder
	bar := newProgress(stderr, ladder.Duration(), !o.noProgress)
	start := time.Now()
	switch {
	case o.localStack:
		prof := scheduler.BuiltinProfiles()[o.policy]
		pc := picker.Config{Profile: &prof, Seed: o.seed, ScrapeInterval: metav1.Duration{Duration: o.scrape}}
		if usesPredictor(o.policy) {
			// The picker loads the same models a virtual run of the policy uses.
			dir, err2 := benchModelsDir(ctx, o, stderr)
			if err2 != nil {
				return m, err2
			}
			pc.Models = picker.ModelsConfig{Source: picker.ModelsFromDirectory, Directory: dir}
		}
		st, err2 := stack.Start(ctx, stack.Config{Replicas: o.replicas, Profile: o.profile, Model: o.model, Seed: o.seed, Picker: pc})
		if err2 != nil {
			return m, err2
		}
		m.target = fmt.Sprintf("local stack over HTTP, %d replicas, policy %s", o.replicas, o.policy)
		for _, r := range st.Replicas {
			m.replicaNames = append(m.replicaNames, r.Name)
		}
		m.outcomes, err = drive(ctx, st.GatewayURL, o.model, g, bar)
		m.path = pathOf(m.outcomes, st)
		if cerr := st.Close(); err == nil {
			err = cerr
		}
	case o.gateway != "":
		m.target = "gateway " + o.gateway
		m.outcomes, err = drive(ctx, o.gateway, o.model, g, bar)
	default:
		specs, err2 := o.replicaSpecs()
		if err2 != nil {
			return m, err2
		}
		m.target = fmt.Sprintf("virtual time, %d replicas, policy %s", len(specs), o.policy)
		for _, sp := range specs {
			m.replicaNames = append(m.replicaNames, sp.Name)
		}
		rec, err2 := openSink(ctx, o)
		if err2 != nil {
			return m, err2
		}
		vc := virtual.Config{Replicas: specs, Profile: scheduler.BuiltinProfiles()[o.policy], Seed: o.seed, ScrapeInterval: o.scrape,
			Progress: func(p virtual.Progress) { bar.update(p.Elapsed, p.Arrived, p.Completed) }}
		if o.flowControl {
			if vc.FlowControl, err = flowConfig("augur", o.flowArgs); err != nil {
				return m, err
			}
		}
		if usesPredictor(o.policy) {
			if o.seed >= firstModelSeed {
				return m, fmt.Errorf("--seed %d: seeds from %d on train the models", o.seed, firstModelSeed)
			}
			set, _, err2 := benchModels(ctx, o, stderr, progressTo(o, stderr))
			if err2 != nil {
				return m, err2
			}
			vc.PredictorFor = predictorFor(set, nil)
		}
		if rec != nil {
			vc.Observers = append(vc.Observers, rec.observer)
		}
		var res virtual.Result
		res, err = virtual.Run(ctx, vc, g.Next)
		m.outcomes = res.Outcomes
		if rec != nil {
			recStart := time.Now()
			n, ferr := rec.finish(ctx)
			if err == nil {
				err = ferr
			}
			m.recorded = fmt.Sprintf("samples: %d written to %s (%s after the run)\n", n, rec.where, time.Since(recStart).Round(time.Millisecond))
		}
	}
	m.wall = time.Since(start)
	if err != nil {
		fmt.Fprintln(stderr)
		return m, err
	}
	completed := 0
	for _, oc := range m.outcomes {
		if oc.Completed() {
			completed++
		}
	}
	bar.finish(len(m.outcomes), completed)
	return m, nil
}

// pathOf compares the clients' TTFTs with the engines' own, once every request has ended.
func pathOf(outcomes []report.Outcome, st *stack.Stack) *pathStats {
	var client time.Duration
	n := 0
	for _, oc := range outcomes {
		if oc.TTFT > 0 {
			client += oc.TTFT
			n++
		}
	}
	var engine time.Duration
	var firsts int64
	for _, r := range st.Replicas {
		s := r.Engine.Snapshot()
		engine += s.TTFTSum
		firsts += s.FirstTokens
	}
	if n == 0 || firsts != int64(n) {
		return nil // some first token never reached its client: no like-for-like comparison
	}
	return &pathStats{clientTTFT: client / time.Duration(n), engineTTFT: engine / time.Duration(firsts)}
}
