package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/augur-llm/augur/models"
	"github.com/augur-llm/augur/picker"
	"github.com/augur-llm/augur/predictor"
	"github.com/augur-llm/augur/requestcontrol"
	"github.com/augur-llm/augur/store"
	"github.com/augur-llm/augur/trainer"
	"github.com/augur-llm/augur/windtunnel/corpus"
	"github.com/augur-llm/augur/windtunnel/virtual"
)

// learnOptions are the flags of --learn.
type learnOptions struct {
	samples, testSamples int
	runLength            time.Duration
	modelsOut            string
	method               string
	trees, depth         int
	eta                  float64
	bucketCap            int
	minTPOTTokens        int // trainer.Options.MinTPOTTokens; set by comparisons
	byRun                bool
}

// Held-out traffic comes from seeds from here on; training traffic from 1 up.
const firstTestSeed = 1001

// learn is bench --learn: the learning loop in the wind tunnel. Virtual traffic (mixed
// workloads, heterogeneous pools, idle to 1.5x capacity, 10% of decisions explored) from
// seeds 1, 2, ... is recorded to Postgres by the picker's own recorder until --samples
// requests were; the trainer trains from Postgres exactly as its production job does; the
// models it publishes are then judged on traffic from seeds 1001, 1002, ..., which neither
// they nor the trainer's holdout saw.
func learn(ctx context.Context, o options, stdout, stderr io.Writer) error {
	lo := o.learn
	progress := progressTo(o, stderr)
	tr, err := trainCorpus(ctx, o, corpus.DefaultScenarios(), 1, 1, stdout, progress)
	if err != nil {
		return err
	}
	defer tr.stop()
	if err := tr.report.WriteTable(stdout); err != nil {
		return err
	}
	set := tr.set
	if lo.modelsOut != "" {
		if err := writeModels(lo.modelsOut, tr.champions); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "\nmodels %s written to %s\n", set.Version(), lo.modelsOut)
	}
	caps, at := tr.caps, tr.end

	// Judgement on traffic from seeds the trainer never saw.
	var rows []trainer.Row
	var tags []string
	start, requests, seeds := time.Now(), 0, 0
	for seed := uint64(firstTestSeed); len(rows) < lo.testSamples; seed++ {
		sum, err := corpus.Generate(ctx, corpus.Options{
			Seeds: []uint64{seed}, Duration: lo.runLength, Capacities: caps, Start: at,
			NewObservers: func(r corpus.Run) []requestcontrol.Observer {
				tag := fmt.Sprintf("%s/%.2f", r.Scenario, r.Load)
				return []requestcontrol.Observer{requestcontrol.ObserverFunc(func(c requestcontrol.Completion) {
					s := picker.SampleOf(c)
					if row, ok := trainer.RowOf(&s); ok {
						rows, tags = append(rows, row), append(tags, tag)
					}
				})}
			},
			Progress: func(done, total int, r corpus.Run) {
				progress("\rheld-out traffic, seed %d: run %d/%d            ", seed, done, total)
			},
		})
		if err != nil {
			return err
		}
		requests, seeds, at = requests+sum.Requests, seeds+1, sum.End
	}
	progress("\n")
	fmt.Fprintf(stdout, "\nheld-out traffic: seeds %d-%d (not trained on), %d requests, %d labelled samples, in %s\n",
		firstTestSeed, firstTestSeed+seeds-1, requests, len(rows), time.Since(start).Round(10*time.Millisecond))
	for _, t := range models.Targets() {
		m, u := trainer.Evaluate(set, t, rows, 0.9)
		fmt.Fprintf(stdout, "\n%s on held-out seeds (models %s):\n", strings.ToUpper(string(t)), set.Version())
		if err := trainer.WriteEvaluation(stdout, m, u, nil, nil); err != nil {
			return err
		}
		writeGoals(stdout, m, u)
		if lo.byRun {
			if err := writeByRun(stdout, set, t, rows, tags); err != nil {
				return err
			}
		}
	}
	return nil
}

// The accuracy goals of the learning loop.
const (
	goalMAPE          = 0.06
	goalCoverageLo    = 0.87
	goalCoverageHi    = 0.93
	goalRegimeSamples = 1000
)

