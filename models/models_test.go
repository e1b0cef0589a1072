package models_test

import (
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/augur-llm/augur/models"
)

func TestLayoutFillsFeaturesAndClass(t *testing.T) {
	l := models.NewLayout([]string{"b", "a", "b"})
	if !slices.Equal(l.Classes, []string{"a", "b"}) || l.Width() != models.NumFeatures+2 {
		t.Fatalf("layout %+v width %d", l, l.Width())
	}
	cols := l.Columns()
	if cols[0] != models.Names()[0] || cols[len(cols)-1] != "class=b" {
		t.Fatalf("columns %v", cols)
	}
	var v models.Vector
	v.Set(0, 0.1) // not a float32: Fill must round it as XGBoost would read it
	v.Set(3, 7)
	row := make([]float64, l.Width())
	l.Fill(row, &v, l.ClassIndex("b"))
	if row[0] != float64(float32(0.1)) || row[3] != 7 || !math.IsNaN(row[1]) {
		t.Errorf("features %v", row[:5])
	}
	if row[models.NumFeatures] != 0 || row[models.NumFeatures+1] != 1 {
		t.Errorf("class indicators %v", row[models.NumFeatures:])
	}
	l.Fill(row, &v, l.ClassIndex("unseen"))
	if row[models.NumFeatures] != 0 || row[models.NumFeatures+1] != 0 {
		t.Errorf("an unknown class set an indicator: %v", row[models.NumFeatures:])
	}
	row32 := make([]float32, l.Width())
	l.Fill32(row32, &v, 0)
	if row32[0] != float32(0.1) || row32[models.NumFeatures] != 1 || !math.IsNaN(float64(row32[2])) {
		t.Errorf("Fill32 %v", row32)
	}
}

func TestRegimes(t *testing.T) {
	set := func(pairs ...any) *models.Vector {
		var v models.Vector
		for i := 0; i < len(pairs); i += 2 {
			v.Set(models.Index(pairs[i].(string)), pairs[i+1].(float64))
		}
		return &v
	}
	for _, tc := range []struct {
		v    *models.Vector
		load models.LoadRegime
		hit  bool
	}{
		{set("num_requests_running", 0.0, "inflight_requests", 0.0, "num_requests_waiting", 0.0), models.Idle, false},
		{set("num_requests_running", 3.0, "prefix_match", 0.6), models.Loaded, true},
		{set("inflight_requests", 1.0, "prefix_match", 0.4), models.Loaded, false},
		{set("num_requests_waiting", 2.0), models.Overloaded, false},
		{set("kv_cache_usage", 0.95, "prefix_match", 0.5), models.Overloaded, true},
	} {
		r := models.RegimeOf(tc.v, "8b-h100")
		if r.Load != tc.load || r.PrefixHit != tc.hit {
			t.Errorf("%+v: regime %+v, want %v hit %v", tc.v, r, tc.load, tc.hit)
		}
		back, err := models.ParseRegime(r.Key())
		if err != nil || back != r {
			t.Errorf("%q parsed as %+v (%v)", r.Key(), back, err)
		}
	}
	for _, bad := range []string{"", "idle/hit", "busy/hit/x", "idle/maybe/x"} {
		if _, err := models.ParseRegime(bad); err == nil {
			t.Errorf("ParseRegime(%q) accepted", bad)
		}
	}
}

