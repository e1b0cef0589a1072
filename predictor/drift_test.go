package predictor_test

import (
	"context"
	"log/slog"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/augur-llm/augur/models"
	"github.com/augur-llm/augur/predictor"
	"github.com/augur-llm/augur/requestcontrol"
	"github.com/augur-llm/augur/scheduler"
)

// stream is a synthetic pool: decisions predicted by p (with its drift corrections) on
// fixed candidates, whose requests finish lag decisions later with latencies that are the
// models' predictions (ref, which corrects nothing) times each replica's slowdown and a
// uniform noise of +-20%.
type stream struct {
	t        testing.TB
	clk      *clocktesting.FakeClock
	p, ref   *predictor.Predictor
	cands    []scheduler.Candidate
	slowdown []float64
	lag      int
	rng      *rand.Rand
	inflight []requestcontrol.Completion
	onsets   []onsetAt
	done     []int // completions per replica
}

type onsetAt struct {
	replica   string
	target    models.Target
	ratio     float64
	completed int // the replica's completions when it fired
}

func newStream(t testing.TB, replicas, lag int, reg prometheus.Registerer, opts predictor.DriftOptions) *stream {
	t.Helper()
	s := &stream{t: t, clk: clocktesting.NewFakeClock(time.Unix(1_800_000_000, 0)), lag: lag, rng: rand.New(rand.NewPCG(1, 2)),
		slowdown: make([]float64, replicas), done: make([]int, replicas)}
	set, err := predictor.Load(loadedArtifacts(t))
	if err != nil {
		t.Fatal(err)
	}
	var m *predictor.Metrics
	if reg != nil {
		m = predictor.NewMetrics(reg)
	}
	s.p = predictor.New(predictor.Options{Clock: s.clk, Log: quiet, Metrics: m, Drift: opts, OnDrift: func(r string, tg models.Target, ratio float64) {
		i := s.index(r)
		s.onsets = append(s.onsets, onsetAt{replica: r, target: tg, ratio: ratio, completed: s.done[i]})
	}})
	s.p.Swap(set)
	s.ref = predictor.New(predictor.Options{Clock: s.clk, Drift: predictor.DriftOptions{Off: true}})
	s.ref.Swap(set)
	s.cands = candidates(t, replicas, s.clk.Now())
	for i := range s.slowdown {
		s.slowdown[i] = 1
	}
	return s
}

func (s *stream) index(name string) int {
	for i, c := range s.cands {
		if c.Endpoint.Name == name {
			return i
		}
	}
	s.t.Fatalf("no replica %q", name)
	return -1
}

// predict returns p's and ref's mean predictions (TTFT, TPOT) for replica i now.
func (s *stream) predict(i int) (used, model [2]float64, version string) {
	req := request()
	one := []scheduler.Candidate{s.cands[i]}
	s.p.Predict(context.Background(), &req, one)
	used[0], _ = one[0].Value(scheduler.ValuePredictedTTFT)
	used[1], _ = one[0].Value(scheduler.ValuePredictedTPOT)
	version = one[0].ModelVersion
	s.ref.Predict(context.Background(), &req, one)
	model[0], _ = one[0].Value(scheduler.ValuePredictedTTFT)
	model[1], _ = one[0].Value(scheduler.ValuePredictedTPOT)
	return used, model, version
}

// step decides one request on replica i and finishes the oldest in flight.
func (s *stream) step(i int) {
	s.clk.Step(10 * time.Millisecond)
	now := s.clk.Now()
	used, model, version := s.predict(i)
	noise := func() float64 { return 1 + 0.4*(s.rng.Float64()-0.5) }
	ttft := time.Duration(model[0] * s.slowdown[i] * noise() * float64(time.Millisecond))
	tpot := time.Duration(model[1] * s.slowdown[i] * noise() * float64(time.Millisecond))
	c := requestcontrol.Completion{
		Request: scheduler.Request{Stream: true}, Target: s.cands[i].Endpoint, ModelVersion: version,
		PredictedTTFTMs: &used[0], PredictedTPOTMs: &used[1],
		Decided: now, Dispatched: now, FirstToken: now.Add(ttft), TTFT: ttft, TPOT: tpot,
		End: requestcontrol.End{Outcome: requestcontrol.OutcomeOK, Status: 200, OutputTokens: 100},
	}
	c.E2E = ttft + 99*tpot
	s.inflight = append(s.inflight, c)
	if len(s.inflight) > s.lag {
		done := s.inflight[0]
		s.inflight = s.inflight[1:]
		s.done[s.index(done.Target.Name)]++
		s.p.Observe(done)
	}
}

