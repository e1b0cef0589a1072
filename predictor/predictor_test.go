package predictor_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/augur-llm/augur/models"
	"github.com/augur-llm/augur/pool"
	"github.com/augur-llm/augur/predictor"
	"github.com/augur-llm/augur/requestcontrol"
	"github.com/augur-llm/augur/scheduler"
	"github.com/augur-llm/augur/trainer"
	"github.com/augur-llm/augur/trainer/trainertest"
)

// candidates returns n candidates over the trainertest classes, with varied load.
func candidates(t testing.TB, n int, now time.Time) []scheduler.Candidate {
	t.Helper()
	var out []scheduler.Candidate
	for i := range n {
		r := pool.NewReplica(pool.Endpoint{Name: fmt.Sprintf("r%d", i), Address: fmt.Sprintf("10.0.0.%d:8000", i+1),
			Class: trainertest.Classes[i%len(trainertest.Classes)]})
		r.SetMetrics(pool.Metrics{Running: i, Waiting: i / 10, KVUsage: float64(i) / float64(n), BlockSize: 16, NumGPUBlocks: 20000, ScrapedAt: now})
		for k := range i % 5 {
			l := r.Dispatch(now, pool.Work{PromptTokens: 1000, UncachedTokens: 500, MaxTokens: 200})
			if k%2 == 0 {
				l.FirstToken(now)
			}
		}
		c := scheduler.CandidateOf(r)
		c.SetValue(scheduler.ValuePrefixMatch, float64(i%3)/3)
		out = append(out, c)
	}
	return out
}

func request() scheduler.Request {
	return scheduler.Request{ID: "q", Model: "m", PromptTokens: 2000, MaxTokens: 300, Stream: true}
}

func loaded(t testing.TB) (*predictor.Predictor, []models.Artifact) {
	t.Helper()
	arts := trainertest.Artifacts(t)
	set, err := predictor.Load(arts)
	if err != nil {
		t.Fatal(err)
	}
	p := predictor.New(predictor.Options{})
	p.Swap(set)
	return p, arts
}

func TestPredictFillsEveryCandidate(t *testing.T) {
	p, arts := loaded(t)
	now := time.Now()
	cands := candidates(t, 8, now)
	req := request()
	p.Predict(context.Background(), &req, cands)
	for _, c := range cands {
		for _, v := range []scheduler.Value{scheduler.ValuePredictedTTFT, scheduler.ValuePredictedTPOT, scheduler.ValuePredictedTTFTUpper, scheduler.ValuePredictedTPOTUpper} {
			x, ok := c.Value(v)
			if !ok || !(x > 0) {
				t.Errorf("%s: value %d = %v, %v", c.Replica.Name, v, x, ok)
			}
		}
		mean, _ := c.Value(scheduler.ValuePredictedTTFT)
		upper, _ := c.Value(scheduler.ValuePredictedTTFTUpper)
		if upper < mean {
			t.Errorf("%s: p90 %v below the mean %v", c.Replica.Name, upper, mean)
		}
		if c.ModelVersion != arts[0].Manifest.Run {
			t.Errorf("version %q, want the run %q", c.ModelVersion, arts[0].Manifest.Run)
		}
	}
	// The model knows the slow class is slower: same load, other class.
	a, b := cands[0], cands[1] // fast, slow
	b.Metrics, b.Load = a.Metrics, a.Load
	b.SetValue(scheduler.ValuePrefixMatch, 0)
	a.SetValue(scheduler.ValuePrefixMatch, 0)
	two := []scheduler.Candidate{a, b}
	p.Predict(context.Background(), &req, two)
	fa, _ := two[0].Value(scheduler.ValuePredictedTPOT)
	fb, _ := two[1].Value(scheduler.ValuePredictedTPOT)
	if !(fb > 1.4*fa) {
		t.Errorf("TPOT fast %v, slow %v: the class is not seen", fa, fb)
	}
}

