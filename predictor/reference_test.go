package predictor_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/dmitryikh/leaves"

	"github.com/augur-llm/augur/models"
	"github.com/augur-llm/augur/pool"
	"github.com/augur-llm/augur/predictor"
	"github.com/augur-llm/augur/scheduler"
	"github.com/augur-llm/augur/trainer"
	"github.com/augur-llm/augur/trainer/trainertest"
)

// The reference predictor is the request path as it was before it was made fast (commit
// 4a01a59), written out from the artifacts alone: per candidate, models.Extract, each model's
// input row filled from the vector (values rounded to float32, NaN for NULL, one indicator per
// class), the tree sum by leaves' Ensemble.Predict, the prior's estimate from its nine-term
// basis, the calibration offset by regime, and the cold-start prior for a target without a
// model. Predict must give the same bits.

type refModel struct {
	man    models.Manifest
	ens    *leaves.Ensemble
	layout models.Layout
}

type refSet struct {
	version string
	mean    [2]*refModel // by target: TTFT, TPOT
	upper   [2]*refModel
}

func newRefSet(t testing.TB, arts []models.Artifact, version string) *refSet {
	t.Helper()
	s := &refSet{version: version}
	for _, a := range arts {
		ens, err := leaves.XGEnsembleFromReader(bufio.NewReader(bytes.NewReader(a.Leaves)), false)
		if err != nil {
			t.Fatal(err)
		}
		m := &refModel{man: a.Manifest, ens: ens, layout: models.NewLayout(a.Manifest.Classes)}
		ti := 0
		if a.Manifest.Target == models.TPOT {
			ti = 1
		}
		if a.Manifest.Kind == models.Quantile {
			s.upper[ti] = m
		} else {
			s.mean[ti] = m
		}
	}
	return s
}

// refFill is models.Layout.Fill as it was.
func refFill(l models.Layout, dst []float64, v *models.Vector, class int) {
	for i := range models.NumFeatures {
		if x, ok := v.Get(i); ok {
			dst[i] = float64(float32(x))
		} else {
			dst[i] = math.NaN()
		}
	}
	for i := range l.Classes {
		dst[models.NumFeatures+i] = 0
	}
	if class >= 0 && class < len(l.Classes) {
		dst[models.NumFeatures+class] = 1
	}
}

// refPrior is models.Prior.Estimate as it was.
func refPrior(p *models.Prior, v *models.Vector, class string) float64 {
	get := func(name string) float64 {
		i := models.Index(name)
		if i < 0 {
			panic(name)
		}
		x, _ := v.Get(i)
		return x
	}
	var b [models.PriorTerms]float64
	if p.Target == models.TTFT {
		u := get("uncached_input_tokens")
		b = [models.PriorTerms]float64{1, u, u * u / 1e4, get("current_step_uncached_tokens"), get("next_step_uncached_tokens"),
			get("decode_context_tokens") / 1000, get("num_requests_waiting"), get("step_wait_ms"), get("prefill_uncached_tokens_in_flight"), 0}
		// The prompt and the queue ahead beyond the KV cache free at the last scrape.
		if capacity := get("num_gpu_blocks") * get("block_size"); capacity > 0 {
			b[9] = max(0, get("prefill_uncached_tokens_in_flight")+u-capacity*(1-get("kv_cache_usage")))
		}
	} else {
		b = [models.PriorTerms]float64{1, get("decode_requests_in_flight") + 1, get("decode_context_tokens") / 1000,
			get("uncached_token_rate") / 100, get("decode_tokens_left") / 100, get("input_tokens") / 100, get("step_slow_ms"),
			get("step_ms"), get("uncached_token_rate_fast") / 100, get("prefill_uncached_tokens_in_flight") / 1000}
	}
	coef := p.Pooled
	for i, c := range p.Classes {
		if c == class {
			coef = p.Coef[i]
			break
		}
	}
	e := 0.0
	for i, c := range coef {
		e += c * b[i]
	}
	if !(e >= p.Floor) {
		return p.Floor
	}
	return e
}