// run makes n decisions round-robin over the replicas.
func (s *stream) run(n int) {
	for k := range n {
		s.step(k % len(s.cands))
	}
}

// A replica that slows 1.5x (or speeds up as much) is found within 500 of its completions,
// its predictions are corrected to its new speed (TTFT with CorrectTTFT), the others' are
// not, and new models start afresh. A 1.2x slowdown is within the default threshold: its
// TPOT predictions follow it, no drift is signalled; a threshold of 15% finds it.
func TestDriftFindsASlowedReplicaAndCorrectsIt(t *testing.T) {
	for _, tc := range []struct {
		factor, threshold float64
		correctTTFT       bool
		drifts            bool
	}{
		{1.5, 0, false, true}, {1.5, 0, true, true}, {1 / 1.5, 0, true, true}, {1.2, 0, false, false}, {1.2, math.Log(1.15), false, true},
	} {
		factor := tc.factor
		reg := prometheus.NewRegistry()
		s := newStream(t, 4, 40, reg, predictor.DriftOptions{Threshold: tc.threshold, CorrectTTFT: tc.correctTTFT})
		s.run(2000)
		if len(s.onsets) != 0 {
			t.Fatalf("onsets %+v before any slowdown", s.onsets)
		}
		s.slowdown[0] = factor
		from := s.done[0]
		s.run(4000)
		st := s.p.Drift("r0")
		if !tc.drifts {
			if len(s.onsets) != 0 || st.Drifting {
				t.Errorf("x%.2f with the default threshold: onsets %+v", factor, s.onsets)
			}
			if used, model, _ := s.predict(0); used[0] != model[0] || math.Abs(used[1]/model[1]/factor-1) > 0.05 {
				t.Errorf("x%.2f: TPOT prediction %.2f, the models' %.2f; TTFT %.2f, %.2f", factor, used[1], model[1], used[0], model[0])
			}
			continue
		}
		if len(s.onsets) != 1 || s.onsets[0].replica != "r0" {
			t.Fatalf("x%.2f: onsets %+v, want one of r0", factor, s.onsets)
		}
		o := s.onsets[0]
		latency := o.completed - from
		t.Logf("x%.2f, threshold %.3f, TTFT corrected %v: onset after %d completions of the replica (%s, ratio %.3f)", factor, tc.threshold, tc.correctTTFT, latency, o.target, o.ratio)
		if latency > 500 {
			t.Errorf("x%.2f: onset after %d of the replica's completions, want at most 500", factor, latency)
		}
		if !st.Drifting || math.Abs(st.TTFT/factor-1) > 0.05 || math.Abs(st.TPOT/factor-1) > 0.05 {
			t.Errorf("x%.2f: drift state %+v", factor, st)
		}
		// Decisions now see the replica as it is.
		used, model, _ := s.predict(0)
		for ti := range used {
			want := factor
			if ti == 0 && !tc.correctTTFT {
				want = 1
			}
			if r := used[ti] / model[ti] / want; math.Abs(r-1) > 0.05 {
				t.Errorf("x%.2f: target %d: corrected prediction %.2f, the models' %.2f", factor, ti, used[ti], model[ti])
			}
		}
		for i := 1; i < len(s.cands); i++ {
			if used, model, _ := s.predict(i); used[0] != model[0] || math.Abs(used[1]/model[1]-1) > 0.05 {
				t.Errorf("replica %d: prediction %v corrected to %v", i, model, used)
			}
		}
		if got := metric(t, reg, "augur_drift_active", "replica=r0"); got != 1 {
			t.Errorf("augur_drift_active{r0} = %v", got)
		}
		if got := metric(t, reg, "augur_drift_ratio", "replica=r0", "target=tpot"); math.Abs(got/factor-1) > 0.05 {
			t.Errorf("augur_drift_ratio{r0,tpot} = %v", got)
		}
		if got := metric(t, reg, "augur_drift_onsets_total", "replica=r0"); got != 1 {
			t.Errorf("augur_drift_onsets_total{r0} = %v", got)
		}
		// New models have learned the change: the correction goes.
		s.p.Swap(s.p.Models())
		if st := s.p.Drift("r0"); st.Drifting || st.TTFTSamples != 0 {
			t.Errorf("after a swap: %+v", st)
		}
		if used, model, _ := s.predict(0); used != model {
			t.Errorf("after a swap, prediction %v corrected to %v", model, used)
		}
		if got := metric(t, reg, "augur_drift_active", "replica=r0"); got != 0 {
			t.Errorf("after a swap, augur_drift_active{r0} = %v", got)
		}
	}
}