func TestPredictAllocatesNothing(t *testing.T) {
	if raceDetector {
		t.Skip("the race detector's sync.Pool drops buffers on purpose")
	}
	p, _ := loaded(t)
	cands := candidates(t, 32, time.Now())
	req := request()
	p.Predict(context.Background(), &req, cands) // buffers grow once
	if n := testing.AllocsPerRun(200, func() { p.Predict(context.Background(), &req, cands) }); n != 0 {
		t.Errorf("Predict with models: %v allocations per call", n)
	}
	cold := predictor.New(predictor.Options{})
	if n := testing.AllocsPerRun(200, func() { cold.Predict(context.Background(), &req, cands) }); n != 0 {
		t.Errorf("Predict with the cold start: %v allocations per call", n)
	}
}

// corrupt returns a copy of arts with change applied to the artifact of slot name.
func corrupt(arts []models.Artifact, name string, change func(a *models.Artifact)) []models.Artifact {
	out := make([]models.Artifact, len(arts))
	for i, a := range arts {
		a.Leaves = append([]byte(nil), a.Leaves...)
		a.XGBoost = append([]byte(nil), a.XGBoost...)
		if a.Manifest.Name() == name {
			change(&a)
		}
		out[i] = a
	}
	return out
}

func TestLoadRefusesWhatMustNotServe(t *testing.T) {
	arts := trainertest.Artifacts(t)
	for _, tc := range []struct {
		name   string
		change func(a *models.Artifact)
	}{
		{"a flipped byte", func(a *models.Artifact) { a.Leaves[len(a.Leaves)/2] ^= 0x40 }},
		{"truncated", func(a *models.Artifact) { a.Leaves = a.Leaves[:len(a.Leaves)/2] }},
		{"truncated, checksum recomputed", func(a *models.Artifact) { a.Leaves = a.Leaves[:len(a.Leaves)-7]; a.Seal() }},
		{"garbage, checksum recomputed", func(a *models.Artifact) {
			for i := range a.Leaves[200:] {
				a.Leaves[200+i] = byte(i * 7)
			}
			a.Seal()
		}},
		{"another feature schema", func(a *models.Artifact) { a.Manifest.SchemaVersion = models.SchemaVersion - 1 }},
		{"columns not this schema's", func(a *models.Artifact) { a.Manifest.Columns[0] = "kv_usage" }},
		{"an insane prediction", func(a *models.Artifact) { a.Manifest.Calibration.Default = 40 }},
		{"NaN in the prior", func(a *models.Artifact) { a.Manifest.Prior.Pooled[0] = math.NaN() }},
	} {
		bad := corrupt(arts, "ttft-quantile", tc.change)
		if _, err := predictor.Load(bad); !errors.Is(err, models.ErrInvalidArtifact) {
			t.Errorf("%s: Load returned %v, want ErrInvalidArtifact", tc.name, err)
		}
	}
	if _, err := predictor.Load(arts[1:2]); err == nil {
		t.Error("a quantile model without its mean model loaded")
	}
	if _, err := predictor.Load(append(arts, arts[0])); err == nil {
		t.Error("two models in one slot loaded")
	}
}

