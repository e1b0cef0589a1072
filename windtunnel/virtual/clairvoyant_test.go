package virtual

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/augur-llm/augur/pool"
	"github.com/augur-llm/augur/requestcontrol"
	"github.com/augur-llm/augur/scheduler"
	"github.com/augur-llm/augur/windtunnel/sim"
	"github.com/augur-llm/augur/windtunnel/workload"
)

// Every candidate gets both predictions and their upper values, the same numbers, and they
// are what a forecast on its replica says.
func TestClairvoyantSetsEveryCandidate(t *testing.T) {
	r, clk := forecastFixture(t)
	req := &scheduler.Request{ID: "x", Model: "sim", Prompt: []byte(strings.Repeat("the question ", 300)), MaxTokens: 50}
	req.PromptTokens = sim.TextPrompt(req.Prompt).Tokens()
	var cands []scheduler.Candidate
	for _, rep := range r.pool.Replicas() {
		cands = append(cands, scheduler.CandidateOf(rep))
	}
	newClairvoyant(r, 0).Predict(context.Background(), req, cands)
	seen := map[float64]bool{}
	for i, c := range cands {
		var v [4]float64
		for j, val := range []scheduler.Value{scheduler.ValuePredictedTTFT, scheduler.ValuePredictedTTFTUpper, scheduler.ValuePredictedTPOT, scheduler.ValuePredictedTPOTUpper} {
			x, ok := c.Value(val)
			if !ok {
				t.Fatalf("candidate %d: value %d not set", i, val)
			}
			v[j] = x
		}
		if v[0] != v[1] || v[2] != v[3] || c.ModelVersion != ClairvoyantVersion {
			t.Errorf("candidate %d: TTFT %v upper %v, TPOT %v upper %v, version %q", i, v[0], v[1], v[2], v[3], c.ModelVersion)
		}
		fc, err := sim.NewForecaster(0).Forecast(r.replicas[r.byAddr[c.Replica]], clk.now, sim.Request{Prompt: sim.TextPrompt(req.Prompt), MaxTokens: 50})
		if err != nil {
			t.Fatal(err)
		}
		if v[0] != millis(fc.TTFT) || v[2] != millis(fc.TPOT) || !(v[0] > 0 && v[2] > 0) {
			t.Errorf("candidate %d: predicted %v/%v ms, forecast %v/%v", i, v[0], v[2], fc.TTFT, fc.TPOT)
		}
		seen[v[0]] = true
	}
	if len(seen) < 3 {
		t.Errorf("predicted TTFTs %v: busy and idle replicas should differ", seen)
	}
}

// constPredictor predicts the same for every candidate, as model version "m".
type constPredictor float64

func (c constPredictor) Predict(_ context.Context, _ *scheduler.Request, cands []scheduler.Candidate) {
	for i := range cands {
		for _, v := range []scheduler.Value{scheduler.ValuePredictedTTFT, scheduler.ValuePredictedTTFTUpper, scheduler.ValuePredictedTPOT, scheduler.ValuePredictedTPOTUpper} {
			cands[i].SetValue(v, float64(c))
		}
		cands[i].ModelVersion = "m"
	}
}

// An oracle replaces the predictions it names, for the objectives it names, with the
// forecast, and leaves the rest (and the model version) to the predictor.
func TestOracleReplacesWhatItNames(t *testing.T) {
	r, clk := forecastFixture(t)
	o, err := ParseOracle("ttft:batch,standard")
	if err != nil {
		t.Fatal(err)
	}
	if !o.Active() || !o.TTFT || o.TPOT || o.String() != "ttft:batch,standard" {
		t.Fatalf("parsed %+v (%q)", o, o)
	}
	cv := newClairvoyant(r, 0)
	cv.oracle = &o
	pred := oracled{constPredictor(1e6), cv}
	for _, objective := range []string{"batch", "interactive"} {
		req := &scheduler.Request{ID: "x", Model: "sim", Objective: objective, Prompt: []byte(strings.Repeat("the question ", 300)), MaxTokens: 50}
		req.PromptTokens = sim.TextPrompt(req.Prompt).Tokens()
		var cands []scheduler.Candidate
		for _, rep := range r.pool.Replicas() {
			cands = append(cands, scheduler.CandidateOf(rep))
		}
		pred.Predict(context.Background(), req, cands)
		for i, c := range cands {
			fc, err := sim.NewForecaster(0).Forecast(r.replicas[r.byAddr[c.Replica]], clk.now, sim.Request{Prompt: sim.TextPrompt(req.Prompt), MaxTokens: 50})
			if err != nil {
				t.Fatal(err)
			}
			wantTTFT := 1e6
			if objective == "batch" {
				wantTTFT = millis(fc.TTFT)
			}
			ttft, _ := c.Value(scheduler.ValuePredictedTTFT)
			upper, _ := c.Value(scheduler.ValuePredictedTTFTUpper)
			tpot, _ := c.Value(scheduler.ValuePredictedTPOT)
			if ttft != wantTTFT || upper != wantTTFT || tpot != 1e6 || c.ModelVersion != "m" {
				t.Errorf("%s, candidate %d: TTFT %v upper %v TPOT %v version %q; want TTFT %v, TPOT 1e6, version m", objective, i, ttft, upper, tpot, c.ModelVersion, wantTTFT)
			}
		}
	}
	for _, bad := range []string{"", "ttfx", "ttft:", "ttft:a,,b", ":batch"} {
		if _, err := ParseOracle(bad); err == nil {
			t.Errorf("ParseOracle(%q) accepted", bad)
		}
	}
	never := func() (workload.Request, bool) { return workload.Request{}, false }
	for _, cfg := range []Config{
		{Replicas: pool8(t, "8b-h100", 2), Profile: scheduler.BuiltinProfiles()["random"], Oracle: o},
		{Replicas: pool8(t, "8b-h100", 2), Profile: scheduler.BuiltinProfiles()["random"], Oracle: o, Clairvoyant: true},
	} {
		if _, err := Run(context.Background(), cfg, never); err == nil {
			t.Errorf("an oracle without a predictor (clairvoyant %v) accepted", cfg.Clairvoyant)
		}
	}
}

