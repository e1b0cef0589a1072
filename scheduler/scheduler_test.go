package scheduler

import (
	"context"
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/augur-llm/augur/pool"
)

func testPool(t testing.TB, n int) (*pool.Pool, *clocktesting.FakeClock) {
	t.Helper()
	clk := clocktesting.NewFakeClock(time.Unix(1_700_000_000, 0))
	p := pool.New(clk, time.Second)
	var eps []pool.Endpoint
	for i := range n {
		eps = append(eps, pool.Endpoint{Name: "r" + strconv.Itoa(i), Address: "10.0.0.1:" + strconv.Itoa(9000+i)})
	}
	if err := p.Set(eps); err != nil {
		t.Fatal(err)
	}
	for _, r := range p.Replicas() {
		r.SetMetrics(pool.Metrics{ScrapedAt: clk.Now()})
	}
	return p, clk
}

func defaultScheduler(t testing.TB, p *pool.Pool, fallbacks int) *Scheduler {
	t.Helper()
	prof, err := DefaultRegistry().Build(DefaultProfileConfig(), Handle{Seed: 7}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(p, prof, fallbacks)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestLeastLoadedWinsAndFallbacksFollowScore(t *testing.T) {
	p, clk := testPool(t, 4)
	rs := p.Replicas()
	for i, r := range rs {
		// r0 has 30 requests, r1 20, r2 0, r3 10 (by metrics or by in-flight accounting).
		load := []int{30, 20, 0, 10}[i]
		if i%2 == 0 {
			r.SetMetrics(pool.Metrics{Running: load, ScrapedAt: clk.Now()})
		} else {
			for range load {
				r.Dispatch(time.Time{}, pool.Work{PromptTokens: 100})
			}
		}
	}
	s := defaultScheduler(t, p, 2)
	res, err := s.Schedule(context.Background(), &Request{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range res.Targets {
		got = append(got, c.Replica.Name)
	}
	if len(got) != 3 || got[0] != "r2" || got[1] != "r3" || got[2] != "r1" {
		t.Fatalf("order %v, want [r2 r3 r1]", got)
	}
	if res.Targets[1].Load.Requests != 10 {
		t.Errorf("target carries load %+v, want the decision-time snapshot", res.Targets[1].Load)
	}
}

func TestTiesAreBrokenAtRandom(t *testing.T) {
	p, _ := testPool(t, 4)
	s := defaultScheduler(t, p, 0)
	seen := map[string]int{}
	for range 400 {
		res, err := s.Schedule(context.Background(), &Request{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		seen[res.Targets[0].Replica.Name]++
	}
	for _, r := range p.Replicas() {
		if seen[r.Name] < 50 {
			t.Errorf("equal replicas: %s chosen %d of 400 times: %v", r.Name, seen[r.Name], seen)
		}
	}
}

func TestStaleAndSubset(t *testing.T) {
	p, clk := testPool(t, 3)
	s := defaultScheduler(t, p, 5)
	clk.Step(2 * time.Second)
	p.Replicas()[1].SetMetrics(pool.Metrics{ScrapedAt: clk.Now()})
	res, err := s.Schedule(context.Background(), &Request{}, nil)
	if err != nil || len(res.Targets) != 1 || res.Targets[0].Replica.Name != "r1" {
		t.Fatalf("only r1 is fresh: got %+v %v", res, err)
	}
	if _, err := s.Schedule(context.Background(), &Request{}, []string{"10.0.0.1:9000"}); !errors.Is(err, ErrNoEndpoints) {
		t.Errorf("subset of a stale replica: err %v", err)
	}
	if _, err := s.Schedule(context.Background(), &Request{}, []string{}); !errors.Is(err, ErrNoEndpoints) {
		t.Errorf("empty subset: err %v", err)
	}
	res, err = s.Schedule(context.Background(), &Request{}, []string{"10.0.0.1:9001", "10.9.9.9:1"})
	if err != nil || res.Targets[0].Replica.Name != "r1" {
		t.Errorf("subset: %+v %v", res, err)
	}
}

// fixedScorer gives candidate i the score fixedScorer[i].
type fixedScorer []float64

func (fixedScorer) Name() string { return "fixed" }
func (f fixedScorer) Score(_ context.Context, _ *Request, cands []Candidate, s []float64) {
	copy(s, f)
}

// Out-of-range scores are clamped to [0,1] (NaN to 0) before weighting: a scorer that returns
// 1e9 for one replica must not outvote the others.
func TestScoresAreClampedAndWeighted(t *testing.T) {
	for _, tc := range []struct {
		name   string
		scores fixedScorer
	}{
		{"huge for the busy replica", fixedScorer{1e9, 1}},
		{"negative for the idle replica", fixedScorer{1, -1e9}},
		{"NaN beside the idle replica's 0", fixedScorer{0, math.NaN()}},
	} {
		p, _ := testPool(t, 2)
		p.Replicas()[0].Dispatch(time.Time{}, pool.Work{PromptTokens: 10}) // r0 busier: load scorer gives r0 0, r1 1
		prof := &Profile{Name: "x", Scorers: []WeightedScorer{
			{Scorer: LoadScorer{}, Weight: 2},
			{Scorer: tc.scores, Weight: 1},
		}, Picker: NewMaxScorePicker(1)}
		s, err := New(p, prof, 0)
		if err != nil {
			t.Fatal(err)
		}
		// Clamped, r0 totals at most 1 and r1 at least 2: the load scorer's weight decides.
		res, _ := s.Schedule(context.Background(), &Request{}, nil)
		if res.Targets[0].Replica.Name != "r1" {
			t.Errorf("%s: picked %s", tc.name, res.Targets[0].Replica.Name)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	reg := DefaultRegistry()
	neg, one := -1.0, 1.0
	for _, tc := range []struct {
		name string
		pc   ProfileConfig
		want string
	}{
		{"unknown plugin", ProfileConfig{Name: "p", Scorers: []PluginConfig{{Name: "nope"}}, Picker: PluginConfig{Name: "max-score"}}, `unknown scorer plugin "nope"`},
		{"bad weight", ProfileConfig{Name: "p", Scorers: []PluginConfig{{Name: "load", Weight: &neg}}, Picker: PluginConfig{Name: "max-score"}}, "weight -1"},
		{"unknown parameter", ProfileConfig{Name: "p", Scorers: []PluginConfig{{Name: "load", Args: []byte(`{"x":1}`)}}, Picker: PluginConfig{Name: "max-score"}}, `unknown field "x"`},
		{"no picker", ProfileConfig{Name: "p"}, "picker is required"},
		{"scorer as picker", ProfileConfig{Name: "p", Picker: PluginConfig{Name: "load"}}, "not a picker"},
		{"weight on picker", ProfileConfig{Name: "p", Picker: PluginConfig{Name: "max-score", Weight: &one}}, "scorers only"},
	} {
		_, err := reg.Build(tc.pc, Handle{}, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want %q", tc.name, err, tc.want)
		}
	}
}

func BenchmarkSchedule16(b *testing.B) {
	p, _ := testPool(b, 16)
	s := defaultScheduler(b, p, 2)
	req := &Request{PromptTokens: 100}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Schedule(context.Background(), req, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// decide schedules req and tells the deciding profile it was sent to the primary, as the
// request lifecycle does.
func decide(s *Scheduler, req *Request) (Result, error) {
	res, err := s.Schedule(context.Background(), req, nil)
	if err == nil {
		res.Profile.Dispatched(context.Background(), req, res.Targets[0])
	}
	return res, err
}

type fakePredictor struct{ sawPrefix []bool }

func (f *fakePredictor) Predict(_ context.Context, _ *Request, cands []Candidate) {
	for i := range cands {
		_, ok := cands[i].Value(ValuePrefixMatch)
		f.sawPrefix = append(f.sawPrefix, ok)
		cands[i].SetValue(ValuePredictedTTFT, float64(10*(i+1)))
		cands[i].ModelVersion = "v1"
	}
}

// predictedScorer prefers the lowest predicted TTFT: a scorer that reads the predictions.
type predictedScorer struct{}

func (predictedScorer) Name() string { return "predicted" }
func (predictedScorer) Score(_ context.Context, _ *Request, cands []Candidate, scores []float64) {
	for i, c := range cands {
		v, ok := c.Value(ValuePredictedTTFT)
		if ok {
			scores[i] = 1 / v
		}
	}
}

// The predictor runs after the pre-score plugins (it reads their values) and before the
// scorers (they read its predictions), and the decision carries the predictions.
func TestPredictorRunsBetweenPreScoreAndScore(t *testing.T) {
	p, _ := testPool(t, 3)
	reg := DefaultRegistry()
	reg["predicted"] = noArgs(func(Handle) any { return predictedScorer{} })
	one := 1.0
	prof, err := reg.Build(ProfileConfig{Name: "p", Scorers: []PluginConfig{{Name: "prefix", Weight: &one}, {Name: "predicted", Weight: &one}},
		Picker: PluginConfig{Name: "max-score"}}, Handle{Pool: p}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakePredictor{}
	s, err := NewWithPredictor(p, prof, 0, f)
	if err != nil {
		t.Fatal(err)
	}
	req := Request{ID: "a", Prompt: []byte(strings.Repeat("x", 256)), PromptTokens: 64}
	res, err := s.Schedule(context.Background(), &req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.sawPrefix) != 3 || slices.Contains(f.sawPrefix, false) {
		t.Errorf("the predictor saw prefix values %v, want all three", f.sawPrefix)
	}
	v, ok := res.Targets[0].Value(ValuePredictedTTFT)
	if !ok || v != 10 || res.Targets[0].ModelVersion != "v1" {
		t.Errorf("primary: predicted %v (%v), version %q; want the lowest prediction, 10, of v1", v, ok, res.Targets[0].ModelVersion)
	}
}