// refLog is a model's log prediction for v on a replica of class: trees + log prior +
// calibration.
func (m *refModel) log(v *models.Vector, class string) float64 {
	row := make([]float64, m.layout.Width())
	refFill(m.layout, row, v, m.layout.ClassIndex(class))
	out := make([]float64, 1)
	sum := math.NaN()
	if err := m.ens.Predict(row, 0, out); err == nil {
		sum = out[0]
	}
	cal := 0.0
	if c := m.man.Calibration; c != nil {
		cal = c.Offset(models.RegimeOf(v, class))
	}
	return sum + math.Log(refPrior(&m.man.Prior, v, class)) + cal
}

// predict returns what the reference sets on c: mean and upper per target (NaN: not set).
func (s *refSet) predict(req *scheduler.Request, c *scheduler.Candidate, now time.Time) [4]float64 {
	v := models.Extract(req, c, now)
	class := c.Endpoint.Class
	out := [4]float64{math.NaN(), math.NaN(), math.NaN(), math.NaN()} // TTFT, TPOT, TTFT upper, TPOT upper
	for ti, t := range models.Targets() {
		if s == nil || s.mean[ti] == nil {
			p := models.DefaultPrior(t)
			m := refPrior(&p, &v, class)
			out[ti], out[2+ti] = m, m*math.Exp(math.Log(1.5))
			continue
		}
		out[ti] = math.Exp(s.mean[ti].log(&v, class))
		if u := s.upper[ti]; u != nil {
			out[2+ti] = math.Exp(u.log(&v, class))
		}
	}
	return out
}

var predictedValues = [4]scheduler.Value{scheduler.ValuePredictedTTFT, scheduler.ValuePredictedTPOT,
	scheduler.ValuePredictedTTFTUpper, scheduler.ValuePredictedTPOTUpper}

// checkAgainstReference reports every candidate whose predicted values or version differ from
// the reference's, bit for bit.
func checkAgainstReference(t testing.TB, ref *refSet, version string, req *scheduler.Request, cands []scheduler.Candidate, now time.Time) {
	t.Helper()
	bad := 0
	for i := range cands {
		c := &cands[i]
		want := ref.predict(req, c, now)
		for k, val := range predictedValues {
			got, ok := c.Value(val)
			if ok != !math.IsNaN(want[k]) || (ok && math.Float64bits(got) != math.Float64bits(want[k])) {
				if bad++; bad <= 10 {
					t.Errorf("candidate %d (%s): value %d = %v (set %v), reference %v", i, c.Endpoint.Class, val, got, ok, want[k])
				}
			}
		}
		if c.ModelVersion != version {
			t.Errorf("candidate %d: version %q, want %q", i, c.ModelVersion, version)
		}
	}
	if bad > 10 {
		t.Errorf("... %d differences in all", bad)
	}
}

// randomCandidates returns n candidates with varied metrics and in-flight accounting, as of
// now: NULL features (no cache config, no prefix match, no token seen), metrics scraped
// before and after now, replica classes the models know and others.
func randomCandidates(rng *rand.Rand, n int, now time.Time, classes []string) []scheduler.Candidate {
	classes = append(append([]string(nil), classes...), "unknown-class", "")
	out := make([]scheduler.Candidate, n)
	for i := range out {
		r := pool.NewReplica(pool.Endpoint{Name: fmt.Sprint("r", i), Address: fmt.Sprintf("10.1.%d.%d:8000", i/250, i%250+1),
			Class: classes[rng.IntN(len(classes))]})
		for range rng.IntN(8) {
			at := now.Add(-time.Duration(rng.IntN(30_000)) * time.Millisecond)
			if rng.IntN(8) == 0 {
				at = now.Add(-time.Duration(rng.IntN(40)) * time.Second)
			}
			prompt := 1 + rng.IntN(16_000)
			l := r.Dispatch(at, pool.Work{PromptTokens: prompt, UncachedTokens: rng.IntN(prompt + 1), MaxTokens: rng.IntN(3) * rng.IntN(2000)})
			switch rng.IntN(4) {
			case 0:
			case 1:
				l.Release()
			default:
				first := at.Add(time.Duration(rng.IntN(3000)) * time.Millisecond)
				l.FirstToken(first)
				for k := 2; k < 2+rng.IntN(40); k++ {
					first = first.Add(time.Duration(1+rng.IntN(80)) * time.Millisecond)
					l.Generated(first, k)
				}
				if rng.IntN(3) == 0 {
					l.Release()
				}
			}
		}
		m := pool.Metrics{Running: rng.IntN(60), Waiting: rng.IntN(3) * rng.IntN(10), KVUsage: rng.Float64(),
			ScrapedAt: now.Add(time.Duration(rng.IntN(3000)-2500) * time.Millisecond)}
		switch rng.IntN(5) {
		case 0:
			m.KVUsage = models.OverloadKVUsage
		case 1:
			m.KVUsage = 0
		}
		if rng.IntN(4) > 0 {
			m.BlockSize, m.NumGPUBlocks = 16, 1000+rng.IntN(40_000)
		}
		r.SetMetrics(m)
		c := scheduler.CandidateOf(r)
		switch rng.IntN(5) {
		case 0: // no prefix plugin
		case 1:
			c.SetValue(scheduler.ValuePrefixMatch, models.PrefixHitShare)
		case 2:
			c.SetValue(scheduler.ValuePrefixMatch, 0)
		default:
			c.SetValue(scheduler.ValuePrefixMatch, rng.Float64())
		}
		out[i] = c
	}
	return out
}