// forecastFixture is a run of five replicas, replica i holding i requests mid-step, so that
// forecasts on them differ.
func forecastFixture(t *testing.T) (*run, *vclock) {
	t.Helper()
	specs, err := ParsePool("3x8b-h100,2x8b-a100")
	if err != nil {
		t.Fatal(err)
	}
	clk := &vclock{now: Epoch()}
	r := &run{clk: clk, byAddr: map[*pool.Replica]int{}, pool: pool.New(clk, 0)}
	var eps []pool.Endpoint
	for i, s := range specs {
		rep, err := sim.NewReplica(sim.Config{Model: "sim", Profile: s.Profile, Seed: uint64(i)})
		if err != nil {
			t.Fatal(err)
		}
		r.replicas = append(r.replicas, rep)
		eps = append(eps, pool.Endpoint{Name: s.Name, Address: fmt.Sprintf("127.0.0.1:%d", 10000+i)})
	}
	if err := r.pool.Set(eps); err != nil {
		t.Fatal(err)
	}
	for i, rep := range r.pool.Replicas() {
		r.byAddr[rep] = i
	}
	// Replica i holds i requests, mid-step, so that the forecasts differ.
	for i, rep := range r.replicas {
		for j := range i {
			p := []byte(strings.Repeat(fmt.Sprintf("replica %d request %d ", i, j), 200))
			if err := rep.Submit(clk.now, j, sim.Request{Prompt: sim.TextPrompt(p), MaxTokens: 100}); err != nil {
				t.Fatal(err)
			}
		}
		if _, _, err := rep.Step(clk.now); err != nil {
			t.Fatal(err)
		}
	}
	clk.now = clk.now.Add(time.Millisecond)
	return r, clk
}

func TestClairvoyantExcludesPredictor(t *testing.T) {
	_, err := Run(context.Background(), Config{Replicas: pool8(t, "8b-h100", 2), Profile: scheduler.BuiltinProfiles()["random"],
		Clairvoyant: true, Predictor: newClairvoyant(nil, 0)}, func() (workload.Request, bool) { return workload.Request{}, false })
	if err == nil {
		t.Fatal("Clairvoyant with a Predictor accepted")
	}
}

// predictions collects what each decision predicted for its primary, by request id.
type predictions struct {
	mu   sync.Mutex
	ttft map[string]float64
	tpot map[string]float64
	ver  map[string]string
}

func newPredictions() *predictions {
	return &predictions{ttft: map[string]float64{}, tpot: map[string]float64{}, ver: map[string]string{}}
}

func (p *predictions) Observe(c requestcontrol.Completion) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ver[c.ID] = c.ModelVersion
	if c.PredictedTTFTMs != nil {
		p.ttft[c.ID] = *c.PredictedTTFTMs
	}
	if c.PredictedTPOTMs != nil {
		p.tpot[c.ID] = *c.PredictedTPOTMs
	}
}

// clairvoyantRun runs a workload with the clairvoyant following `tokens` tokens and returns
// the outcomes with the ids of their requests and what was predicted for them.
func clairvoyantRun(t testing.TB, cfg Config, g workload.Generator) (Result, []string, *predictions) {
	t.Helper()
	preds := newPredictions()
	cfg.Observers = append(cfg.Observers, preds)
	var ids []string
	res, err := Run(context.Background(), cfg, func() (workload.Request, bool) {
		w, ok := g.Next()
		if ok {
			ids = append(ids, w.ID)
		}
		return w, ok
	})
	if err != nil {
		t.Fatal(err)
	}
	return res, ids, preds
}