// writeGoals states, against the goals, the overall MAPE and the p90 coverage overall and in
// every regime with enough samples.
func writeGoals(w io.Writer, m, u models.Evaluation) {
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "MISSED"
	}
	fmt.Fprintf(w, "goal: MAPE at most %.0f%%: %.1f%%, %s\n", 100*goalMAPE, 100*m.Overall.MAPE, verdict(m.Overall.MAPE <= goalMAPE))
	var off []string
	check := func(name string, x models.Metrics) {
		if x.Count >= goalRegimeSamples && (x.Coverage < goalCoverageLo || x.Coverage > goalCoverageHi) {
			off = append(off, fmt.Sprintf("%s %.1f%%", name, 100*x.Coverage))
		}
	}
	check("all", u.Overall)
	names := make([]string, 0, len(u.Regimes))
	for n := range u.Regimes {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		check(n, u.Regimes[n])
	}
	fmt.Fprintf(w, "goal: p90 coverage %.0f-%.0f%% overall and in every regime of at least %d samples: %s",
		100*goalCoverageLo, 100*goalCoverageHi, goalRegimeSamples, verdict(len(off) == 0))
	if len(off) > 0 {
		fmt.Fprintf(w, " (%s)", strings.Join(off, ", "))
	}
	fmt.Fprintln(w)
}

