package predictor_test

import (
	"context"
	"testing"
	"time"

	"github.com/augur-llm/augur/models"
	"github.com/augur-llm/augur/picker"
	"github.com/augur-llm/augur/predictor"
	"github.com/augur-llm/augur/requestcontrol"
	"github.com/augur-llm/augur/scheduler"
	"github.com/augur-llm/augur/trainer"
	"github.com/augur-llm/augur/windtunnel/corpus"
	"github.com/augur-llm/augur/windtunnel/virtual"
	"github.com/augur-llm/augur/windtunnel/workload"
)

// het is a small heterogeneous pool (two fast replicas, one slow) under the mixed-SLO
// workload, and its capacity (corpus.CapacityOver, one-minute runs).
var (
	het         = corpus.Scenario{Workload: workload.NameMixedSLO, Pool: "2x8b-h100,1x8b-a100"}
	hetCapacity = 33.0
)

// hetModels trains models on wind-tunnel traffic of het at loads from a quarter to all of
// its capacity, with no replica slowed.
func hetModels(t testing.TB) *predictor.Set {
	t.Helper()
	var rows []trainer.Row
	_, err := corpus.Generate(context.Background(), corpus.Options{
		Scenarios: []corpus.Scenario{het}, Loads: []float64{0.4, 0.6, 0.8}, Duration: 60 * time.Second, Policies: []string{"prefix-load"},
		Capacities: map[corpus.Scenario]float64{het: hetCapacity},
		NewObservers: func(corpus.Run) []requestcontrol.Observer {
			return []requestcontrol.Observer{requestcontrol.ObserverFunc(func(c requestcontrol.Completion) {
				s := picker.SampleOf(c)
				if r, ok := trainer.RowOf(&s); ok {
					rows = append(rows, r)
				}
			})}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := trainer.Train(context.Background(), rows, nil, trainer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var arts []models.Artifact
	for _, tg := range rep.Targets {
		arts = append(arts, tg.Artifacts...)
	}
	set, err := predictor.Load(arts)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// driftRun is what a virtual-time run of het saw.
type driftRun struct {
	onsets []onsetAt
	// slowed counts sim-0's completions since the slowdown.
	slowed int
}

// runDrift runs het at load (a fraction of its capacity) for d with models set, replica sim-0
// slowed by factor from at on (factor 0: never).
func runDrift(t testing.TB, set *predictor.Set, load, factor float64, at, d time.Duration) driftRun {
	t.Helper()
	specs, err := virtual.ParsePool(het.Pool)
	if err != nil {
		t.Fatal(err)
	}
	clk := &virtual.Clock{}
	var out driftRun
	p := predictor.New(predictor.Options{Clock: clk, Log: quiet, SyncRefit: true, OnDrift: func(r string, tg models.Target, ratio float64) {
		out.onsets = append(out.onsets, onsetAt{replica: r, target: tg, ratio: ratio, completed: out.slowed})
	}})
	p.Swap(set)
	count := requestcontrol.ObserverFunc(func(c requestcontrol.Completion) {
		if c.Target.Name == "sim-0" && clk.Now().Sub(virtual.Epoch()) >= at {
			out.slowed++
		}
	})
	var slow []virtual.Slowdown
	if factor > 0 {
		slow = []virtual.Slowdown{{Replica: 0, At: at, Factor: factor}}
	}
	g, err := workload.New(het.Workload, workload.Options{Seed: 5, Ladder: workload.ConstantLadder(load*hetCapacity, d)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := virtual.Run(context.Background(), virtual.Config{Replicas: specs, Profile: scheduler.BuiltinProfiles()["prefix-load"], Seed: 5,
		Clock: clk, Predictor: p, Observers: []requestcontrol.Observer{count, p}, Slowdowns: slow}, g.Next); err != nil {
		t.Fatal(err)
	}
	for _, s := range specs {
		st := p.Drift(s.Name)
		t.Logf("x%.1f: %s: drifting %v, TTFT x%.2f, TPOT x%.2f, %d completions", factor, s.Name, st.Drifting, st.TTFT, st.TPOT, st.TPOTSamples)
	}
	return out
}

// In virtual time, with models trained on the pool's traffic, a replica that slows 1.5x
// mid-run drifts within 500 of its requests, and no other replica does; without the slowdown
// none does.
func TestDriftInVirtualTime(t *testing.T) {
	set := hetModels(t)
	const at, d = 20 * time.Second, 80 * time.Second
	if stable := runDrift(t, set, 0.6, 0, at, d); len(stable.onsets) != 0 {
		t.Errorf("no replica slowed: onsets %+v", stable.onsets)
	}
	slowed := runDrift(t, set, 0.6, 1.5, at, d)
	if len(slowed.onsets) != 1 || slowed.onsets[0].replica != "sim-0" {
		t.Fatalf("sim-0 slowed 1.5x: onsets %+v (sim-0 completed %d requests since)", slowed.onsets, slowed.slowed)
	}
	o := slowed.onsets[0]
	t.Logf("sim-0 slowed 1.5x at %v: drifting after %d of its completions (%s x%.2f); %d by the end", at, o.completed, o.target, o.ratio, slowed.slowed)
	if o.completed > 500 {
		t.Errorf("onset after %d of sim-0's completions, want at most 500", o.completed)
	}
}