// A directory's models are followed: good ones swap in without a restart, bad ones are
// refused while the previous keep serving.
func TestFollowKeepsTheLastGoodModels(t *testing.T) {
	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	p := predictor.New(predictor.Options{Metrics: predictor.NewMetrics(reg)})
	src := predictor.DirSource{Dir: dir}
	ctx := context.Background()
	if err := p.Refresh(ctx, src); err != nil {
		t.Fatal(err)
	}
	if p.Source(models.TTFT) != predictor.SourceDefault || p.Models() != nil {
		t.Fatalf("empty directory: source %s", p.Source(models.TTFT))
	}
	arts := trainertest.Artifacts(t)
	for _, a := range arts {
		if err := models.WriteDir(dir, a); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Refresh(ctx, src); err != nil {
		t.Fatal(err)
	}
	good := p.Version()
	if good != arts[0].Manifest.Run || p.Source(models.TPOT) != predictor.SourceModel {
		t.Fatalf("after publishing: version %q source %s", good, p.Source(models.TPOT))
	}
	// A truncated model file: refused, the good models keep serving.
	path := filepath.Join(dir, "tpot-mean.leaves")
	b, _ := os.ReadFile(path)
	if err := os.WriteFile(path, b[:len(b)/3], 0o644); err != nil {
		t.Fatal(err)
	}
	if err := p.Refresh(ctx, src); err != nil {
		t.Fatal(err)
	}
	if p.Version() != good || metric(t, reg, "augur_model_loads_total", "result=refused") != 1 {
		t.Fatalf("after a truncated file: version %q", p.Version())
	}
	req := request()
	cands := candidates(t, 4, time.Now())
	p.Predict(ctx, &req, cands)
	if cands[0].ModelVersion != good {
		t.Fatalf("decisions stamped %q after the refusal", cands[0].ModelVersion)
	}
	// A set of another schema: refused too.
	other := trainertest.Artifacts(t)
	for _, a := range other {
		a.Manifest.SchemaVersion++
		if err := models.WriteDir(dir, a); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Refresh(ctx, src); err != nil {
		t.Fatal(err)
	}
	if p.Version() != good {
		t.Fatalf("another schema's models took over: %q", p.Version())
	}
	// A good new set replaces the old one.
	for _, a := range other {
		if err := models.WriteDir(dir, a); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Refresh(ctx, src); err != nil {
		t.Fatal(err)
	}
	if v := p.Version(); v != other[0].Manifest.Run || v == good {
		t.Fatalf("the new models did not load: %q", v)
	}
	if n := metric(t, reg, "augur_model_loads_total", "result=loaded"); n != 2 {
		t.Errorf("%v loads counted, want 2", n)
	}
	// An unreachable source is an error and changes nothing.
	if err := p.Refresh(ctx, predictor.DirSource{Dir: filepath.Join(dir, "missing")}); err == nil {
		t.Error("a missing directory is not an error")
	}
	if p.Version() != other[0].Manifest.Run {
		t.Error("an unreachable source changed the models")
	}
}

// metric returns the value of the counter or gauge name whose labels include want
// ("name=value" pairs).
func metric(t *testing.T, reg *prometheus.Registry, name string, want ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			have := map[string]bool{}
			for _, l := range m.GetLabel() {
				have[l.GetName()+"="+l.GetValue()] = true
			}
			for _, w := range want {
				if !have[w] {
					continue next
				}
			}
			return m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return 0
}

// Before any model, the cold start moves from the default prior to one fitted online from
// the picker's own completions, and predicts the law better.
func TestColdStartLearnsOnline(t *testing.T) {
	reg := prometheus.NewRegistry()
	p := predictor.New(predictor.Options{Metrics: predictor.NewMetrics(reg), SyncRefit: true})
	rows := trainertest.Rows(600, 9)
	mape := func() float64 {
		s := 0.0
		for _, r := range rows[500:] {
			s += math.Abs(p.Estimate(models.TTFT, &r.Features, r.Class).Mean-r.TTFT) / r.TTFT
		}
		return s / 100
	}
	before := mape()
	for _, r := range rows[:500] {
		p.Observe(completion(r))
	}
	if p.Source(models.TTFT) != predictor.SourceOnline || p.Source(models.TPOT) != predictor.SourceOnline {
		t.Fatalf("sources %s/%s after 500 samples", p.Source(models.TTFT), p.Source(models.TPOT))
	}
	if after := mape(); !(after < before/2) {
		t.Errorf("TTFT error %.1f%% with the default prior, %.1f%% fitted online", 100*before, 100*after)
	}
	if !strings.Contains(p.Version(), "prior-online") {
		t.Errorf("version %q does not say the online prior serves", p.Version())
	}
	if got := metric(t, reg, "augur_predictor_source", "target=ttft", "source=online"); got != 1 {
		t.Errorf("augur_predictor_source{ttft,online} = %v", got)
	}
}

func completion(r trainer.Row) requestcontrol.Completion {
	first := r.At.Add(time.Duration(r.TTFT * float64(time.Millisecond)))
	return requestcontrol.Completion{
		Request: scheduler.Request{Stream: true}, Features: r.Features, Target: pool.Endpoint{Name: "r", Class: r.Class},
		Dispatched: r.At, FirstToken: first, End: requestcontrol.End{Outcome: requestcontrol.OutcomeOK, Status: 200, OutputTokens: 11},
		TTFT: first.Sub(r.At), TPOT: time.Duration(r.TPOT * float64(time.Millisecond)),
	}
}

// Live error is exported per target and class as soon as predicted requests finish.
func TestObserveExportsLiveError(t *testing.T) {
	reg := prometheus.NewRegistry()
	p := predictor.New(predictor.Options{Metrics: predictor.NewMetrics(reg)})
	for i, r := range trainertest.Rows(40, 3) {
		c := completion(r)
		mean, upper := r.TTFT*1.1, r.TTFT*1.2
		if i%4 == 0 {
			upper = r.TTFT * 0.9 // a quarter exceed the upper prediction
		}
		c.PredictedTTFTMs, c.PredictedTTFTUpperMs = &mean, &upper
		p.Observe(c)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var count uint64
	var sum float64
	above, within := 0.0, 0.0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "augur_prediction_error_ratio":
				count += m.GetHistogram().GetSampleCount()
				sum += m.GetHistogram().GetSampleSum()
			case "augur_prediction_upper_total":
				for _, l := range m.GetLabel() {
					if l.GetName() == "result" && l.GetValue() == "above" {
						above += m.GetCounter().GetValue()
					} else if l.GetName() == "result" {
						within += m.GetCounter().GetValue()
					}
				}
			}
		}
	}
	if count != 40 || math.Abs(sum/40-0.1) > 1e-6 {
		t.Errorf("error histogram: %d observations, mean %v; want 40 of 0.1", count, sum/float64(count))
	}
	if above != 10 || within != 30 {
		t.Errorf("upper coverage: %v above, %v within; want 10 and 30", above, within)
	}
}

func BenchmarkPredict32(b *testing.B) {
	p, _ := loaded(b)
	cands := candidates(b, 32, time.Now())
	req := request()
	p.Predict(context.Background(), &req, cands) // the buffer grows once
	b.ReportAllocs()
	for b.Loop() {
		p.Predict(context.Background(), &req, cands)
	}
}

func BenchmarkPredict32ColdStart(b *testing.B) {
	p := predictor.New(predictor.Options{})
	cands := candidates(b, 32, time.Now())
	req := request()
	p.Predict(context.Background(), &req, cands) // the buffer grows once
	b.ReportAllocs()
	for b.Loop() {
		p.Predict(context.Background(), &req, cands)
	}
}

// BenchmarkPredict32Pinball is BenchmarkPredict32 with pinball quantile models: trees of
// their own, evaluated beside the mean models' (the calibrated quantile reuses those).
func BenchmarkPredict32Pinball(b *testing.B) {
	rep, err := trainer.Train(context.Background(), trainertest.Rows(6000, 1), nil, trainer.Options{QuantileMethod: models.MethodPinball})
	if err != nil {
		b.Fatal(err)
	}
	var arts []models.Artifact
	for _, t := range rep.Targets {
		arts = append(arts, t.Artifacts...)
	}
	set, err := predictor.Load(arts)
	if err != nil {
		b.Fatal(err)
	}
	p := predictor.New(predictor.Options{})
	p.Swap(set)
	cands := candidates(b, 32, time.Now())
	req := request()
	p.Predict(context.Background(), &req, cands) // the buffer grows once
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		p.Predict(context.Background(), &req, cands)
	}
}