// writeByRun breaks the held-out evaluation down by scenario and load.
func writeByRun(w io.Writer, set *predictor.Set, t models.Target, rows []trainer.Row, tags []string) error {
	by := map[string][]trainer.Row{}
	for i := range rows {
		by[tags[i]] = append(by[tags[i]], rows[i])
	}
	keys := make([]string, 0, len(by))
	for k := range by {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "run\tsamples\tMAPE\tp90 coverage\t")
	for _, k := range keys {
		m, u := trainer.Evaluate(set, t, by[k], 0.9)
		if m.Overall.Count == 0 {
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%.1f%%\t%.1f%%\t\n", k, m.Overall.Count, 100*m.Overall.MAPE, 100*u.Overall.Coverage)
	}
	return tw.Flush()
}

func progressTo(o options, stderr io.Writer) func(format string, args ...any) {
	return func(format string, args ...any) {
		if !o.noProgress {
			fmt.Fprintf(stderr, format, args...)
		}
	}
}

func writeModels(dir string, arts []models.Artifact) error {
	for _, a := range arts {
		if err := models.WriteDir(dir, a); err != nil {
			return err
		}
	}
	return nil
}

// trained is what trainCorpus produced.
type trained struct {
	caps      map[corpus.Scenario]float64
	end       time.Time // where the training traffic ended in virtual time
	report    trainer.Report
	champions []models.Artifact
	set       *predictor.Set
	stop      func() // stops the database
}

// trainCorpus records virtual traffic of the scenarios from seeds firstSeed, firstSeed+1, ...
// to Postgres until --samples requests were, trains from it as the trainer job does, and
// loads the published models.
//
// With more than one generation, each further generation records half as much traffic again,
// with Augur's policy (on the previous generation's models) routing a third of the runs
// beside the baselines, and trains again from everything: a policy that decides on
// predictions drives the pool into states (queues it builds on purpose) that no baseline
// visits, and models learn those only from traffic it routed, as they do in production.
func trainCorpus(ctx context.Context, o options, scenarios []corpus.Scenario, firstSeed uint64, generations int, stdout io.Writer, progress func(string, ...any)) (tr trained, err error) {
	lo := o.learn
	tr.caps = map[corpus.Scenario]float64{}
	for _, sc := range scenarios {
		start := time.Now()
		c, err := corpus.Capacity(ctx, sc, firstSeed)
		if err != nil {
			return tr, err
		}
		tr.caps[sc] = c
		fmt.Fprintf(stdout, "capacity of %s: %.1f req/s (measured in %s)\n", sc, c, time.Since(start).Round(10*time.Millisecond))
	}

	url := o.recordDB
	if url == "" {
		url = "local"
	}
	db, where, stop, err := openDB(ctx, url, "augur_learn")
	if err != nil {
		return tr, err
	}
	tr.stop = stop
	defer func() {
		if err != nil {
			stop()
		}
	}()
	at, seed := virtual.Epoch(), firstSeed
	for gen := 1; gen <= max(generations, 1); gen++ {
		want := lo.samples
		copts := corpus.Options{Scenarios: scenarios, Capacities: tr.caps}
		var onsets atomic.Int64
		if gen > 1 {
			want = lo.samples / 2
			copts.Policies = append(corpus.DefaultPolicies(), "augur")
			copts.PredictorFor = predictorFor(tr.set, &onsets)
		}
		rec, drain := startRecorder(db, 2*want)
		start := time.Now()
		requests, runs, first := 0, 0, seed
		for ; requests < want; seed++ {
			copts.Seeds, copts.Duration, copts.Start = []uint64{seed}, lo.runLength, at
			copts.NewObservers = func(corpus.Run) []requestcontrol.Observer { return []requestcontrol.Observer{picker.Recording(rec)} }
			copts.Progress = func(done, total int, r corpus.Run) {
				progress("\rtraining traffic (generation %d), seed %d: run %d/%d (%s at %.2fx, %s)            ", gen, seed, done, total, r.Scenario, r.Load, r.Policy)
			}
			sum, err := corpus.Generate(ctx, copts)
			if err != nil {
				return tr, err
			}
			requests, runs, at = requests+sum.Requests, runs+len(sum.Runs), sum.End
		}
		progress("\n")
		recorded, err := drain(ctx)
		if err != nil {
			return tr, fmt.Errorf("recording: %w", err)
		}
		fmt.Fprintf(stdout, "training traffic, generation %d: seeds %d-%d, %d runs of %s (%d scenarios x %d loads per seed; policies %s), %d requests, %d samples recorded to %s in %s\n",
			gen, first, seed-1, runs, lo.runLength, len(tr.caps), len(corpus.DefaultLoads()), strings.Join(orDefault(copts.Policies, corpus.DefaultPolicies()), ", "),
			requests, recorded, where, time.Since(start).Round(10*time.Millisecond))
		if n := onsets.Load(); n > 0 {
			fmt.Fprintf(stdout, "generation %d traffic: the previous models' predictions drifted on a replica %d times (corrected while it lasted)\n", gen, n)
		}
		if err := tr.train(ctx, o, db, progress); err != nil {
			return tr, err
		}
		for _, t := range tr.report.Targets {
			fmt.Fprintf(stdout, "generation %d, %s: %s (%s)\n", gen, t.Target, t.Decision, t.Why)
		}
		if gen < generations {
			fmt.Fprintf(stdout, "generation %d models: %s\n", gen, tr.set.Version())
		}
	}
	tr.end = at
	return tr, nil
}

func orDefault(v, d []string) []string {
	if len(v) == 0 {
		return d
	}
	return v
}

// train trains from everything recorded and loads the champions.
func (tr *trained) train(ctx context.Context, o options, db *pgxpool.Pool, progress func(string, ...any)) error {
	lo := o.learn

	topts := trainer.Options{QuantileMethod: lo.method, BucketCap: lo.bucketCap, Params: trainer.DefaultParams(), Seed: o.seed,
		MinTPOTTokens: lo.minTPOTTokens}
	if lo.trees > 0 {
		topts.Params.Trees = lo.trees
	}
	if lo.depth > 0 {
		topts.Params.Depth = lo.depth
	}
	if lo.eta > 0 {
		topts.Params.Eta = lo.eta
	}
	topts.Progress = func(p trainer.Progress) {
		progress("\rtraining %s %s model: round %d/%d   ", p.Target, p.Model, p.Round, p.Rounds)
	}
	rep, err := trainer.Run(ctx, db, topts)
	progress("\n")
	if err != nil {
		return err
	}
	tr.report = rep
	if tr.champions, err = store.Champions(ctx, db); err != nil {
		return err
	}
	if tr.set, err = predictor.Load(tr.champions); err != nil {
		return fmt.Errorf("the published models do not load: %w", err)
	}
	return nil
}
