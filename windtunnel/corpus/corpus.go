package corpus

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"time"

	"k8s.io/utils/clock"

	"github.com/augur-llm/augur/requestcontrol"
	"github.com/augur-llm/augur/scheduler"
	"github.com/augur-llm/augur/windtunnel/report"
	"github.com/augur-llm/augur/windtunnel/virtual"
	"github.com/augur-llm/augur/windtunnel/workload"
)

// Scenario is a workload on a pool ("COUNTxPROFILE,...", see virtual.ParsePool).
type Scenario struct {
	Workload string
	Pool     string
}

func (s Scenario) String() string { return s.Workload + " on " + s.Pool }

// DefaultScenarios mix the workloads over two heterogeneous pools: the reference mix on a
// pool of fast and slow 8B replicas, the shared-prefix, multi-turn and agentic shapes on
// the same pool, and the reference mix on 32B replicas.
func DefaultScenarios() []Scenario {
	const het = "6x8b-h100,2x8b-a100"
	return []Scenario{
		{workload.NameMixedSLO, het},
		{workload.NameSharedPrefix, het},
		{workload.NameMultiTurn, het},
		{workload.NameAgentic, het},
		{workload.NameMixedSLO, "4x32b-tp2-h100"},
	}
}

// DefaultLoads are the loads of a corpus, as fractions of each scenario's capacity: from
// nearly idle to half again beyond what the pool keeps up with.
func DefaultLoads() []float64 { return []float64{0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5} }

// DefaultPolicies alternate between runs: llm-d's scorer blend (which herds on stale
// metrics) and prefix affinity weighed against the picker's own in-flight load.
func DefaultPolicies() []string { return []string{"llm-d", "prefix-load"} }

// DefaultExplore is the share of decisions routed at random.
const DefaultExplore = 0.1

// Capacity measurement (see Capacity).
const (
	// CapacityWindow is the length of the runs Capacity measures with.
	CapacityWindow   = 120 * time.Second
	capacityComplete = 0.97
)

// Capacity is the highest arrival rate, in requests/s, at which the scenario's pool keeps
// up with its workload under the prefix-load policy: of the requests that arrive in the first
// three quarters of a two-minute run, at least 97% complete within the run. It is found by
// doubling, then bisecting to within 3%.
func Capacity(ctx context.Context, sc Scenario, seed uint64) (float64, error) {
	return CapacityOver(ctx, sc, seed, CapacityWindow)
}

// CapacityOver is Capacity measured with runs of length window instead of two minutes: a
// shorter window measures faster and counts a slowly growing backlog as kept up with.
func CapacityOver(ctx context.Context, sc Scenario, seed uint64, window time.Duration) (float64, error) {
	return CapacityWith(ctx, sc, seed, window, scheduler.BuiltinProfiles()["prefix-load"], nil)
}

// CapacityWith is CapacityOver under the scheduling profile prof, with the workload's
// requests passed through wrap when it is not nil (to assign classes, say).
func CapacityWith(ctx context.Context, sc Scenario, seed uint64, window time.Duration, prof scheduler.ProfileConfig,
	wrap func(workload.Generator) (workload.Generator, error)) (float64, error) {
	if window < 10*time.Second {
		return 0, fmt.Errorf("corpus: capacity window %v: at least 10s", window)
	}
	specs, err := virtual.ParsePool(sc.Pool)
	if err != nil {
		return 0, err
	}
	keepsUp := func(rate float64) (bool, error) {
		// A trace is measured from its first row; runs start at seeded rows, so a run's load is
		// a fraction of the capacity the trace's beginning allows (its rate, not its burst
		// pattern, is what the fraction scales).
		g, err := workload.New(sc.Workload, workload.Options{Seed: seed, Ladder: workload.ConstantLadder(rate, window),
			Trace: workload.TraceOptions{MaxModelLen: MaxModelLen(specs)}})
		if err != nil {
			return false, err
		}
		if wrap != nil {
			if g, err = wrap(g); err != nil {
				return false, err
			}
		}
		res, err := virtual.Run(ctx, virtual.Config{Replicas: specs, Profile: prof, Seed: seed}, g.Next)
		if err != nil {
			return false, err
		}
		return keptUp(res.Outcomes, window), nil
	}
	lo, hi := 0.0, 1.0
	for {
		ok, err := keepsUp(hi)
		if err != nil {
			return 0, err
		}
		if !ok {
			break
		}
		lo, hi = hi, hi*2
		if hi > 1e5 {
			return 0, fmt.Errorf("corpus: %s keeps up with %v req/s: no capacity found", sc, lo)
		}
	}
	for hi-lo > 0.03*hi {
		mid := (lo + hi) / 2
		ok, err := keepsUp(mid)
		if err != nil {
			return 0, err
		}
		if ok {
			lo = mid
		} else {
			hi = mid
		}
	}
	if lo == 0 {
		return 0, fmt.Errorf("corpus: %s does not keep up with 1 req/s", sc)
	}
	return lo, nil
}

