package scheduler

import (
	"context"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/augur-llm/augur/pool"
)

// prediction is what tablePredictor says of one replica, in ms.
type prediction struct{ ttft, tpot, ttftUp, tpotUp, match float64 }

// tablePredictor predicts fixed latencies per replica name; replicas it does not know get
// none, as when a predictor has no model for them.
type tablePredictor map[string]prediction

func (t tablePredictor) Predict(_ context.Context, _ *Request, cands []Candidate) {
	for i := range cands {
		p, ok := t[cands[i].Replica.Name]
		if !ok {
			continue
		}
		cands[i].SetValue(ValuePredictedTTFT, p.ttft)
		cands[i].SetValue(ValuePredictedTPOT, p.tpot)
		cands[i].SetValue(ValuePredictedTTFTUpper, p.ttftUp)
		cands[i].SetValue(ValuePredictedTPOTUpper, p.tpotUp)
		if p.match > 0 {
			cands[i].SetValue(ValuePrefixMatch, p.match)
		}
	}
}

func sloScheduler(t testing.TB, p *pool.Pool, args string, pred Predictor, fallbacks int) *Scheduler {
	t.Helper()
	pc := ProfileConfig{Name: "augur-test", Scorers: []PluginConfig{{Name: "load", Weight: ptr(1.0)}},
		Picker: PluginConfig{Name: "slo", Args: json.RawMessage(args)}}
	prof, err := DefaultRegistry().Build(pc, Handle{Seed: 3, Pool: p}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewWithPredictor(p, prof, fallbacks, pred)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func ptr[T any](v T) *T { return &v }

func targetNames(res Result) []string {
	var out []string
	for _, c := range res.Targets {
		out = append(out, c.Replica.Name)
	}
	return out
}

func mustDecide(t testing.TB, s *Scheduler, req *Request) Result {
	t.Helper()
	res, err := s.Schedule(context.Background(), req, nil)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func interactive() *Request {
	return &Request{PromptTokens: 500, MaxTokens: 100, SLO: SLO{TTFT: 500 * time.Millisecond, TPOT: 50 * time.Millisecond}}
}

// Four replicas, three of which meet TTFT 500 ms and TPOT 50 ms at p90: best-fit takes the
// feasible one closest to its limits, most-headroom the one furthest; the infeasible one
// comes last either way.
func TestSLOPickerStrategies(t *testing.T) {
	p, _ := testPool(t, 4)
	pred := tablePredictor{
		"r0": {ttft: 80, tpot: 15, ttftUp: 100, tpotUp: 20},  // headroom min(0.8, 0.6) = 0.6
		"r1": {ttft: 250, tpot: 25, ttftUp: 300, tpotUp: 30}, // 0.4
		"r2": {ttft: 400, tpot: 30, ttftUp: 450, tpotUp: 35}, // 0.1
		"r3": {ttft: 450, tpot: 40, ttftUp: 600, tpotUp: 45}, // TTFT p90 violates
	}
	for _, tc := range []struct {
		args string
		want []string
	}{
		// Best-fit with the default margin 0.5: only r0 leaves it; r1 and r2 follow by headroom.
		{`{}`, []string{"r0", "r1", "r2", "r3"}},
		// A 500 ms objective leaves less than the default reserve of 2 s anywhere: no packing.
		{`{"strategy":"best-fit","margin":0.05}`, []string{"r0", "r1", "r2", "r3"}},
		// A margin of 0.3 (and a reserve of 1 ms): r0 and r1 leave it, the tighter fit (r1) first.
		{`{"strategy":"best-fit","margin":0.3,"reserveMs":1}`, []string{"r1", "r0", "r2", "r3"}},
		{`{"strategy":"best-fit","margin":0.05,"reserveMs":1}`, []string{"r2", "r1", "r0", "r3"}},
		{`{"strategy":"most-headroom"}`, []string{"r0", "r1", "r2", "r3"}},
		// Judged by the mean, r3 is feasible too, with the least headroom (0.1; r2 has 0.2):
		// best-fit takes it.
		{`{"strategy":"best-fit","margin":0.05,"reserveMs":1,"ttftQuantile":"mean","tpotQuantile":"mean"}`, []string{"r3", "r2", "r1", "r0"}},
	} {
		s := sloScheduler(t, p, tc.args, pred, 3)
		res := mustDecide(t, s, interactive())
		if got := targetNames(res); !equal(got, tc.want) {
			t.Errorf("%s: order %v, want %v", tc.args, got, tc.want)
		}
		if res.Infeasible() {
			t.Errorf("%s: a feasible primary reported infeasible", tc.args)
		}
		if v, ok := res.Targets[len(res.Targets)-1].Value(ValueSLOViolation); tc.want[3] == "r3" && (!ok || math.Abs(v-0.2) > 1e-9) {
			t.Errorf("%s: r3's violation %v (%v), want 0.2 (p90 TTFT 600 against 500)", tc.args, v, ok)
		}
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// When no replica can meet the objectives, the least weighted relative violation wins and
// the decision says it will miss.
func TestSLOPickerNothingFeasible(t *testing.T) {
	p, _ := testPool(t, 3)
	pred := tablePredictor{
		"r0": {ttftUp: 1000, tpotUp: 40}, // TTFT 2x over: violation 1
		"r1": {ttftUp: 600, tpotUp: 70},  // 0.2 + 0.4 = 0.6
		"r2": {ttftUp: 700, tpotUp: 50},  // 0.4
	}
	s := sloScheduler(t, p, `{}`, pred, 2)
	res := mustDecide(t, s, interactive())
	if got := targetNames(res); !equal(got, []string{"r2", "r1", "r0"}) {
		t.Fatalf("order %v, want [r2 r1 r0]", got)
	}
	if !res.Infeasible() {
		t.Fatal("decision not reported infeasible")
	}
	// Weights shift the balance: TPOT misses weigh 3x, so r0 (TTFT only) beats r1 and r2
	// is unchanged (violation 0.4 vs r0 1.0 vs r1 0.2+1.2=1.4).
	s = sloScheduler(t, p, `{"tpotWeight":3}`, pred, 2)
	if got := targetNames(mustDecide(t, s, interactive())); !equal(got, []string{"r2", "r0", "r1"}) {
		t.Fatalf("tpotWeight 3: order %v, want [r2 r0 r1]", got)
	}
}

// Without objectives a request goes where its predicted end-to-end latency is lowest; an
// objective configured for its objective name (or the default) applies when it states none.
func TestSLOPickerNoSLO(t *testing.T) {
	p, _ := testPool(t, 2)
	pred := tablePredictor{
		"r0": {ttft: 100, tpot: 40, ttftUp: 120, tpotUp: 45}, // e2e at 101 tokens: 120 + 4500
		"r1": {ttft: 600, tpot: 20, ttftUp: 700, tpotUp: 25}, // 700 + 2500
	}
	req := &Request{PromptTokens: 100, MaxTokens: 101}
	s := sloScheduler(t, p, `{"strategy":"most-headroom"}`, pred, 1)
	if got := targetNames(mustDecide(t, s, req)); !equal(got, []string{"r1", "r0"}) {
		t.Fatalf("no SLO: order %v, want r1 (lower e2e) first", got)
	}
	// A short answer: TTFT dominates.
	short := &Request{PromptTokens: 100, MaxTokens: 2}
	if got := targetNames(mustDecide(t, s, short)); !equal(got, []string{"r0", "r1"}) {
		t.Fatalf("no SLO, 2 tokens: order %v, want r0 first", got)
	}
	// The objective "chat" has a default TTFT of 500 ms: r1 cannot meet it.
	s = sloScheduler(t, p, `{"strategy":"best-fit","objectives":{"chat":{"ttftMs":500}},"default":{"tpotMs":30}}`, pred, 1)
	chat := &Request{PromptTokens: 100, MaxTokens: 101, Objective: "chat"}
	res := mustDecide(t, s, chat)
	if got := targetNames(res); !equal(got, []string{"r0", "r1"}) || res.Infeasible() {
		t.Fatalf("objective chat (TTFT 500): order %v infeasible %v, want r0 feasible", got, res.Infeasible())
	}
	// Any other request gets the default TPOT 30 ms: only r1 meets it.
	other := &Request{PromptTokens: 100, MaxTokens: 101, Objective: "unknown"}
	if got := targetNames(mustDecide(t, s, other)); !equal(got, []string{"r1", "r0"}) {
		t.Fatalf("default TPOT 30: order %v, want r1 first", got)
	}
	// A request's own header wins over the configured default.
	own := &Request{PromptTokens: 100, MaxTokens: 101, Objective: "chat", SLO: SLO{TTFT: 800 * time.Millisecond}}
	if got := targetNames(mustDecide(t, s, own)); !equal(got, []string{"r0", "r1"}) {
		t.Fatalf("own TTFT 800 (both feasible, r1's headroom 0.125 under the margin): order %v, want r0 first", got)
	}
}

// A replica whose running streams have a tighter TPOT objective than the new request's
// predicted (mean) TPOT there is not feasible, even for a request with a loose objective or
// none.
func TestSLOPickerProtectsRunningStreams(t *testing.T) {
	p, _ := testPool(t, 2)
	rs := p.Replicas()
	lease := rs[0].Dispatch(time.Unix(1, 0), pool.Work{PromptTokens: 100, TPOTObjective: 20 * time.Millisecond})
	pred := tablePredictor{
		"r0": {ttftUp: 100, tpot: 25, tpotUp: 30}, // fastest, but 25 ms would break the running 20 ms stream
		"r1": {ttftUp: 300, tpot: 40, tpotUp: 60},
	}
	batch := &Request{PromptTokens: 1000, MaxTokens: 10, SLO: SLO{TTFT: 30 * time.Second}}
	s := sloScheduler(t, p, `{"strategy":"most-headroom"}`, pred, 1)
	if got := targetNames(mustDecide(t, s, batch)); !equal(got, []string{"r1", "r0"}) {
		t.Fatalf("order %v, want r1: r0 runs a 20 ms stream", got)
	}
	none := &Request{PromptTokens: 1000, MaxTokens: 10}
	if got := targetNames(mustDecide(t, s, none)); !equal(got, []string{"r1", "r0"}) {
		t.Fatalf("no SLO: order %v, want r1: r0 runs a 20 ms stream", got)
	}
	// A buffer of 1.5 makes r0 feasible (limit 30 ms), and its lower TTFT wins.
	s = sloScheduler(t, p, `{"strategy":"most-headroom","tpotBuffer":1.5}`, pred, 1)
	if got := targetNames(mustDecide(t, s, batch)); !equal(got, []string{"r0", "r1"}) {
		t.Fatalf("buffer 1.5: order %v, want r0", got)
	}
	// The running streams' bound is judged by the mean: an upper quantile beyond it, with
	// the mean within, does not turn the request away.
	pred["r0"] = prediction{ttftUp: 100, tpot: 18, tpotUp: 25}
	s = sloScheduler(t, p, `{"strategy":"most-headroom"}`, pred, 1)
	if got := targetNames(mustDecide(t, s, batch)); !equal(got, []string{"r0", "r1"}) {
		t.Fatalf("mean 18 ms under the running 20 ms: order %v, want r0", got)
	}
	pred["r0"] = prediction{ttftUp: 100, tpot: 25, tpotUp: 30}
	lease.Release()
	s = sloScheduler(t, p, `{"strategy":"most-headroom"}`, pred, 1)
	if got := targetNames(mustDecide(t, s, batch)); !equal(got, []string{"r0", "r1"}) {
		t.Fatalf("stream finished: order %v, want r0", got)
	}
}

// A share explore of decisions takes a uniformly drawn primary; the rest take the ranking's.
func TestSLOPickerExplorationRate(t *testing.T) {
	p, _ := testPool(t, 4)
	pred := tablePredictor{}
	for i, n := range []string{"r0", "r1", "r2", "r3"} {
		pred[n] = prediction{ttftUp: 100 * float64(i+1), tpotUp: 10}
	}
	s := sloScheduler(t, p, `{"strategy":"most-headroom","explore":0.1}`, pred, 3)
	const n = 20000
	other := 0
	for range n {
		res := mustDecide(t, s, interactive())
		got := targetNames(res)
		if got[0] != "r0" {
			other++
			// Behind the drawn primary, the ranking's order: r0 r1 r2 r3 less the drawn one.
			var want []string
			for _, r := range []string{"r0", "r1", "r2", "r3"} {
				if r != got[0] {
					want = append(want, r)
				}
			}
			if !equal(got[1:], want) {
				t.Fatalf("explored decision %v: fallbacks %v, want the ranking's %v", got, got[1:], want)
			}
		} else if !equal(got, []string{"r0", "r1", "r2", "r3"}) {
			t.Fatalf("decision %v, want the ranking r0 r1 r2 r3", got)
		}
	}
	// A drawn primary is r0 a quarter of the time: 7.5% of decisions go elsewhere.
	rate := float64(other) / n
	if se := math.Sqrt(0.075 * 0.925 / n); math.Abs(rate-0.075) > 5*se {
		t.Fatalf("explored share %.4f, want 0.075 +- %.4f", rate, 5*se)
	}
	s = sloScheduler(t, p, `{"strategy":"most-headroom"}`, pred, 0)
	for range 1000 {
		if got := mustDecide(t, s, interactive()).Targets[0].Replica.Name; got != "r0" {
			t.Fatalf("explore 0 chose %s", got)
		}
	}
}

// Without predictions the picker orders by the profile's scores (least loaded here).
func TestSLOPickerWithoutPredictions(t *testing.T) {
	p, _ := testPool(t, 3)
	for range 5 {
		p.Replicas()[0].Dispatch(time.Unix(1, 0), pool.Work{PromptTokens: 10})
		p.Replicas()[2].Dispatch(time.Unix(1, 0), pool.Work{PromptTokens: 10})
	}
	s := sloScheduler(t, p, `{}`, nil, 0)
	res := mustDecide(t, s, interactive())
	if res.Targets[0].Replica.Name != "r1" || res.Infeasible() {
		t.Fatalf("chose %s, want the idle r1", res.Targets[0].Replica.Name)
	}
	// A predictor that knows only some replicas is no basis for comparing them either.
	s = sloScheduler(t, p, `{}`, tablePredictor{"r0": {ttftUp: 1, tpotUp: 1}}, 0)
	if got := mustDecide(t, s, interactive()).Targets[0].Replica.Name; got != "r1" {
		t.Fatalf("partial predictions: chose %s, want the idle r1", got)
	}
}

func TestSLOPickerArgs(t *testing.T) {
	for _, args := range []string{
		`{"strategy":"fastest"}`, `{"ttftQuantile":"p99"}`, `{"tpotBuffer":-1}`, `{"explore":1.5}`,
		`{"ttftWeight":-2}`, `{"outputTokens":-1}`, `{"objectives":{"a":{"ttftMs":-5}}}`,
		`{"default":{"tpotQuantile":"median"}}`, `{"unknown":1}`, `{"margin":1}`,
	} {
		pc := ProfileConfig{Name: "x", Picker: PluginConfig{Name: "slo", Args: json.RawMessage(args)}}
		if _, err := DefaultRegistry().Build(pc, Handle{}, nil); err == nil {
			t.Errorf("args %s accepted", args)
		}
	}
	if _, err := DefaultRegistry().Build(BuiltinProfiles()["augur"], Handle{}, nil); err != nil {
		t.Fatalf("augur profile: %v", err)
	}
}

// Among the feasible, the replica that would compute the least of the prompt goes first,
// whatever its headroom; an infeasible warm replica does not.
func TestSLOPickerLeastWork(t *testing.T) {
	p, _ := testPool(t, 3)
	pred := tablePredictor{
		"r0": {ttftUp: 100, tpotUp: 20},              // cold, most headroom
		"r1": {ttftUp: 400, tpotUp: 40, match: 0.8},  // warm, feasible
		"r2": {ttftUp: 700, tpotUp: 40, match: 0.95}, // warmest, too slow
	}
	req := &Request{PromptTokens: 4000, MaxTokens: 100, SLO: SLO{TTFT: 500 * time.Millisecond, TPOT: 50 * time.Millisecond}}
	s := sloScheduler(t, p, `{}`, pred, 2)
	if got := targetNames(mustDecide(t, s, req)); !equal(got, []string{"r1", "r0", "r2"}) {
		t.Fatalf("order %v, want the warm feasible r1 first", got)
	}
	s = sloScheduler(t, p, `{"leastWork":false}`, pred, 2)
	if got := targetNames(mustDecide(t, s, req)); !equal(got, []string{"r0", "r1", "r2"}) {
		t.Fatalf("leastWork off: order %v, want r0 (most headroom) first", got)
	}
}

// A model set without quantile models predicts no upper values: the picker judges by the mean
// rather than falling back to scores.
func TestSLOPickerMeanWhenNoUpper(t *testing.T) {
	p, _ := testPool(t, 2)
	for range 5 {
		p.Replicas()[1].Dispatch(time.Unix(1, 0), pool.Work{PromptTokens: 10}) // r1 loaded: the fallback's choice would be r0
	}
	meanOnly := predictorFunc(func(cands []Candidate) {
		for i := range cands {
			ttft := 900.0 // r0 misses 500 ms
			if cands[i].Replica.Name == "r1" {
				ttft = 100
			}
			cands[i].SetValue(ValuePredictedTTFT, ttft)
			cands[i].SetValue(ValuePredictedTPOT, 10)
		}
	})
	s := sloScheduler(t, p, `{}`, meanOnly, 0)
	if got := mustDecide(t, s, interactive()).Targets[0].Replica.Name; got != "r1" {
		t.Fatalf("chose %s, want r1, the only replica whose mean TTFT meets 500 ms", got)
	}
}

// A request without objectives goes where its predicted latency is lowest even when another
// replica runs streams with TPOT objectives (they bound feasibility, not its ranking).
func TestSLOPickerNoSLOBesideRunningObjectives(t *testing.T) {
	p, _ := testPool(t, 2)
	p.Replicas()[1].Dispatch(time.Unix(1, 0), pool.Work{PromptTokens: 10, TPOTObjective: time.Second})
	// r0 is cold but faster; r1 is warm (least work first would take it) and runs a stream
	// with an objective, which made the request rank as constrained before.
	pred := tablePredictor{
		"r0": {ttftUp: 100, tpotUp: 20, match: 0},
		"r1": {ttftUp: 900, tpotUp: 20, match: 0.9},
	}
	s := sloScheduler(t, p, `{}`, pred, 1)
	if got := targetNames(mustDecide(t, s, &Request{PromptTokens: 1000, MaxTokens: 10})); !equal(got, []string{"r0", "r1"}) {
		t.Fatalf("order %v, want r0 (lower predicted latency) first", got)
	}
}

type predictorFunc func(cands []Candidate)

func (f predictorFunc) Predict(_ context.Context, _ *Request, cands []Candidate) { f(cands) }

// When nothing is feasible and no replica is idle, sacrifice (the default) ranks the
// replicas whose mean predictions still meet the objectives by least violation, then sends a
// request lost even by the mean to the replica it misses by the most; least-violation ranks
// all by violation. With an idle replica in the pool, sacrifice ranks as least-violation.
func TestSLOPickerSacrifice(t *testing.T) {
	busy := func(p *pool.Pool) {
		for _, r := range p.Replicas() {
			r.Dispatch(time.Unix(1, 0), pool.Work{PromptTokens: 100})
		}
	}
	p, _ := testPool(t, 5)
	busy(p)
	pred := tablePredictor{
		"r0": {ttft: 400, tpot: 40, ttftUp: 1000, tpotUp: 45},  // mean meets; violation 1
		"r1": {ttft: 900, tpot: 40, ttftUp: 1200, tpotUp: 45},  // lost; 1.4
		"r2": {ttft: 2000, tpot: 40, ttftUp: 2500, tpotUp: 45}, // lost; 4
		"r3": {ttft: 450, tpot: 40, ttftUp: 600, tpotUp: 45},   // mean meets; 0.2
		"r4": {ttft: 300, tpot: 60, ttftUp: 400, tpotUp: 70},   // lost by TPOT; 0.4
	}
	for _, c := range []struct{ args, want string }{
		{`{}`, "r3 r0 r2 r1 r4"},
		{`{"infeasible":"sacrifice"}`, "r3 r0 r2 r1 r4"},
		{`{"infeasible":"least-violation"}`, "r3 r4 r0 r1 r2"},
	} {
		s := sloScheduler(t, p, c.args, pred, 4)
		res := mustDecide(t, s, interactive())
		if got := strings.Join(targetNames(res), " "); got != c.want {
			t.Errorf("%s: order %s, want %s", c.args, got, c.want)
		}
		if !res.Infeasible() {
			t.Errorf("%s: decision not reported infeasible", c.args)
		}
	}
	// Every replica lost: the one missed by the most takes the request.
	lost := tablePredictor{
		"r0": {ttft: 900, tpot: 40, ttftUp: 1200, tpotUp: 45},
		"r1": {ttft: 2000, tpot: 40, ttftUp: 2500, tpotUp: 45},
		"r2": {ttft: 600, tpot: 40, ttftUp: 700, tpotUp: 45},
	}
	p3, _ := testPool(t, 3)
	busy(p3)
	if got := targetNames(mustDecide(t, sloScheduler(t, p3, `{}`, lost, 2), interactive())); !equal(got, []string{"r1", "r0", "r2"}) {
		t.Errorf("all lost: order %v, want [r1 r0 r2]", got)
	}
	// An idle replica means the pool has room: the least violation, which loses nothing else.
	idle, _ := testPool(t, 3)
	if got := targetNames(mustDecide(t, sloScheduler(t, idle, `{}`, lost, 2), interactive())); !equal(got, []string{"r2", "r0", "r1"}) {
		t.Errorf("all lost, idle replicas: order %v, want [r2 r0 r1]", got)
	}
	if _, err := NewSLOPicker(SLOArgs{Infeasible: "drop"}, 1); err == nil {
		t.Error(`infeasible "drop" accepted`)
	}
}

// Breaking only a running stream's TPOT bound does not make a request lost: sacrifice sends
// it neither to a replica it misses its own objectives on nor, without objectives of its
// own, to the replica whose streams it slows the most.
func TestSLOPickerSacrificeOnlyWhatIsLost(t *testing.T) {
	p, _ := testPool(t, 3)
	for _, r := range p.Replicas() {
		r.Dispatch(time.Unix(1, 0), pool.Work{PromptTokens: 100, TPOTObjective: 20 * time.Millisecond})
	}
	pred := tablePredictor{
		"r0": {ttft: 300, tpot: 22, ttftUp: 400, tpotUp: 24},   // meets its own; slows the 20 ms stream
		"r1": {ttft: 3000, tpot: 40, ttftUp: 3500, tpotUp: 45}, // lost: TTFT 6x over
		"r2": {ttft: 2000, tpot: 30, ttftUp: 2500, tpotUp: 35}, // lost: TTFT 4x over
	}
	s := sloScheduler(t, p, `{}`, pred, 2)
	if got := targetNames(mustDecide(t, s, interactive())); !equal(got, []string{"r0", "r1", "r2"}) {
		t.Errorf("own objectives met on r0: order %v, want [r0 r1 r2]", got)
	}
	none := tablePredictor{
		"r0": {ttft: 100, tpot: 21, ttftUp: 120, tpotUp: 21},
		"r1": {ttft: 100, tpot: 60, ttftUp: 120, tpotUp: 60},
		"r2": {ttft: 100, tpot: 30, ttftUp: 120, tpotUp: 30},
	}
	s = sloScheduler(t, p, `{}`, none, 2)
	if got := targetNames(mustDecide(t, s, &Request{PromptTokens: 100, MaxTokens: 10})); !equal(got, []string{"r0", "r2", "r1"}) {
		t.Errorf("no objectives: order %v, want [r0 r2 r1]", got)
	}
	// A prediction that is not a number ranks last, with objectives or without.
	nan := math.NaN()
	bad := tablePredictor{
		"r0": {ttft: nan, tpot: 10, ttftUp: nan, tpotUp: 10},
		"r1": {ttft: 300, tpot: 10, ttftUp: 400, tpotUp: 12},
		"r2": {ttft: 200, tpot: 10, ttftUp: 300, tpotUp: 12},
	}
	for _, req := range []*Request{interactive(), {PromptTokens: 100, MaxTokens: 10}} {
		s := sloScheduler(t, p, `{"explore":0}`, bad, 2)
		for range 50 { // ties are broken at random: a NaN compared as a tie would come out ahead
			if got := targetNames(mustDecide(t, s, req)); got[2] != "r0" {
				t.Fatalf("NaN prediction on r0: order %v, want r0 last", got)
			}
		}
	}
}

// upper-then-mean judges by the upper quantile while any replica meets the objectives so,
// and by the mean once none does: feasible again, not ranked by violation.
func TestSLOPickerUpperThenMean(t *testing.T) {
	p, _ := testPool(t, 2)
	req := &Request{PromptTokens: 100, MaxTokens: 10, SLO: SLO{TTFT: time.Second, TPOT: 50 * time.Millisecond}}
	pred := tablePredictor{
		"r0": {ttft: 100, ttftUp: 150, tpot: 30, tpotUp: 60},
		"r1": {ttft: 100, ttftUp: 150, tpot: 40, tpotUp: 48},
	}
	args := `{"strategy":"most-headroom","tpotQuantile":"upper-then-mean","explore":0}`
	// r1 meets 50 ms by its upper quantile: chosen, though r0's mean is lower.
	res := mustDecide(t, sloScheduler(t, p, args, pred, 1), req)
	if got := targetNames(res); !equal(got, []string{"r1", "r0"}) || res.Infeasible() {
		t.Fatalf("one replica feasible by the upper quantile: order %v (infeasible %v), want r1 first", got, res.Infeasible())
	}
	// Neither does: judged by the mean both are feasible, and r0 has the most headroom.
	pred["r1"] = prediction{ttft: 100, ttftUp: 150, tpot: 40, tpotUp: 55}
	res = mustDecide(t, sloScheduler(t, p, args, pred, 1), req)
	if got := targetNames(res); !equal(got, []string{"r0", "r1"}) || res.Infeasible() {
		t.Fatalf("none feasible by the upper quantile: order %v (infeasible %v), want r0 first, feasible by the mean", got, res.Infeasible())
	}
	// By the upper quantile alone the decision is infeasible.
	res = mustDecide(t, sloScheduler(t, p, `{"strategy":"most-headroom","infeasible":"least-violation","explore":0}`, pred, 1), req)
	if !res.Infeasible() {
		t.Fatalf("by the upper quantile alone: order %v feasible, want infeasible", targetNames(res))
	}
	// Neither meets it even by the mean: infeasible.
	pred["r0"] = prediction{ttft: 100, ttftUp: 150, tpot: 55, tpotUp: 70}
	pred["r1"] = prediction{ttft: 100, ttftUp: 150, tpot: 52, tpotUp: 60}
	res = mustDecide(t, sloScheduler(t, p, args, pred, 1), req)
	if !res.Infeasible() {
		t.Fatalf("missed even by the mean: order %v feasible", targetNames(res))
	}
}
