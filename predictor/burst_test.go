package predictor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/augur-llm/augur/pool"
	"github.com/augur-llm/augur/requestcontrol"
	"github.com/augur-llm/augur/scheduler"
	"github.com/augur-llm/augur/trainer/trainertest"
)

// burst sends n requests at one instant through the request lifecycle with Augur's policy
// and trained models over 2 fast and 2 slow (1.7x) replicas, and returns how many each got.
// No token, scrape or clock tick happens in between: what spreads the burst is that every
// decision is dispatched, and so counted in the replica's in-flight work, before the next
// one is predicted.
func burst(t *testing.T, strategy string, n int) map[string]int {
	t.Helper()
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakePassiveClock(now)
	p := pool.New(clk, time.Minute)
	var eps []pool.Endpoint
	for i := range 4 {
		eps = append(eps, pool.Endpoint{Name: fmt.Sprintf("r%d", i), Address: fmt.Sprintf("10.0.0.%d:8000", i+1),
			Class: trainertest.Classes[i/2]})
	}
	if err := p.Set(eps); err != nil {
		t.Fatal(err)
	}
	for _, r := range p.Replicas() {
		r.SetMetrics(pool.Metrics{BlockSize: 16, NumGPUBlocks: 20000, ScrapedAt: now})
	}
	pred, _ := loaded(t)
	pc := scheduler.BuiltinProfiles()["augur"]
	pc.Picker.Args = json.RawMessage(fmt.Sprintf(`{"strategy":%q}`, strategy))
	prof, err := scheduler.DefaultRegistry().Build(pc, scheduler.Handle{Pool: p, Clock: clk, Seed: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := scheduler.NewWithPredictor(p, prof, 0, pred)
	if err != nil {
		t.Fatal(err)
	}
	d := requestcontrol.New(requestcontrol.Config{Pool: p, Scheduler: s, Clock: clk})
	got := map[string]int{}
	for i := range n {
		req := scheduler.Request{ID: fmt.Sprint(i), PromptTokens: 1000, MaxTokens: 200, Stream: true,
			SLO: scheduler.SLO{TTFT: 500 * time.Millisecond, TPOT: 50 * time.Millisecond}}
		d.Start(context.Background(), req, nil, now, func(f *requestcontrol.Flight, err error) {
			if err != nil {
				t.Fatal(err)
			}
			got[f.Targets()[0].Replica.Name]++
		})
	}
	return got
}

// A burst of 100 requests in the same millisecond spreads over the pool in proportion to
// what each replica can take, rather than landing on the replica that looked best when the
// burst began.
func TestBurstSpreadsByPredictedLoad(t *testing.T) {
	for _, strategy := range []string{scheduler.StrategyBestFit, scheduler.StrategyMostHeadroom} {
		got := burst(t, strategy, 100)
		t.Logf("%s: %v", strategy, got)
		fast, slow := got["r0"]+got["r1"], got["r2"]+got["r3"]
		for name, k := range got {
			if k > 40 {
				t.Errorf("%s: %s took %d of 100", strategy, name, k)
			}
		}
		for _, name := range []string{"r0", "r1", "r2", "r3"} {
			if got[name] == 0 {
				t.Errorf("%s: %s took none", strategy, name)
			}
		}
		// The slow class takes 1.7x longer per token queued: it should get clearly less.
		if r := float64(fast) / float64(slow); r < 1.3 || r > 2.4 {
			t.Errorf("%s: fast replicas took %d, slow %d (ratio %.2f), want about 1.7", strategy, fast, slow, r)
		}
	}
}
