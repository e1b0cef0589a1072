package corpus_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/augur-llm/augur/requestcontrol"
	"github.com/augur-llm/augur/windtunnel/corpus"
	"github.com/augur-llm/augur/windtunnel/workload"
)

var small = corpus.Scenario{Workload: workload.NameMixedSLO, Pool: "2x8b-h100,1x8b-a100"}

// Capacity is where the pool stops keeping up: it keeps up at 80% of it and not at twice it.
func TestCapacityIsWhereThePoolStopsKeepingUp(t *testing.T) {
	c, err := corpus.Capacity(context.Background(), small, 1)
	if err != nil {
		t.Fatal(err)
	}
	if c < 5 || c > 200 {
		t.Fatalf("capacity of 3 8B replicas %v req/s", c)
	}
	t.Logf("capacity of %s: %.1f req/s", small, c)
	// A bigger pool has more.
	big, err := corpus.Capacity(context.Background(), corpus.Scenario{Workload: small.Workload, Pool: "4x8b-h100,2x8b-a100"}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !(big > 1.5*c) {
		t.Errorf("twice the replicas: capacity %v against %v", big, c)
	}
}

func TestGenerateLaysRunsOutInTime(t *testing.T) {
	var mu = map[time.Time]int{}
	var starts []time.Time
	const d = 5 * time.Second
	sum, err := corpus.Generate(context.Background(), corpus.Options{
		Scenarios: []corpus.Scenario{small}, Loads: []float64{0.2, 0.6, 1.2}, Seeds: []uint64{3}, Duration: d,
		Capacities: map[corpus.Scenario]float64{small: 30},
		NewObservers: func(r corpus.Run) []requestcontrol.Observer {
			starts = append(starts, r.Start)
			return []requestcontrol.Observer{requestcontrol.ObserverFunc(func(c requestcontrol.Completion) {
				if c.Dispatched.Before(r.Start) || !c.Dispatched.Before(r.Start.Add(d)) {
					t.Errorf("a request of the run starting %v dispatched at %v", r.Start, c.Dispatched)
				}
				mu[r.Start]++
			})}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Runs) != 3 || sum.Capacities[small] != 30 {
		t.Fatalf("runs %+v", sum.Runs)
	}
	total := 0
	for _, r := range sum.Runs {
		if r.Rate != r.Load*30 || r.Requests == 0 || mu[r.Start] != r.Requests {
			t.Errorf("run %+v: %d completions observed", r, mu[r.Start])
		}
		total += r.Requests
	}
	if total != sum.Requests {
		t.Errorf("%d requests in runs, %d in the summary", total, sum.Requests)
	}
	slices.SortFunc(starts, func(a, b time.Time) int { return a.Compare(b) })
	for i := 1; i < len(starts); i++ {
		if starts[i].Sub(starts[i-1]) != d {
			t.Errorf("runs start %v apart, want %v", starts[i].Sub(starts[i-1]), d)
		}
	}
	if !sum.End.Equal(starts[0].Add(3 * d)) {
		t.Errorf("end %v", sum.End)
	}
	// A policy that does not pick by score cannot explore.
	if _, err := corpus.Generate(context.Background(), corpus.Options{Scenarios: []corpus.Scenario{small}, Loads: []float64{0.1},
		Capacities: map[corpus.Scenario]float64{small: 30}, Policies: []string{"round-robin"}}); err == nil {
		t.Error("exploration with round-robin accepted")
	}
}