// A prior fitted to samples of a law linear in its basis recovers the law, per class.
func TestFitPriorRecoversALinearLaw(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var obs []models.Observation
	law := func(v *models.Vector, slow bool) float64 {
		u, _ := v.Get(models.Index("uncached_input_tokens"))
		q, _ := v.Get(models.Index("prefill_uncached_tokens_in_flight"))
		ms := 10 + 0.03*u + 0.02*q
		if slow {
			ms *= 2
		}
		return ms
	}
	for i := range 2000 {
		var v models.Vector
		v.Set(models.Index("uncached_input_tokens"), float64(rng.IntN(5000)))
		v.Set(models.Index("prefill_uncached_tokens_in_flight"), float64(rng.IntN(20000)))
		slow := i%2 == 1
		class := "fast"
		if slow {
			class = "slow"
		}
		obs = append(obs, models.Observation{Features: v, Class: class, Ms: law(&v, slow)})
	}
	p, err := models.FitPrior(models.TTFT, obs)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.Classes, []string{"fast", "slow"}) || p.Samples != 2000 {
		t.Fatalf("prior classes %v samples %d", p.Classes, p.Samples)
	}
	for _, o := range obs[:50] {
		got := p.Estimate(&o.Features, p.ClassIndex(o.Class))
		if math.Abs(got-o.Ms)/o.Ms > 0.01 {
			t.Errorf("%s: estimate %v for %v", o.Class, got, o.Ms)
		}
	}
	if _, err := models.FitPrior(models.TTFT, obs[:10]); err == nil {
		t.Error("a fit on 10 samples succeeded")
	}
	d := models.DefaultPrior(models.TPOT)
	if err := d.Check(); err != nil || d.Estimate(&obs[0].Features, -1) <= 0 {
		t.Errorf("default prior: %v", err)
	}
}

// A queue the KV cache cannot hold drains at the pace running requests free it, far slower
// than prefill: the prior has a term for the overflow and recovers both slopes. A law that
// levels off gets no negative overflow slope (a rising term is never negative), and a prior of
// the nine terms of earlier versions still loads and estimates as it did.
func TestFitPriorKVOverflow(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const capacity = 10000 * 16
	vec := func(q, kv float64) models.Vector {
		var v models.Vector
		v.Set(models.Index("uncached_input_tokens"), 1000)
		v.Set(models.Index("prefill_uncached_tokens_in_flight"), q)
		v.Set(models.Index("kv_cache_usage"), kv)
		v.Set(models.Index("num_gpu_blocks"), 10000)
		v.Set(models.Index("block_size"), 16)
		return v
	}
	law := func(q, kv float64) float64 {
		over := max(0, q+1000-capacity*(1-kv))
		return 10 + 0.02*1000 + 0.01*q + 0.1*over
	}
	// A law that levels off: what a wind tunnel's deepest queues can look like when runs end
	// before they drain. A linear fit would give the overflow a negative slope.
	level := func(q, kv float64) float64 { return 10 + 0.02*1000 + 0.01*min(q, 50000) }
	fit := func(law func(q, kv float64) float64) models.Prior {
		var obs []models.Observation
		for range 3000 {
			q, kv := float64(rng.IntN(200000)), rng.Float64()
			obs = append(obs, models.Observation{Features: vec(q, kv), Class: "c", Ms: law(q, kv) * math.Exp(0.05*rng.NormFloat64())})
		}
		p, err := models.FitPrior(models.TTFT, obs)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := fit(law)
	for _, c := range []struct{ q, kv float64 }{{1000, 0.1}, {100000, 0.2}, {150000, 0.9}, {400000, 0.95}} {
		v := vec(c.q, c.kv)
		want := law(c.q, c.kv)
		if got := p.Estimate(&v, 0); math.Abs(got-want)/want > 0.1 {
			t.Errorf("queue %v at KV %v: estimate %.0f ms, law %.0f ms", c.q, c.kv, got, want)
		}
	}
	p = fit(level)
	if c := p.Coef[0][models.PriorTerms-1]; c < 0 {
		t.Errorf("overflow slope %v for a law that levels off, want at least 0", c)
	}
	deep, deeper := vec(300000, 0.99), vec(600000, 0.99)
	if p.Estimate(&deeper, 0) < p.Estimate(&deep, 0) {
		t.Error("a deeper queue estimated shorter")
	}
	legacy := models.DefaultPrior(models.TTFT)
	legacy.Pooled = legacy.Pooled[:models.PriorTerms-1]
	full := models.DefaultPrior(models.TTFT)
	v := vec(50000, 0.5)
	if err := legacy.Check(); err != nil || legacy.Estimate(&v, -1) != full.Estimate(&v, -1) {
		t.Errorf("nine-term prior: %v, estimate %v against %v", err, legacy.Estimate(&v, -1), full.Estimate(&v, -1))
	}
}

func testArtifact(t *testing.T) models.Artifact {
	t.Helper()
	l := models.NewLayout([]string{"8b-h100"})
	a := models.Artifact{
		Manifest: models.Manifest{Version: "v1-ttft-quantile", Run: "v1", Target: models.TTFT, Kind: models.Quantile, Quantile: 0.9,
			Method: models.MethodCalibrated, Calibration: &models.Calibration{Offsets: map[string]float64{"idle/miss/8b-h100": 0.2}},
			SchemaVersion: models.SchemaVersion, Columns: l.Columns(), Classes: l.Classes, Prior: models.DefaultPrior(models.TTFT),
			CreatedAt: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)},
		Leaves: []byte("model bytes"), XGBoost: []byte(`{"learner":{}}`),
	}
	a.Seal()
	if err := a.Verify(); err != nil {
		t.Fatal(err)
	}
	return a
}