func randomRequest(rng *rand.Rand) scheduler.Request {
	return scheduler.Request{ID: "q", Model: "m", PromptTokens: rng.IntN(20_000), MaxTokens: rng.IntN(2) * rng.IntN(4000), Stream: true}
}

// fakeNow is the decision time of the reference tests: a fixed clock, so that the reference
// and the predictor see the same instant.
type fakeNow struct{ t time.Time }

func (f fakeNow) Now() time.Time                  { return f.t }
func (f fakeNow) Since(t time.Time) time.Duration { return f.t.Sub(t) }

// comparePredictions runs Predict with set (nil: the cold start) over random decisions and
// checks every value against the reference.
func comparePredictions(t testing.TB, arts []models.Artifact, set *predictor.Set, decisions int, seed uint64) {
	t.Helper()
	now := time.Unix(1_700_000_000, 123_456_789)
	p := predictor.New(predictor.Options{Clock: fakeNow{now}})
	var ref *refSet
	var classes []string
	if set != nil {
		p.Swap(set)
		ref = newRefSet(t, arts, p.Version())
		for _, a := range arts {
			classes = append(classes, a.Manifest.Classes...)
		}
	}
	rng := rand.New(rand.NewPCG(seed, 7))
	for d := range decisions {
		cands := randomCandidates(rng, 1+rng.IntN(70), now, classes)
		req := randomRequest(rng)
		p.Predict(context.Background(), &req, cands)
		checkAgainstReference(t, ref, p.Version(), &req, cands, now)
		if t.Failed() {
			t.Fatalf("decision %d differs from the reference", d)
		}
	}
}

// The predictions of every kind of model set are those of the reference, bit for bit: mean
// and calibrated p90 models (the trees shared), pinball p90 models (trees of their own), mean
// models alone, one target without models (its cold-start prior), and no models at all.
func TestPredictMatchesReference(t *testing.T) {
	arts := trainertest.Artifacts(t)
	rep, err := trainer.Train(context.Background(), trainertest.Rows(3000, 2), nil, trainer.Options{QuantileMethod: models.MethodPinball})
	if err != nil {
		t.Fatal(err)
	}
	var pinball []models.Artifact
	for _, tr := range rep.Targets {
		pinball = append(pinball, tr.Artifacts...)
	}
	only := func(arts []models.Artifact, keep func(m *models.Manifest) bool) []models.Artifact {
		var out []models.Artifact
		for _, a := range arts {
			if keep(&a.Manifest) {
				out = append(out, a)
			}
		}
		return out
	}
	for _, tc := range []struct {
		name string
		arts []models.Artifact
	}{
		{"calibrated", arts},
		{"pinball", pinball},
		{"mean only", only(arts, func(m *models.Manifest) bool { return m.Kind == models.Mean })},
		{"tpot only", only(arts, func(m *models.Manifest) bool { return m.Target == models.TPOT })},
		{"mixed runs", append(only(arts, func(m *models.Manifest) bool { return m.Target == models.TTFT }),
			only(pinball, func(m *models.Manifest) bool { return m.Target == models.TPOT })...)},
		{"cold start", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var set *predictor.Set
			if tc.arts != nil {
				if set, err = predictor.Load(tc.arts); err != nil {
					t.Fatal(err)
				}
			}
			comparePredictions(t, tc.arts, set, 200, 1)
		})
	}
}