// A replica that recovers stops drifting, and its predictions are the models' again.
func TestDriftEndsWhenTheReplicaRecovers(t *testing.T) {
	s := newStream(t, 2, 10, nil, predictor.DriftOptions{CorrectTTFT: true})
	s.slowdown[1] = 1.5
	s.run(2000)
	if !s.p.Drift("r1").Drifting {
		t.Fatalf("r1 not drifting: %+v", s.p.Drift("r1"))
	}
	s.slowdown[1] = 1
	from := s.done[1]
	for s.p.Drift("r1").Drifting {
		s.run(2)
		if s.done[1]-from > 1000 {
			t.Fatalf("still drifting 1,000 completions after recovering: %+v", s.p.Drift("r1"))
		}
	}
	t.Logf("drift ended %d completions after the replica recovered", s.done[1]-from)
	if used, model, _ := s.predict(1); used[0] != model[0] || math.Abs(used[1]/model[1]-1) > 0.1 {
		t.Errorf("recovered: prediction %v corrected to %v", model, used)
	}
}

// Unbiased but noisy errors (+-20%) never make a replica drift, with the default threshold
// or a lower one.
func TestDriftNoFalseOnset(t *testing.T) {
	for _, threshold := range []float64{0, math.Log(1.15)} {
		s := newStream(t, 2, 40, nil, predictor.DriftOptions{Threshold: threshold})
		s.run(20_100)
		if s.done[0] < 10_000 || len(s.onsets) != 0 {
			t.Fatalf("threshold %.3f: %d completions per replica, onsets %+v", threshold, s.done[0], s.onsets)
		}
		for _, r := range []string{"r0", "r1"} {
			st := s.p.Drift(r)
			if math.Abs(st.TTFT-1) > 0.05 || math.Abs(st.TPOT-1) > 0.05 {
				t.Errorf("%s: ratios %v, %v on unbiased errors", r, st.TTFT, st.TPOT)
			}
		}
	}
}

// Decisions, completions and model swaps at once (for the race detector).
func TestDriftConcurrently(t *testing.T) {
	s := newStream(t, 4, 10, nil, predictor.DriftOptions{Window: 5})
	s.slowdown[0] = 2
	s.run(400)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cands := candidates(t, 4, s.clk.Now())
			req := request()
			for {
				select {
				case <-stop:
					return
				default:
					s.p.Predict(context.Background(), &req, cands)
				}
			}
		}()
	}
	for k := range 2000 {
		s.step(k % 4)
		if k%500 == 0 {
			s.p.Swap(s.p.Models())
		}
		_ = s.p.Drift("r0")
	}
	close(stop)
	wg.Wait()
}

// Predict allocates nothing while a replica's predictions are corrected.
func TestPredictAllocatesNothingWhileDrifting(t *testing.T) {
	if raceDetector {
		t.Skip("under the race detector sync.Pool drops buffers on purpose; runs without it (make slow)")
	}
	s := newStream(t, 4, 10, nil, predictor.DriftOptions{})
	s.slowdown[2] = 2
	s.run(4000)
	if !s.p.Drift("r2").Drifting {
		t.Fatal("no replica drifting")
	}
	cands := candidates(t, 32, s.clk.Now())
	req := request()
	s.p.Predict(context.Background(), &req, cands)
	if n := testing.AllocsPerRun(200, func() { s.p.Predict(context.Background(), &req, cands) }); n != 0 {
		t.Errorf("Predict while drifting: %v allocations per call", n)
	}
}

// quiet discards the drift warnings of tests.
var quiet = slog.New(slog.DiscardHandler)

// loadedArtifacts are the test models.
func loadedArtifacts(t testing.TB) []models.Artifact {
	t.Helper()
	_, arts := loaded(t)
	return arts
}

// BenchmarkPredict32Drifting is BenchmarkPredict32 with every replica's corrections known
// and one replica drifting.
func BenchmarkPredict32Drifting(b *testing.B) {
	s := newStream(b, 32, 10, nil, predictor.DriftOptions{})
	s.slowdown[3] = 2
	s.run(32 * 300)
	if !s.p.Drift("r3").Drifting {
		b.Fatal("r3 not drifting")
	}
	req := request()
	b.ReportAllocs()
	for b.Loop() {
		s.p.Predict(context.Background(), &req, s.cands)
	}
}