// flaky is a model source whose first reads fail, as a database does while it restarts.
type flaky struct {
	fails int
	arts  []models.Artifact
	loads int
}

func (f *flaky) Fingerprint(context.Context) (string, error) { return "v1", nil }
func (f *flaky) Load(context.Context) ([]models.Artifact, error) {
	f.loads++
	if f.loads <= f.fails {
		return nil, errors.New("connection reset by peer")
	}
	return f.arts, nil
}
func (f *flaky) String() string { return "flaky" }

// A publication that could not be read is read again at the next poll; it is not refused.
func TestRefreshRetriesAnUnreadableSource(t *testing.T) {
	p := predictor.New(predictor.Options{})
	src := &flaky{fails: 2, arts: trainertest.Artifacts(t)}
	for i := range 3 {
		err := p.Refresh(context.Background(), src)
		if (i < 2) != (err != nil) {
			t.Fatalf("poll %d: %v", i, err)
		}
	}
	if p.Source(models.TTFT) != predictor.SourceModel || src.loads != 3 {
		t.Fatalf("after two failed reads and one good: source %s, %d loads", p.Source(models.TTFT), src.loads)
	}
	// Once loaded, the same publication is not read again.
	if err := p.Refresh(context.Background(), src); err != nil || src.loads != 3 {
		t.Fatalf("a fourth poll read again: %d loads (%v)", src.loads, err)
	}
}
