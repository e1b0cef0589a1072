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

// Capacity is where a pool stops keeping up, and it grows with the pool.
func TestCapacityGrowsWithThePool(t *testing.T) {
	// 30 s runs: the race detector makes two-minute ones slow.
	one, err := corpus.CapacityOver(context.Background(), corpus.Scenario{Workload: workload.NameMixedSLO, Pool: "1x8b-h100"}, 1, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if one < 3 || one > 100 {
		t.Fatalf("capacity of one 8B replica %v req/s", one)
	}
	two, err := corpus.CapacityOver(context.Background(), corpus.Scenario{Workload: workload.NameMixedSLO, Pool: "2x8b-h100"}, 1, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("capacity of one 8b-h100 replica %.1f req/s, of two %.1f", one, two)
	if !(two > 1.6*one && two < 2.5*one) {
		t.Errorf("twice the replicas: capacity %v against %v", two, one)
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

// A replayed trace starts at a row of each run's seed, so that runs of a corpus cover the
// whole trace rather than its first minutes again and again.
func TestGenerateReplaysTracesFromSeededRows(t *testing.T) {
	sc := corpus.Scenario{Workload: workload.NameAzureCode, Pool: "2x8b-h100"}
	first := map[uint64][]int{} // prompt tokens by run seed, in arrival order
	_, err := corpus.Generate(context.Background(), corpus.Options{
		Scenarios: []corpus.Scenario{sc}, Loads: []float64{1}, Seeds: []uint64{1, 2}, Duration: 2 * time.Second,
		Capacities: map[corpus.Scenario]float64{sc: 10}, Explore: -1,
		NewObservers: func(r corpus.Run) []requestcontrol.Observer {
			return []requestcontrol.Observer{requestcontrol.ObserverFunc(func(c requestcontrol.Completion) {
				first[r.Seed] = append(first[r.Seed], c.PromptTokens)
			})}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(first[1]) == 0 || len(first[2]) == 0 {
		t.Fatalf("completions %v", first)
	}
	slices.Sort(first[1])
	slices.Sort(first[2])
	if slices.Equal(first[1], first[2]) {
		t.Errorf("two seeds replayed the same rows: %v", first[1])
	}
}
