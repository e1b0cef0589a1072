package virtual

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/augur-llm/augur/scheduler"
	"github.com/augur-llm/augur/windtunnel/report"
	"github.com/augur-llm/augur/windtunnel/sim"
	"github.com/augur-llm/augur/windtunnel/workload"
)

func pool8(t testing.TB, profile string, n int) []ReplicaSpec {
	t.Helper()
	p, err := sim.LookupProfile(profile)
	if err != nil {
		t.Fatal(err)
	}
	specs := make([]ReplicaSpec, n)
	for i := range specs {
		specs[i] = ReplicaSpec{Name: "sim-" + string(rune('a'+i)), Profile: p}
	}
	return specs
}

func sharedPrefix(t testing.TB, seed uint64, ladder workload.Ladder, out int) workload.Generator {
	t.Helper()
	g, err := workload.New(workload.NameSharedPrefix, workload.Options{Seed: seed, Ladder: ladder,
		SharedPrefix: workload.SharedPrefixOptions{OutputLen: out}})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func runOnce(t testing.TB, policy string, seed uint64, ladder workload.Ladder, out int) Result {
	t.Helper()
	res, err := Run(context.Background(), Config{Replicas: pool8(t, "32b-tp2-h100", 8), Profile: scheduler.BuiltinProfiles()[policy], Seed: seed},
		sharedPrefix(t, seed, ladder, out).Next)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestDeterministic(t *testing.T) {
	ladder := workload.ConstantLadder(6, 20*time.Second)
	a := runOnce(t, "prefix-load", 7, ladder, 100)
	b := runOnce(t, "prefix-load", 7, ladder, 100)
	if len(a.Outcomes) < 90 {
		t.Fatalf("only %d requests", len(a.Outcomes))
	}
	if !reflect.DeepEqual(a.Outcomes, b.Outcomes) || a.Elapsed != b.Elapsed || a.Events != b.Events {
		t.Fatal("two runs with the same seed differ")
	}
	if !reflect.DeepEqual(report.Compute(a.Outcomes, report.Options{}), report.Compute(b.Outcomes, report.Options{})) {
		t.Fatal("reports of identical runs differ")
	}
	c := runOnce(t, "prefix-load", 8, ladder, 100)
	if reflect.DeepEqual(a.Outcomes, c.Outcomes) {
		t.Fatal("a different seed gave the same run")
	}
}

func TestEveryRequestCompletes(t *testing.T) {
	res := runOnce(t, "round-robin", 1, workload.ConstantLadder(5, 20*time.Second), 50)
	perReplica := map[string]int{}
	for _, o := range res.Outcomes {
		if o.Status != 200 || o.OutputTokens != 50 || o.TTFT <= 0 || o.TPOT <= 0 || o.E2E < o.TTFT {
			t.Fatalf("outcome %+v", o)
		}
		perReplica[o.Replica]++
	}
	// Round-robin spreads evenly: every replica within one request of the others.
	lo, hi := len(res.Outcomes), 0
	for _, n := range perReplica {
		lo, hi = min(lo, n), max(hi, n)
	}
	if len(perReplica) != 8 || hi-lo > 1 {
		t.Fatalf("round-robin counts %v", perReplica)
	}
	var gen int64
	for _, r := range res.Replicas {
		gen += r.Snapshot.GenerationTokens
		if r.Snapshot.Running != 0 || r.Snapshot.Waiting != 0 {
			t.Fatalf("%s still busy at the end: %+v", r.Name, r.Snapshot)
		}
	}
	if gen != int64(50*len(res.Outcomes)) {
		t.Fatalf("replicas generated %d tokens, want %d", gen, 50*len(res.Outcomes))
	}
}

// At a rate round-robin cannot sustain on this pool, a prefix-affine policy keeps TTFT low,
// because it turns 6,000 of every 7,200 prompt tokens into cache hits.
func TestPrefixAffinityBeatsRoundRobinUnderLoad(t *testing.T) {
	ladder := workload.ConstantLadder(30, 40*time.Second)
	rr := report.Compute(runOnce(t, "round-robin", 3, ladder, 200).Outcomes, report.Options{})
	pl := report.Compute(runOnce(t, "prefix-load", 3, ladder, 200).Outcomes, report.Options{})
	rrTTFT, plTTFT, rrHit, plHit := *rr.Overall.TTFT.P50, *pl.Overall.TTFT.P50, *rr.Overall.PrefixHitRate, *pl.Overall.PrefixHitRate
	t.Logf("round-robin: TTFT p50 %.0f ms, hit rate %.2f; prefix-load: TTFT p50 %.0f ms, hit rate %.2f", rrTTFT, rrHit, plTTFT, plHit)
	if !(plHit > rrHit+0.3) || !(plTTFT*5 < rrTTFT) {
		t.Fatalf("prefix-load does not beat round-robin")
	}
}

// BenchmarkTenMinutesSharedPrefix is the yardstick: ten simulated minutes of the
// shared-prefix workload at 20 req/s with 1,000-token outputs on 8 replicas of 32b-tp2-h100.
func BenchmarkTenMinutesSharedPrefix(b *testing.B) {
	ladder := workload.ConstantLadder(20, 10*time.Minute)
	for b.Loop() {
		res := runOnce(b, "prefix-load", 1, ladder, 1000)
		b.ReportMetric(float64(len(res.Outcomes)), "requests")
		b.ReportMetric(res.Elapsed.Seconds(), "sim-s")
		b.ReportMetric(float64(res.Events), "events")
	}
}

// Issue 4's yardstick: at the rate where round-robin saturates (10 req/s on this pool), the
// llm-d default profile cuts the TTFT median at least tenfold and keeps the busiest replica
// within twice the quietest's request count.
func TestLLMDProfileAgainstRoundRobin(t *testing.T) {
	ladder := workload.ConstantLadder(10, 2*time.Minute)
	rr := report.Compute(runOnce(t, "round-robin", 5, ladder, 1000).Outcomes, report.Options{})
	ld := report.Compute(runOnce(t, "llm-d", 5, ladder, 1000).Outcomes, report.Options{})
	r, l := *rr.Overall.TTFT.P50, *ld.Overall.TTFT.P50
	t.Logf("TTFT p50: round-robin %.0f ms, llm-d %.0f ms (%.0fx); llm-d requests per replica max/min %.2f", r, l, r/l, *ld.ReplicaMaxMin)
	if r < 10*l {
		t.Errorf("llm-d TTFT p50 %.0f ms is not a tenth of round-robin's %.0f ms", l, r)
	}
	if *ld.ReplicaMaxMin > 2 {
		t.Errorf("llm-d per-replica requests max/min %.2f > 2: a hot-spot", *ld.ReplicaMaxMin)
	}
}
