package scheduler

import (
	"context"
	"encoding/json"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/augur-llm/augur/pool"
)

func names(cs []Candidate) string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Replica.Name)
	}
	return strings.Join(out, ",")
}

// withMatches sets the prefix match of each candidate (a negative value: none computed).
func withMatches(cs []Candidate, m ...float64) []Candidate {
	for i, v := range m {
		if v >= 0 {
			cs[i].SetValue(ValuePrefixMatch, v)
		}
	}
	return cs
}

func affinityFilter(t *testing.T, args string) *PrefixAffinityFilter {
	t.Helper()
	f, err := DefaultRegistry()["prefix-affinity"](json.RawMessage(args), Handle{Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	return f.(*PrefixAffinityFilter)
}

func filterNames(f Filter, req *Request, cs []Candidate) string {
	return names(f.Filter(context.Background(), req, slices.Clone(cs)))
}

func TestPrefixAffinityThreshold(t *testing.T) {
	f := affinityFilter(t, ``)
	four := func(m ...float64) []Candidate {
		return withMatches(cands(pool.Metrics{}, pool.Metrics{}, pool.Metrics{}, pool.Metrics{}), m...)
	}
	for _, tc := range []struct {
		name string
		cs   []Candidate
		want string
		f    *PrefixAffinityFilter
	}{
		{"at the threshold is warm, just under is not", four(0.8, 0.79, 1, 0), "r0,r2", f},
		{"none warm: all pass", four(0.79, 0.5, 0, 0), "r0,r1,r2,r3", f},
		{"all warm: all pass", four(0.9, 0.8, 1, 0.85), "r0,r1,r2,r3", f},
		{"no prefix match computed: all pass", four(-1, -1, -1, -1), "r0,r1,r2,r3", f},
		{"threshold 0 turns the filter off", four(1, 0, 0, 0), "r0,r1,r2,r3", affinityFilter(t, `{"affinityThreshold":0}`)},
		{"threshold 1 keeps full matches only", four(1, 0.99, 0, 1), "r0,r3", affinityFilter(t, `{"affinityThreshold":1}`)},
		{"a single candidate passes", withMatches(cands(pool.Metrics{}), 0), "r0", f},
	} {
		if got := filterNames(tc.f, &Request{}, tc.cs); got != tc.want {
			t.Errorf("%s: kept %s, want %s", tc.name, got, tc.want)
		}
	}
}

// The saturation release: all replicas pass once the best warm replica's estimated TTFT
// exceeds the best cold one's by more than the allowed penalty, not before.
func TestPrefixAffinityReleaseByThroughput(t *testing.T) {
	// Class "fast" prefills 20,000 tokens/s; the others the default, here 10,000.
	f := affinityFilter(t, `{"maxTTFTPenaltyMs":1000,"peakPrefillThroughput":{"default":10000,"fast":20000}}`)
	if f.PeakPrefillThroughput("fast") != 20000 || f.PeakPrefillThroughput("other") != 10000 {
		t.Fatalf("peaks: fast %v, other %v", f.PeakPrefillThroughput("fast"), f.PeakPrefillThroughput("other"))
	}
	mk := func(warmClass string, warmTokens, coldTokens int64) []Candidate {
		cs := withMatches(cands(pool.Metrics{}, pool.Metrics{}, pool.Metrics{}), 0.9, 1, 0)
		cs[0].Endpoint.Class, cs[1].Endpoint.Class = warmClass, warmClass
		cs[0].Load.PrefillUncachedTokens, cs[1].Load.PrefillUncachedTokens = warmTokens+5000, warmTokens
		cs[2].Load.PrefillUncachedTokens = coldTokens
		return cs
	}
	for _, tc := range []struct {
		name string
		cs   []Candidate
		want string
	}{
		{"gap exactly the penalty: sticks", mk("", 10_000+2_000, 2_000), "r0,r1"},    // 1,200 ms vs 200 ms
		{"gap above the penalty: released", mk("", 10_000+2_001, 2_000), "r0,r1,r2"}, // 1,200.1 ms vs 200 ms
		{"the warm class is faster: sticks", mk("fast", 20_000+4_000, 2_000), "r0,r1"},
		{"faster class, gap above: released", mk("fast", 20_000+4_002, 2_000), "r0,r1,r2"},
		{"warm replicas idle: sticks", mk("", 0, 0), "r0,r1"},
	} {
		if got := filterNames(f, &Request{}, tc.cs); got != tc.want {
			t.Errorf("%s: kept %s, want %s", tc.name, got, tc.want)
		}
	}
	never := affinityFilter(t, `{"maxTTFTPenaltyMs":0}`)
	if got := filterNames(never, &Request{}, mk("", 1e9, 0)); got != "r0,r1" {
		t.Errorf("maxTTFTPenaltyMs 0 must never release: kept %s", got)
	}
	// The default release is 18 s at 15,928 tokens/s: 286,704 tokens of gap.
	def := affinityFilter(t, ``)
	if got := filterNames(def, &Request{}, mk("", 286_704, 0)); got != "r0,r1" {
		t.Errorf("default, gap 18,000 ms: kept %s", got)
	}
	if got := filterNames(def, &Request{}, mk("", 286_720, 0)); got != "r0,r1,r2" {
		t.Errorf("default, gap 18,001 ms: kept %s", got)
	}
}

func TestPrefixAffinityReleaseByPredictor(t *testing.T) {
	f := affinityFilter(t, `{"ttftSource":"predictor","maxTTFTPenaltyMs":5000}`)
	mk := func(warm, cold float64) []Candidate {
		cs := withMatches(cands(pool.Metrics{}, pool.Metrics{}, pool.Metrics{}), 1, 0, 0)
		cs[0].SetValue(ValuePredictedTTFT, warm)
		cs[1].SetValue(ValuePredictedTTFT, cold)
		cs[2].SetValue(ValuePredictedTTFT, cold+10_000)
		cs[0].Load.PrefillUncachedTokens = 1e9 // the throughput estimate must not be used
		return cs
	}
	if got := filterNames(f, &Request{}, mk(5100, 100)); got != "r0" {
		t.Errorf("gap 5,000 ms: kept %s, want r0", got)
	}
	if got := filterNames(f, &Request{}, mk(5100.5, 100)); got != "r0,r1,r2" {
		t.Errorf("gap 5,000.5 ms: kept %s, want all", got)
	}
	// Without predictions the release cannot be judged: as in llm-d, all pass.
	cs := withMatches(cands(pool.Metrics{}, pool.Metrics{}), 1, 0)
	if got := filterNames(f, &Request{}, cs); got != "r0,r1" {
		t.Errorf("no predictions: kept %s, want all", got)
	}
}

// Exploration passes every replica in the share of decisions it is given, drawn from the
// handle's seed.
func TestPrefixAffinityExploration(t *testing.T) {
	f := affinityFilter(t, `{"explorationProbability":0.2}`)
	base := withMatches(cands(pool.Metrics{}, pool.Metrics{}), 1, 0)
	const n = 20_000
	all := 0
	for range n {
		if len(f.Filter(context.Background(), &Request{}, slices.Clone(base))) == 2 {
			all++
		}
	}
	if got := float64(all) / n; math.Abs(got-0.2) > 0.01 {
		t.Errorf("explored %.4f of decisions, want 0.2 +- 0.01", got)
	}
}

func TestTokenLoadAndActiveRequestsScorers(t *testing.T) {
	req := &Request{PromptTokens: 1000}
	cs := withMatches(cands(pool.Metrics{}, pool.Metrics{}, pool.Metrics{}, pool.Metrics{}), 0, 1, 0.5, -1)
	cs[0].Load.PrefillUncachedTokens = 0    // 0 + 1,000
	cs[1].Load.PrefillUncachedTokens = 500  // 500 + 0: warm beats idle
	cs[2].Load.PrefillUncachedTokens = 2000 // 2,000 + 500
	cs[3].Load.PrefillUncachedTokens = 1500 // 1,500 + 1,000 (no prefix match: the whole prompt)
	if got := score(TokenLoadScorer{}, req, cs); !near(got, []float64{0.75, 1, 0, 0}) {
		t.Errorf("token-load: %v", got)
	}
	cs[0].Load.Requests, cs[1].Load.Requests, cs[2].Load.Requests, cs[3].Load.Requests = 3, 0, 6, 3
	if got := score(ActiveRequestsScorer{}, req, cs); !near(got, []float64{0.5, 1, 0, 0.5}) {
		t.Errorf("active-requests: %v", got)
	}
	same := cands(pool.Metrics{}, pool.Metrics{})
	if got := score(TokenLoadScorer{}, req, same); !near(got, []float64{1, 1}) {
		t.Errorf("token-load, equal replicas: %v", got)
	}
}

// predicted sets the candidate's predictions: mean TTFT and TPOT, and their upper quantiles
// (negative: not set).
func predicted(c *Candidate, ttft, tpot, ttftUp, tpotUp float64) {
	c.SetValue(ValuePredictedTTFT, ttft)
	c.SetValue(ValuePredictedTPOT, tpot)
	if ttftUp >= 0 {
		c.SetValue(ValuePredictedTTFTUpper, ttftUp)
	}
	if tpotUp >= 0 {
		c.SetValue(ValuePredictedTPOTUpper, tpotUp)
	}
}

func sloTier(t *testing.T, args string, seed uint64) *SLOTierFilter {
	t.Helper()
	f, err := DefaultRegistry()["slo-tier"](json.RawMessage(args), Handle{Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	return f.(*SLOTierFilter)
}

func TestSLOTierSelection(t *testing.T) {
	never := sloTier(t, `{"violatingTierProbability":0}`, 1)
	slo := &Request{SLO: SLO{TTFT: 500 * time.Millisecond, TPOT: 50 * time.Millisecond}}
	mk := func() []Candidate {
		cs := cands(pool.Metrics{}, pool.Metrics{}, pool.Metrics{}, pool.Metrics{})
		predicted(&cs[0], 300, 40, 450, 49) // feasible at both quantiles
		predicted(&cs[1], 300, 40, 600, 45) // upper TTFT violates
		predicted(&cs[2], 300, 40, 400, 55) // upper TPOT violates
		predicted(&cs[3], 500, 50, -1, -1)  // no upper predictions: the mean, exactly at the limits
		return cs
	}
	for _, tc := range []struct {
		name string
		f    *SLOTierFilter
		req  *Request
		cs   []Candidate
		want string
	}{
		{"upper quantile", never, slo, mk(), "r0,r3"},
		{"mean quantile", sloTier(t, `{"violatingTierProbability":0,"quantile":"mean"}`, 1), slo, mk(), "r0,r1,r2,r3"},
		{"TTFT objective only", never, &Request{SLO: SLO{TTFT: 500 * time.Millisecond}}, mk(), "r0,r2,r3"},
		{"TPOT objective only", never, &Request{SLO: SLO{TPOT: 50 * time.Millisecond}}, mk(), "r0,r1,r3"},
		{"TPOT buffer", sloTier(t, `{"violatingTierProbability":0,"tpotBuffer":1.2}`, 1), slo, mk(), "r0,r2,r3"},
		{"no objective: all pass", never, &Request{}, mk(), "r0,r1,r2,r3"},
		{"every replica violates: all pass", never, &Request{SLO: SLO{TTFT: time.Millisecond}}, mk(), "r0,r1,r2,r3"},
		{"no predictions: all pass", never, slo, cands(pool.Metrics{}, pool.Metrics{}), "r0,r1"},
	} {
		if got := filterNames(tc.f, tc.req, tc.cs); got != tc.want {
			t.Errorf("%s: kept %s, want %s", tc.name, got, tc.want)
		}
	}

	// A replica running a stream with a tighter TPOT objective judges the request by it.
	cs := mk()
	cs[0].Load.TightestTPOTObjective = 45 * time.Millisecond // r0's upper TPOT, 49, breaks it
	cs[3].Load.TightestTPOTObjective = 80 * time.Millisecond // looser than the request's: no effect
	if got := filterNames(never, slo, cs); got != "r3" {
		t.Errorf("tightest objective in flight: kept %s, want r3", got)
	}
	// It tightens an objective the request has, and gives none to a request without.
	if got := filterNames(never, &Request{SLO: SLO{TTFT: 500 * time.Millisecond}}, cs); got != "r0,r2,r3" {
		t.Errorf("no TPOT objective, objectives in flight: kept %s, want r0,r2,r3", got)
	}
	// A replica without predictions among replicas with is in the violating tier.
	cs = mk()
	cs = append(cs, cands(pool.Metrics{}, pool.Metrics{}, pool.Metrics{}, pool.Metrics{}, pool.Metrics{})[4])
	if got := filterNames(never, slo, cs); got != "r0,r3" {
		t.Errorf("one replica without predictions: kept %s, want r0,r3", got)
	}
	always := sloTier(t, `{"violatingTierProbability":1}`, 1)
	if got := filterNames(always, slo, cs); got != "r1,r2,r4" {
		t.Errorf("probability 1: kept %s, want the violating tier r1,r2,r4", got)
	}
}

// The violating tier is kept in the share of decisions it is given, drawn from the handle's
// seed: measured over many decisions of two seeds, within 1% of the decisions (within 0.15%
// for the default 1%, about 3.7 standard deviations).
func TestSLOTierViolatingProbability(t *testing.T) {
	slo := &Request{SLO: SLO{TTFT: 500 * time.Millisecond}}
	base := cands(pool.Metrics{}, pool.Metrics{}, pool.Metrics{})
	predicted(&base[0], 100, 10, -1, -1)
	predicted(&base[1], 900, 10, -1, -1) // the violating tier
	predicted(&base[2], 200, 10, -1, -1)
	buf := make([]Candidate, len(base))
	for _, tc := range []struct {
		args      string
		p, within float64
	}{{``, 0.01, 0.0015}, {`{"violatingTierProbability":0.3}`, 0.3, 0.01}} {
		const seeds, n = 2, 30_000
		violating := 0
		for seed := range uint64(seeds) {
			f := sloTier(t, tc.args, seed+1)
			for range n {
				copy(buf, base)
				out := f.Filter(context.Background(), slo, buf)
				switch {
				case len(out) == 1 && out[0].Replica == base[1].Replica:
					violating++
				case len(out) != 2:
					t.Fatalf("%s: kept %s", tc.args, names(out))
				}
			}
		}
		if got := float64(violating) / (seeds * n); math.Abs(got-tc.p) > tc.within {
			t.Errorf("%s: violating tier kept in %.4f of decisions, want %v +- %v", tc.args, got, tc.p, tc.within)
		} else {
			t.Logf("%s: violating tier kept in %.4f of decisions, want %v", tc.args, got, tc.p)
		}
	}
}

func latencyScorer(t *testing.T, args string) *LatencyScorer {
	t.Helper()
	s, err := DefaultRegistry()["latency"](json.RawMessage(args), Handle{})
	if err != nil {
		t.Fatal(err)
	}
	return s.(*LatencyScorer)
}

// best returns the name of the best-scoring candidate and how many scored above 0.
func best(scores []float64, cs []Candidate) (string, int) {
	b, n := 0, 0
	for i, v := range scores {
		if v > scores[b] {
			b = i
		}
		if v > 0 {
			n++
		}
	}
	return cs[b].Replica.Name, n
}

func TestLatencyScorerStrategies(t *testing.T) {
	slo := &Request{SLO: SLO{TTFT: 1000 * time.Millisecond, TPOT: 100 * time.Millisecond}}
	cs := cands(pool.Metrics{}, pool.Metrics{}, pool.Metrics{}, pool.Metrics{})
	predicted(&cs[0], 0, 0, 900, 50) // TTFT headroom 100, TPOT 50
	predicted(&cs[1], 0, 0, 800, 50) // 200, 50
	predicted(&cs[2], 0, 0, 500, 50) // 500, 50
	predicted(&cs[3], 0, 0, 1200, 0) // violates: scores 0
	least := score(latencyScorer(t, ``), slo, cs)
	// TPOT headroom is the same everywhere, so TTFT headroom alone decides: 100 -> 1, 500 -> 0.01.
	if want := []float64{1, 1 - 0.99*0.25, 0.01, 0}; !near(least, want) {
		t.Errorf("least: %v, want %v", least, want)
	}
	most := score(latencyScorer(t, `{"strategy":"most"}`), slo, cs)
	if want := []float64{0.01, 0.01 + 0.99*0.25, 1, 0}; !near(most, want) {
		t.Errorf("most: %v, want %v", most, want)
	}
	// The blend: TTFT 0.8, TPOT 0.2, each normalised within the feasible group.
	predicted(&cs[0], 0, 0, 900, 90) // TTFT headroom 100 (n 0), TPOT 10 (n 0)
	predicted(&cs[1], 0, 0, 500, 60) // 500 (n 1), 40 (n 1)
	predicted(&cs[2], 0, 0, 900, 60) // 100 (n 0), 40 (n 1)
	got := score(latencyScorer(t, ``), slo, cs)
	if want := []float64{1, 0.01, 0.01 + 0.99*0.8, 0}; !near(got, want) {
		t.Errorf("blend: %v, want %v", got, want)
	}
	got = score(latencyScorer(t, `{"ttftWeight":0,"tpotWeight":1}`), slo, cs)
	if want := []float64{1, 0.01, 0.01, 0}; !near(got, want) {
		t.Errorf("TPOT only: %v, want %v", got, want)
	}
	// A request with a TTFT objective only is ranked by TTFT headroom only.
	got = score(latencyScorer(t, ``), &Request{SLO: SLO{TTFT: time.Second}}, cs)
	if want := []float64{1, 0.01, 1, 0}; !near(got, want) {
		t.Errorf("TTFT objective only: %v, want %v", got, want)
	}
}

// When every replica violates: idle replicas first, then those violating TPOT only, then TTFT
// only, then both, each group ranked by least deficit.
func TestLatencyScorerAllViolate(t *testing.T) {
	slo := &Request{SLO: SLO{TTFT: 1000 * time.Millisecond, TPOT: 100 * time.Millisecond}}
	s := latencyScorer(t, ``)
	mk := func() []Candidate {
		cs := cands(pool.Metrics{}, pool.Metrics{}, pool.Metrics{}, pool.Metrics{}, pool.Metrics{}, pool.Metrics{})
		predicted(&cs[0], 0, 0, 3000, 300) // both, the worst
		predicted(&cs[1], 0, 0, 2000, 50)  // TTFT only
		predicted(&cs[2], 0, 0, 500, 130)  // TPOT only, the lesser TPOT deficit
		predicted(&cs[3], 0, 0, 500, 150)  // TPOT only
		predicted(&cs[4], 0, 0, 1100, 110) // both, the least bad
		predicted(&cs[5], 0, 0, 1500, 80)  // TTFT only, the lesser TTFT deficit
		for i := range cs {
			cs[i].Load.Requests = 1
		}
		return cs
	}
	cs := mk()
	cs[0].Load.Requests = 0 // idle, however bad its predictions
	if b, n := best(score(s, slo, cs), cs); b != "r0" || n != 1 {
		t.Errorf("an idle replica: best %s of %d scored, want r0 alone", b, n)
	}
	for _, tc := range []struct {
		drop []int // candidates removed
		want string
		n    int
	}{
		{nil, "r2", 2},         // TPOT-only first
		{[]int{2, 3}, "r5", 2}, // then TTFT-only
		{[]int{1, 2, 3, 5}, "r4", 2},
	} {
		cs := mk()
		cs = slices.DeleteFunc(cs, func(c Candidate) bool {
			return slices.ContainsFunc(tc.drop, func(i int) bool { return c.Replica.Name == "r"+string(rune('0'+i)) })
		})
		if b, n := best(score(s, slo, cs), cs); b != tc.want || n != tc.n {
			t.Errorf("without %v: best %s of %d scored, want %s of %d", tc.drop, b, n, tc.want, tc.n)
		}
	}
	// "most" applies to feasible replicas only: violations are always ranked by least deficit.
	cs = mk()
	if b, _ := best(score(latencyScorer(t, `{"strategy":"most"}`), slo, cs), cs); b != "r2" {
		t.Errorf("most, all violate: best %s, want r2", b)
	}
}

// A request without objectives is llm-d's: every replica violates objectives of 0, so idle
// replicas come first, then the lowest predicted latency.
func TestLatencyScorerWithoutObjectives(t *testing.T) {
	s := latencyScorer(t, ``)
	cs := cands(pool.Metrics{}, pool.Metrics{}, pool.Metrics{})
	predicted(&cs[0], 0, 0, 900, 30)
	predicted(&cs[1], 0, 0, 300, 30)
	predicted(&cs[2], 0, 0, 600, 20)
	for i := range cs {
		cs[i].Load.Requests = 2
	}
	// TTFT n: 1, 0, 0.5; TPOT n: 1, 1, 0 -> blends 1, 0.2, 0.4.
	if got, want := score(s, &Request{}, cs), []float64{0.01, 0.01 + 0.99*0.8, 0.01 + 0.99*0.6}; !near(got, want) {
		t.Errorf("busy replicas: %v, want %v", got, want)
	}
	cs[0].Load.Requests = 0
	if b, n := best(score(s, &Request{}, cs), cs); b != "r0" || n != 1 {
		t.Errorf("idle r0: best %s of %d scored", b, n)
	}
}

// Without predictions the scorer falls back to free KV cache, relative queue and prefix match.
func TestLatencyScorerWithoutPredictions(t *testing.T) {
	cs := withMatches(cands(pool.Metrics{KVUsage: 0.2, Waiting: 0}, pool.Metrics{KVUsage: 0.5, Waiting: 4}, pool.Metrics{KVUsage: 0.9, Waiting: 2}), 0, 0.9, -1)
	slo := &Request{SLO: SLO{TTFT: time.Second}}
	got := score(latencyScorer(t, ``), slo, cs)
	if want := []float64{(0.8 + 1 + 0) / 3, (0.5 + 0 + 0.9) / 3, (0.1 + 0.5 + 0) / 3}; !near(got, want) {
		t.Errorf("composite: %v, want %v", got, want)
	}
	got = score(latencyScorer(t, `{"compositeKVWeight":0,"compositeQueueWeight":0,"compositePrefixWeight":2}`), slo, cs)
	if want := []float64{0, 0.9, 0}; !near(got, want) {
		t.Errorf("prefix only: %v, want %v", got, want)
	}
	idle := cands(pool.Metrics{}, pool.Metrics{})
	if got := score(latencyScorer(t, ``), slo, idle); !near(got, []float64{2.0 / 3, 2.0 / 3}) {
		t.Errorf("empty queues and caches: %v", got)
	}
}

func TestLLMDPluginArgs(t *testing.T) {
	reg := DefaultRegistry()
	for _, tc := range []struct {
		plugin, args, want string
	}{
		{"prefix-affinity", `{"threshold":0.5}`, `unknown field "threshold"`},
		{"prefix-affinity", `{"affinityThreshold":1.5}`, "affinityThreshold"},
		{"prefix-affinity", `{"affinityThreshold":-0.1}`, "affinityThreshold"},
		{"prefix-affinity", `{"maxTTFTPenaltyMs":-1}`, "maxTTFTPenaltyMs"},
		{"prefix-affinity", `{"ttftSource":"latencyPredictor"}`, "ttftSource"},
		{"prefix-affinity", `{"peakPrefillThroughput":{"8b-h100":0}}`, "peakPrefillThroughput"},
		{"prefix-affinity", `{"peakPrefillThroughput":{"default":-5}}`, "peakPrefillThroughput"},
		{"prefix-affinity", `{"peakPrefillThroughput":15928}`, "cannot unmarshal"},
		{"prefix-affinity", `{"explorationProbability":2}`, "explorationProbability"},
		{"token-load", `{"queueThresholdTokens":1}`, `unknown field`},
		{"active-requests", `{"idleThreshold":1}`, `unknown field`},
		{"slo-tier", `{"epsilonExploreNeg":0.1}`, `unknown field "epsilonExploreNeg"`},
		{"slo-tier", `{"violatingTierProbability":-0.1}`, "violatingTierProbability"},
		{"slo-tier", `{"violatingTierProbability":1.1}`, "violatingTierProbability"},
		{"slo-tier", `{"quantile":"p99"}`, "quantile"},
		{"slo-tier", `{"tpotBuffer":0}`, "tpotBuffer"},
		{"latency", `{"headroomSelectionStrategy":"least"}`, `unknown field`},
		{"latency", `{"strategy":"middle"}`, "strategy"},
		{"latency", `{"ttftWeight":-1}`, "ttftWeight"},
		{"latency", `{"ttftWeight":0,"tpotWeight":0}`, "must be positive"},
		{"latency", `{"compositeKVWeight":0,"compositeQueueWeight":0,"compositePrefixWeight":0}`, "must be positive"},
		{"latency", `{"compositeQueueWeight":-2}`, "compositeQueueWeight"},
		{"latency", `{"tpotBuffer":-1}`, "tpotBuffer"},
		{"latency", `{"quantile":"median"}`, "quantile"},
	} {
		_, err := reg[tc.plugin](json.RawMessage(tc.args), Handle{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %s: err %v, want %q", tc.plugin, tc.args, err, tc.want)
		}
	}
	// Defaults, and peaks merged into them.
	f := affinityFilter(t, `{"peakPrefillThroughput":{"8b-h100":36000}}`)
	if f.threshold != 0.8 || f.maxPenaltyMs != 18000 || f.predictor || f.explore != 0 ||
		f.PeakPrefillThroughput("8b-h100") != 36000 || f.PeakPrefillThroughput("x") != DefaultPeakPrefillThroughput {
		t.Errorf("prefix-affinity defaults: %+v", f)
	}
	if st := sloTier(t, ``, 0); st.violate != 0.01 || !st.rule.upper || st.rule.tpotBuffer != 1 {
		t.Errorf("slo-tier defaults: %+v", st)
	}
	if ls := latencyScorer(t, ``); ls.ttftW != 0.8 || ls.tpotW != 0.2 || ls.most || !ls.rule.upper || ls.rule.tpotBuffer != 1 ||
		math.Abs(ls.kvW-1.0/3) > 1e-12 || math.Abs(ls.queueW-1.0/3) > 1e-12 || math.Abs(ls.prefixW-1.0/3) > 1e-12 {
		t.Errorf("latency defaults: %+v", ls)
	}
	// The defaults are fresh for every plugin: one's peaks do not leak into another's.
	if g := affinityFilter(t, ``); g.PeakPrefillThroughput("8b-h100") != DefaultPeakPrefillThroughput {
		t.Errorf("peaks leaked between instances: %v", g.PeakPrefillThroughput("8b-h100"))
	}
}

// recordingFilter records the candidates it sees and whether they carry values.
type recordingFilter struct {
	reads      bool
	keep       int // keep the first keep candidates (0: all)
	saw        int
	sawPrefix  bool
	sawPredict bool
}

func (f *recordingFilter) Name() string      { return "recording" }
func (f *recordingFilter) ReadsValues() bool { return f.reads }
func (f *recordingFilter) Filter(_ context.Context, _ *Request, cands []Candidate) []Candidate {
	f.saw = len(cands)
	_, f.sawPrefix = cands[0].Value(ValuePrefixMatch)
	_, f.sawPredict = cands[0].Value(ValuePredictedTTFT)
	if f.keep > 0 {
		return cands[:f.keep]
	}
	return cands
}

// Values are computed before the first filter that reads them, over the candidates the
// filters before it kept, and reach the scorers; without such a filter, after every filter.
func TestValuesBeforeFiltersThatReadThem(t *testing.T) {
	for _, tc := range []struct {
		name      string
		filters   []*recordingFilter
		predicted int // candidates the predictor saw
		values    []bool
	}{
		{"no filter reads values", []*recordingFilter{{keep: 3}, {keep: 2}}, 2, []bool{false, false}},
		{"the second reads them", []*recordingFilter{{keep: 3}, {reads: true, keep: 2}, {}}, 3, []bool{false, true, true}},
		{"the first reads them", []*recordingFilter{{reads: true, keep: 3}, {reads: true}}, 4, []bool{true, true}},
	} {
		p, _ := testPool(t, 4)
		one := 1.0
		prof := &Profile{Name: "x", Scorers: []WeightedScorer{{Scorer: NewPrefixScorer(0, nil), Weight: 0}, {Scorer: predictedScorer{}, Weight: one}},
			Picker: NewMaxScorePicker(1)}
		for _, f := range tc.filters {
			prof.Filters = append(prof.Filters, f)
		}
		pred := &fakePredictor{}
		s, err := NewWithPredictor(p, prof, 0, pred)
		if err != nil {
			t.Fatal(err)
		}
		res, err := s.Schedule(context.Background(), &Request{Prompt: []byte(strings.Repeat("x", 256)), PromptTokens: 64}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(pred.sawPrefix) != tc.predicted || slices.Contains(pred.sawPrefix, false) {
			t.Errorf("%s: the predictor saw %v, want %d candidates with their prefix match", tc.name, pred.sawPrefix, tc.predicted)
		}
		for i, f := range tc.filters {
			if f.sawPrefix != tc.values[i] || f.sawPredict != tc.values[i] {
				t.Errorf("%s: filter %d saw prefix %v, predictions %v, want %v", tc.name, i, f.sawPrefix, f.sawPredict, tc.values[i])
			}
		}
		if _, ok := res.Targets[0].Value(ValuePredictedTTFT); !ok {
			t.Errorf("%s: the decision carries no prediction", tc.name)
		}
	}
}

// Every llm-d profile builds from the default registry and decides.
func TestLLMDProfilesBuildAndDecide(t *testing.T) {
	for _, name := range []string{"llm-d-token", "llm-d-active", "llm-d-predicted"} {
		p, _ := testPool(t, 3)
		pc, ok := BuiltinProfiles()[name]
		if !ok {
			t.Fatalf("no profile %q", name)
		}
		prof, err := DefaultRegistry().Build(pc, Handle{Seed: 1, Pool: p}, nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, pred := range []Predictor{nil, &fakePredictor{}} {
			s, err := NewWithPredictor(p, prof, 1, pred)
			if err != nil {
				t.Fatal(err)
			}
			res, err := decide(s, &Request{Prompt: []byte(strings.Repeat("y", 512)), PromptTokens: 128, SLO: SLO{TTFT: time.Second}})
			if err != nil || len(res.Targets) == 0 {
				t.Fatalf("%s: %+v %v", name, res, err)
			}
		}
	}
}

// Under llm-d-token a prompt sticks to the replica that holds it until that replica's uncached
// tokens in flight exceed the others' by the release gap (18 s at the peak throughput).
func TestLLMDTokenSticksUntilSaturated(t *testing.T) {
	p, clk := testPool(t, 3)
	pc, err := WithPeakPrefillThroughput(BuiltinProfiles()["llm-d-token"], map[string]float64{DefaultPeakClass: 10_000})
	if err != nil {
		t.Fatal(err)
	}
	prof, err := DefaultRegistry().Build(pc, Handle{Seed: 1, Pool: p}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := New(p, prof, 0)
	prompt := []byte(strings.Repeat("a shared document. ", 400)) // 1,900 tokens
	req := func() *Request { return &Request{Prompt: prompt, PromptTokens: len(prompt) / 4} }
	res, err := decide(s, req())
	if err != nil {
		t.Fatal(err)
	}
	warm := res.Targets[0].Replica
	// 180,000 uncached tokens in flight on the warm replica: 18,000 ms at 10,000 tokens/s, the
	// release gap exactly. The request sticks, although token-load alone would move it.
	lease := warm.Dispatch(clk.Now(), pool.Work{PromptTokens: 180_000, UncachedTokens: 180_000})
	if res, _ := decide(s, req()); res.Targets[0].Replica != warm {
		t.Fatalf("at the release gap the request went to %s, not the warm %s", res.Targets[0].Replica.Name, warm.Name)
	}
	warm.Dispatch(clk.Now(), pool.Work{PromptTokens: 10, UncachedTokens: 10})
	if res, _ := decide(s, req()); res.Targets[0].Replica == warm {
		t.Fatalf("past the release gap the request stayed on the warm %s", warm.Name)
	}
	lease.Release()
}

func TestWithPeakPrefillThroughput(t *testing.T) {
	orig := BuiltinProfiles()["llm-d-predicted"]
	pc, err := WithPeakPrefillThroughput(orig, map[string]float64{"8b-h100": 36000, DefaultPeakClass: 17000})
	if err != nil {
		t.Fatal(err)
	}
	if string(orig.Filters[0].Args) != `{"ttftSource":"predictor","maxTTFTPenaltyMs":5000}` {
		t.Errorf("the original was modified: %s", orig.Filters[0].Args)
	}
	f := affinityFilter(t, string(pc.Filters[0].Args))
	if !f.predictor || f.maxPenaltyMs != 5000 || f.PeakPrefillThroughput("8b-h100") != 36000 || f.PeakPrefillThroughput("x") != 17000 {
		t.Errorf("args %s: %+v", pc.Filters[0].Args, f)
	}
	if string(pc.Filters[1].Args) != "" {
		t.Errorf("slo-tier args changed: %s", pc.Filters[1].Args)
	}
}