// With arrivals sparse enough that nothing else reaches the chosen replica while a request
// is served, the clairvoyant's forecast is what happens, to the nanosecond: TTFT always, and
// TPOT when it follows the request to its end.
func TestClairvoyantRunIsExactWhenSparse(t *testing.T) {
	specs, err := ParsePool("2x8b-h100,2x8b-a100")
	if err != nil {
		t.Fatal(err)
	}
	for _, tokens := range []int{0, sim.ForecastAll} {
		g, err := workload.New(workload.NameMixedSLO, workload.Options{Seed: 4, Ladder: workload.ConstantLadder(0.4, 150*time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		// No scorers: the picker chooses at random, so every replica, busy or not, is chosen
		// sometimes.
		res, ids, preds := clairvoyantRun(t, Config{Replicas: specs, Seed: 9, Clairvoyant: true, ClairvoyantTokens: tokens,
			Profile: scheduler.ProfileConfig{Name: "any", Picker: scheduler.PluginConfig{Name: "random"}}}, g)
		alone, exactTTFT, exactTPOT := 0, 0, 0
		for i, o := range res.Outcomes {
			id := ids[i]
			if o.Status != 200 || preds.ver[id] != ClairvoyantVersion {
				t.Fatalf("request %s: status %d, model version %q", id, o.Status, preds.ver[id])
			}
			// Alone: no later request reached the replica before this one ended.
			shared := false
			for _, p := range res.Outcomes[i+1:] {
				if p.Start >= o.End {
					break
				}
				shared = shared || p.Replica == o.Replica
			}
			if shared {
				continue
			}
			alone++
			if preds.ttft[id] == millis(o.TTFT) {
				exactTTFT++
			} else {
				t.Errorf("K=%d, request %s alone on %s: TTFT forecast %.6f ms, realized %v", tokens, id, o.Replica, preds.ttft[id], o.TTFT)
			}
			if tokens < 0 {
				if preds.tpot[id] == millis(o.TPOT) {
					exactTPOT++
				} else {
					t.Errorf("K=%d, request %s alone on %s: TPOT forecast %.6f ms, realized %v", tokens, id, o.Replica, preds.tpot[id], o.TPOT)
				}
			}
		}
		t.Logf("K=%d: %d requests, %d alone on their replica while served; TTFT exact for %d, TPOT for %d", tokens, len(res.Outcomes), alone, exactTTFT, exactTPOT)
		if alone < len(res.Outcomes)/3 {
			t.Errorf("only %d of %d requests were alone: the test does not test much", alone, len(res.Outcomes))
		}
	}
}

// BenchmarkClairvoyantMixedSLO is the clairvoyant's price: the wall time of a virtual run of
// mixed-slo at 60 req/s for 60 s on 6x8b-h100,2x8b-a100 under the llm-d profile, without it
// and with it following 1, 4, 16 or 64 tokens after the first or the whole request. The
// profile does not read predictions, so every run makes the same decisions and serves the
// same way, and the predictions' errors against what happened compare the bounds: mean
// relative error of TTFT and TPOT over the requests served (the error is that of not knowing
// the later arrivals).
func BenchmarkClairvoyantMixedSLO(b *testing.B) {
	specs, err := ParsePool("6x8b-h100,2x8b-a100")
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name   string
		on     bool
		tokens int
	}{{"off", false, 0}, {"tokens=1", true, 1}, {"tokens=2", true, 2}, {"tokens=4", true, 4}, {"tokens=8", true, 8}, {"tokens=16", true, 16}, {"tokens=32", true, 32}, {"tokens=64", true, 64}, {"tokens=all", true, sim.ForecastAll}} {
		b.Run(bc.name, func(b *testing.B) {
			var ttftErr, tpotErr float64
			var nTTFT, nTPOT, served, runs int
			cpu := processCPU()
			for b.Loop() {
				runs++
				g, err := workload.New(workload.NameMixedSLO, workload.Options{Seed: 1, Ladder: workload.ConstantLadder(60, time.Minute)})
				if err != nil {
					b.Fatal(err)
				}
				res, ids, preds := clairvoyantRun(b, Config{Replicas: specs, Seed: 1, Clairvoyant: bc.on, ClairvoyantTokens: bc.tokens,
					Profile: scheduler.BuiltinProfiles()["llm-d"]}, g)
				ttftErr, tpotErr, nTTFT, nTPOT, served = 0, 0, 0, 0, 0
				for i, o := range res.Outcomes {
					if o.Status != 200 {
						continue
					}
					served++
					if p, ok := preds.ttft[ids[i]]; ok && o.TTFT > 0 {
						ttftErr += math.Abs(p-millis(o.TTFT)) / millis(o.TTFT)
						nTTFT++
					}
					if p, ok := preds.tpot[ids[i]]; ok && o.TPOT > 0 {
						tpotErr += math.Abs(p-millis(o.TPOT)) / millis(o.TPOT)
						nTPOT++
					}
				}
			}
			b.ReportMetric((processCPU()-cpu).Seconds()/float64(runs), "cpu-s/op")
			b.ReportMetric(float64(served), "served")
			if bc.on {
				b.ReportMetric(100*ttftErr/float64(max(nTTFT, 1)), "ttft-err-%")
				b.ReportMetric(100*tpotErr/float64(max(nTPOT, 1)), "tpot-err-%")
			}
		})
	}
}