func keptUp(outs []report.Outcome, window time.Duration) bool {
	cut := window * 3 / 4
	arrived, done := 0, 0
	for _, o := range outs {
		if o.Start >= cut {
			continue
		}
		arrived++
		if o.Completed() && o.End <= window {
			done++
		}
	}
	return arrived > 0 && float64(done) >= capacityComplete*float64(arrived)
}

// Options configure Generate. Zero values take the defaults.
type Options struct {
	Scenarios []Scenario
	Loads     []float64
	Seeds     []uint64      // one run per scenario, load and seed; default {1}
	Duration  time.Duration // of each run's arrivals; default 60 s
	Policies  []string      // built-in profiles, alternating run by run; default DefaultPolicies
	Explore   float64       // default DefaultExplore; negative: none
	// Capacities are known capacities by scenario, such as a previous Summary's; the others
	// are measured with CapacitySeed.
	Capacities   map[Scenario]float64
	CapacitySeed uint64
	// NewObservers returns the observers of one run (say, a recorder); called once per run.
	NewObservers func(Run) []requestcontrol.Observer
	// Predictor, when set, predicts every decision as the picker's does.
	Predictor scheduler.Predictor
	// PredictorFor, when set instead, builds each run's predictor on the run's virtual clock
	// (see virtual.Config.PredictorFor); policies that decide on predictions need one.
	PredictorFor func(clk clock.PassiveClock) scheduler.Predictor
	// Progress is told after each run.
	Progress func(done, total int, r Run)
	// Start is when the first run begins in virtual time (zero: virtual.Epoch()); the others
	// follow it.
	Start time.Time
	// Slowdowns slow replicas of every run (instants from each run's start), as a pool with a
	// degraded replica would.
	Slowdowns []virtual.Slowdown
}

// Run is one run of a corpus.
type Run struct {
	Scenario Scenario
	Load     float64 // fraction of capacity
	Rate     float64 // requests/s
	Seed     uint64
	Policy   string
	Start    time.Time // its first arrival's virtual time
	Requests int       // filled in after the run
}

// Summary is what Generate did.
type Summary struct {
	Runs       []Run
	Capacities map[Scenario]float64
	Requests   int
	// End is when the last run's arrivals end: where a following corpus may start.
	End time.Time
}