func TestVerifyRefusesInconsistentArtifacts(t *testing.T) {
	for name, change := range map[string]func(a *models.Artifact){
		"leaves changed":    func(a *models.Artifact) { a.Leaves[0] ^= 1 },
		"xgboost truncated": func(a *models.Artifact) { a.XGBoost = a.XGBoost[:3] },
		"old schema":        func(a *models.Artifact) { a.Manifest.SchemaVersion = 1 },
		"columns":           func(a *models.Artifact) { a.Manifest.Columns = a.Manifest.Columns[1:] },
		"classes unsorted":  func(a *models.Artifact) { a.Manifest.Classes = []string{"z", "a"} },
		"target":            func(a *models.Artifact) { a.Manifest.Target = "e2e" },
		"kind":              func(a *models.Artifact) { a.Manifest.Kind = "median" },
		"quantile":          func(a *models.Artifact) { a.Manifest.Quantile = 1.5 },
		"no calibration":    func(a *models.Artifact) { a.Manifest.Calibration = nil },
		"prior target":      func(a *models.Artifact) { a.Manifest.Prior = models.DefaultPrior(models.TPOT) },
		"version":           func(a *models.Artifact) { a.Manifest.Version = "../x" },
		"offset":            func(a *models.Artifact) { a.Manifest.Calibration.Default = math.Inf(1) },
	} {
		a := testArtifact(t)
		a.Leaves = slices.Clone(a.Leaves)
		change(&a)
		if err := a.Verify(); !errors.Is(err, models.ErrInvalidArtifact) {
			t.Errorf("%s: Verify = %v", name, err)
		}
	}
}

func TestDirectoryRoundTrip(t *testing.T) {
	dir := t.TempDir()
	a := testArtifact(t)
	if err := models.WriteDir(dir, a); err != nil {
		t.Fatal(err)
	}
	arts, err := models.ReadDir(dir)
	if err != nil || len(arts) != 1 {
		t.Fatalf("read %d (%v)", len(arts), err)
	}
	got := arts[0]
	if got.Manifest.Version != a.Manifest.Version || !slices.Equal(got.Leaves, a.Leaves) || got.Manifest.Calibration.Offsets["idle/miss/8b-h100"] != 0.2 {
		t.Fatalf("read back %+v", got.Manifest)
	}
	// A replaced model file that does not match its manifest is reported, by name.
	if err := os.WriteFile(filepath.Join(dir, "ttft-quantile.leaves"), []byte("other"), 0o644); err != nil {
		t.Fatal(err)
	}
	if arts, err := models.ReadDir(dir); !errors.Is(err, models.ErrInvalidArtifact) || len(arts) != 0 {
		t.Fatalf("mismatched file: %d artifacts, %v", len(arts), err)
	}
	// A manifest with unknown fields is refused (a newer trainer's), and so is a missing file.
	if err := os.WriteFile(filepath.Join(dir, "ttft-quantile.manifest.json"), []byte(`{"version":"x","surprise":1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := models.ReadDir(dir); !errors.Is(err, models.ErrInvalidArtifact) {
		t.Fatalf("unknown manifest field: %v", err)
	}
	if _, err := models.ReadDir(filepath.Join(dir, "none")); err == nil {
		t.Fatal("a missing directory read without error")
	}
}