// Generate runs every scenario at every load for every seed and hands each completion to the
// run's observers. Runs follow one another in virtual time, in an order shuffled by the
// first seed, as a pool's traffic changes from hour to hour: a trainer's newest samples (its
// time-ordered holdout) then come from runs of every kind rather than from one scenario or
// from the end of every run at once.
func Generate(ctx context.Context, o Options) (Summary, error) {
	if len(o.Scenarios) == 0 {
		o.Scenarios = DefaultScenarios()
	}
	if len(o.Loads) == 0 {
		o.Loads = DefaultLoads()
	}
	if len(o.Seeds) == 0 {
		o.Seeds = []uint64{1}
	}
	if o.Duration <= 0 {
		o.Duration = time.Minute
	}
	if len(o.Policies) == 0 {
		o.Policies = DefaultPolicies()
	}
	if o.Explore == 0 {
		o.Explore = DefaultExplore
	}
	if o.Start.IsZero() {
		o.Start = virtual.Epoch()
	}
	sum := Summary{Capacities: map[Scenario]float64{}}
	for _, sc := range o.Scenarios {
		if c, ok := o.Capacities[sc]; ok && c > 0 {
			sum.Capacities[sc] = c
			continue
		}
		c, err := Capacity(ctx, sc, o.CapacitySeed)
		if err != nil {
			return sum, err
		}
		sum.Capacities[sc] = c
	}
	var runs []Run
	for _, seed := range o.Seeds {
		for _, sc := range o.Scenarios {
			for _, l := range o.Loads {
				runs = append(runs, Run{Scenario: sc, Load: l, Rate: l * sum.Capacities[sc], Seed: seed})
			}
		}
	}
	for i := range runs {
		runs[i].Policy = o.Policies[i%len(o.Policies)]
	}
	order := rand.New(rand.NewPCG(o.Seeds[0], 0xc0de)).Perm(len(runs))
	for slot, i := range order {
		r := &runs[i]
		r.Start = o.Start.Add(time.Duration(slot) * o.Duration)
		specs, err := virtual.ParsePool(r.Scenario.Pool)
		if err != nil {
			return sum, err
		}
		prof, ok := scheduler.BuiltinProfiles()[r.Policy]
		if !ok {
			return sum, fmt.Errorf("corpus: unknown policy %q", r.Policy)
		}
		if o.Explore > 0 {
			switch prof.Picker.Name {
			case "max-score":
				args, _ := json.Marshal(scheduler.MaxScoreArgs{Explore: o.Explore})
				prof.Picker.Args = args
			case "slo":
				args, _ := json.Marshal(scheduler.SLOArgs{Explore: o.Explore})
				prof.Picker.Args = args
			default:
				return sum, fmt.Errorf("corpus: policy %q picks with %q, which cannot explore", r.Policy, prof.Picker.Name)
			}
		}
		// Each run gets its own seed: workload, replicas and tie-breaks differ between runs.
		runSeed := r.Seed*1_000_003 + uint64(i)
		// A replayed trace starts at a row of the run's seed, so runs cover the whole trace.
		g, err := workload.New(r.Scenario.Workload, workload.Options{Seed: runSeed, Ladder: workload.ConstantLadder(r.Rate, o.Duration),
			Trace: workload.TraceOptions{MaxModelLen: MaxModelLen(specs), StartRow: rand.New(rand.NewPCG(runSeed, 0x726f77)).IntN(1 << 30)}})
		if err != nil {
			return sum, err
		}
		var obs []requestcontrol.Observer
		if o.NewObservers != nil {
			obs = o.NewObservers(*r)
		}
		res, err := virtual.Run(ctx, virtual.Config{Replicas: specs, Profile: prof, Seed: runSeed, Observers: obs,
			Predictor: o.Predictor, PredictorFor: o.PredictorFor, Start: r.Start, Slowdowns: o.Slowdowns}, g.Next)
		if err != nil {
			return sum, fmt.Errorf("corpus: %s at %.2fx: %w", r.Scenario, r.Load, err)
		}
		r.Requests = len(res.Outcomes)
		sum.Requests += r.Requests
		if o.Progress != nil {
			o.Progress(slot+1, len(runs), *r)
		}
	}
	sum.Runs = runs
	sum.End = o.Start.Add(time.Duration(len(runs)) * o.Duration)
	return sum, nil
}

// MaxModelLen is the longest request every replica of the pool accepts, so that a replayed
// trace fits the pool it runs on.
func MaxModelLen(specs []virtual.ReplicaSpec) int {
	n := 0
	for i, sp := range specs {
		if i == 0 || sp.Profile.MaxModelLen < n {
			n = sp.Profile.MaxModelLen
		}
	}
	return n
}
