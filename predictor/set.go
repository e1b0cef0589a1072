package predictor

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/dmitryikh/leaves"

	"github.com/augur-llm/augur/models"
	"github.com/augur-llm/augur/models/xgbconv"
)

// maxLatencyMs bounds a sane prediction: a day.
const maxLatencyMs = 24 * 60 * 60 * 1000

// Estimate is a candidate's predicted latency for one target, in ms: the mean model's
// prediction and the upper quantile's (Upper is NaN when no quantile model serves).
type Estimate struct {
	Mean, Upper float64
}

// model is one loaded artifact.
type model struct {
	manifest models.Manifest
	layout   models.Layout
	input    int     // the position of layout among the set's (Set.layouts)
	trees    *forest // the trees, checked against leaves' reading of them at load
	// offsets and offset are a calibrated quantile's log offsets by regime (keys parsed
	// once, so that the request path looks them up without building strings).
	offsets map[models.Regime]float64
	offset  float64
	// What the request path would look up per candidate, by the candidate's class among the
	// layout's: the prior's class index, and the calibration offset by load regime and
	// prefix hit.
	priorClass []int
	cal        [][3][2]float64
}

func (m *model) calibration(r models.Regime) float64 {
	if o, ok := m.offsets[r]; ok {
		return o
	}
	return m.offset
}

// logPrior is the log of the prior's estimate for v on a replica of class, whose index among
// the layout's classes is k (-1: none of them).
func (m *model) logPrior(v *models.Vector, k int, class string) float64 {
	var pc int
	if k >= 0 {
		pc = m.priorClass[k]
	} else {
		pc = m.manifest.Prior.ClassIndex(class)
	}
	return math.Log(m.manifest.Prior.Estimate(v, pc))
}

// calibrationFor is calibration(models.RegimeOf(v, class)), class being the layout's k-th.
func (m *model) calibrationFor(v *models.Vector, k int, class string) float64 {
	if k < 0 {
		return m.calibration(models.RegimeOf(v, class))
	}
	hit := 0
	if v.PrefixHit() {
		hit = 1
	}
	return m.cal[k][v.Load()][hit]
}

// pair is a target's models.
type pair struct {
	mean, upper *model
	// shared: the quantile is the mean model's trees and prior with a calibration offset,
	// so the trees are evaluated once.
	shared bool
}

// Set is a checked set of models, ready to predict: for each target a mean model and
// optionally an upper-quantile model. It is immutable and safe for concurrent use.
type Set struct {
	version string
	pairs   [2]pair // by target: TTFT, TPOT
	// layouts are the models' distinct input rows (usually one: every model of a run is
	// trained on the same replica classes), each filled once per candidate and decision.
	layouts []models.Layout
}

func targetIndex(t models.Target) int {
	if t == models.TPOT {
		return 1
	}
	return 0
}

// Has reports whether the set has a model for target t.
func (s *Set) Has(t models.Target) bool { return s.pairs[targetIndex(t)].mean != nil }

// Version names the set: the trainer run that made its models, or the run per target when
// they differ or a target has none ("ttft=RUN;tpot=RUN").
func (s *Set) Version() string { return s.version }

// Load checks arts and builds a set from them. It refuses the whole set, with an error
// wrapping models.ErrInvalidArtifact, when any artifact is corrupt, truncated, of another
// feature schema, unreadable by leaves, or predicts a value that is not a positive, finite
// latency on the reference rows; when a target has a quantile model without its mean model,
// a slot is filled twice, or there is nothing to load. A target without models is allowed
// (Has reports it).
func Load(arts []models.Artifact) (*Set, error) {
	s := &Set{}
	for i := range arts {
		a := &arts[i]
		if err := a.Verify(); err != nil {
			return nil, err
		}
		m, err := loadModel(a)
		if err != nil {
			return nil, err
		}
		p := &s.pairs[targetIndex(a.Manifest.Target)]
		slot := &p.mean
		if a.Manifest.Kind == models.Quantile {
			slot = &p.upper
		}
		if *slot != nil {
			return nil, fmt.Errorf("%w: two %s models (%s, %s)", models.ErrInvalidArtifact, a.Manifest.Name(), (*slot).manifest.Version, a.Manifest.Version)
		}
		*slot = m
		m.input = slices.IndexFunc(s.layouts, func(l models.Layout) bool { return slices.Equal(l.Classes, m.layout.Classes) })
		if m.input < 0 {
			m.input = len(s.layouts)
			s.layouts = append(s.layouts, m.layout)
		}
	}
	var runs []string
	for i, t := range models.Targets() {
		p := &s.pairs[i]
		if p.mean == nil {
			if p.upper != nil {
				return nil, fmt.Errorf("%w: a %s quantile model without its mean model", models.ErrInvalidArtifact, t)
			}
			continue
		}
		if u := p.upper; u != nil {
			p.shared = u.manifest.Method == models.MethodCalibrated && u.manifest.LeavesSHA256 == p.mean.manifest.LeavesSHA256 &&
				slices.Equal(u.manifest.Classes, p.mean.manifest.Classes) && priorEqual(&u.manifest.Prior, &p.mean.manifest.Prior)
		}
		runs = append(runs, string(t)+"="+p.mean.manifest.Run)
	}
	switch {
	case len(runs) == 0:
		return nil, fmt.Errorf("%w: no model to load", models.ErrInvalidArtifact)
	case len(runs) == 2 && s.pairs[0].mean.manifest.Run == s.pairs[1].mean.manifest.Run:
		s.version = s.pairs[0].mean.manifest.Run
	default:
		s.version = strings.Join(runs, ";")
	}
	if err := s.sane(); err != nil {
		return nil, err
	}
	return s, nil
}

func priorEqual(a, b *models.Prior) bool {
	if a.Target != b.Target || a.Floor != b.Floor || !slices.Equal(a.Classes, b.Classes) || !slices.Equal(a.Pooled, b.Pooled) {
		return false
	}
	return slices.EqualFunc(a.Coef, b.Coef, func(x, y []float64) bool { return slices.Equal(x, y) })
}

func loadModel(a *models.Artifact) (m *model, err error) {
	man := a.Manifest
	layout := models.NewLayout(man.Classes)
	nf, _, err := xgbconv.CheckBinary(a.Leaves)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %v", models.ErrInvalidArtifact, man.Version, err)
	}
	if nf != layout.Width() {
		return nil, fmt.Errorf("%w %q: the model reads %d features, its manifest lists %d columns", models.ErrInvalidArtifact, man.Version, nf, layout.Width())
	}
	defer func() {
		// leaves trusts the bytes it reads; CheckBinary has walked them, this is the last guard.
		if r := recover(); r != nil {
			m, err = nil, fmt.Errorf("%w %q: leaves failed on the model: %v", models.ErrInvalidArtifact, man.Version, r)
		}
	}()
	ens, err := leaves.XGEnsembleFromReader(bufio.NewReader(bytes.NewReader(a.Leaves)), false)
	if err != nil {
		return nil, fmt.Errorf("%w %q: leaves cannot read it: %v", models.ErrInvalidArtifact, man.Version, err)
	}
	if ens.NFeatures() > layout.Width() || ens.NOutputGroups() != 1 {
		return nil, fmt.Errorf("%w %q: %d features, %d outputs", models.ErrInvalidArtifact, man.Version, ens.NFeatures(), ens.NOutputGroups())
	}
	bin, err := xgbconv.ReadBinary(a.Leaves)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %v", models.ErrInvalidArtifact, man.Version, err)
	}
	trees, err := newForest(bin, layout.Width())
	if err != nil {
		return nil, fmt.Errorf("%w %q: %v", models.ErrInvalidArtifact, man.Version, err)
	}
	if err := agree(ens, trees, layout); err != nil {
		return nil, fmt.Errorf("%w %q: %v", models.ErrInvalidArtifact, man.Version, err)
	}
	m = &model{manifest: man, layout: layout, trees: trees}
	if c := man.Calibration; c != nil {
		m.offsets, m.offset = make(map[models.Regime]float64, len(c.Offsets)), c.Default
		for k, o := range c.Offsets {
			r, err := models.ParseRegime(k)
			if err != nil {
				return nil, fmt.Errorf("%w %q: calibration: %v", models.ErrInvalidArtifact, man.Version, err)
			}
			m.offsets[r] = o
		}
	}
	for _, class := range layout.Classes {
		m.priorClass = append(m.priorClass, man.Prior.ClassIndex(class))
		var cal [3][2]float64
		for load := range cal {
			for hit := range cal[load] {
				cal[load][hit] = m.calibration(models.Regime{Load: models.LoadRegime(load), PrefixHit: hit == 1, Class: class})
			}
		}
		m.cal = append(m.cal, cal)
	}
	return m, nil
}

// agree checks that the forest predicts what leaves predicts from the same bytes, bit for bit,
// on the reference rows for every class of the layout and another: a guard against a reading
// of the format that differs from leaves'.
func agree(ens *leaves.Ensemble, f *forest, l models.Layout) error {
	row := make([]float64, l.Width())
	row32 := make([]float32, 2*l.Width())
	out, got := make([]float64, 1), make([]float64, 1)
	for _, v := range referenceRows() {
		for k := -1; k < len(l.Classes); k++ {
			l.Fill(row, &v, k)
			fillRow(row32, &v, l, k)
			if err := ens.Predict(row, 0, out); err != nil {
				return err
			}
			f.predict(row32, got)
			if math.Float64bits(out[0]) != math.Float64bits(got[0]) {
				return fmt.Errorf("the trees predict %v where leaves predicts %v", got[0], out[0])
			}
		}
	}
	return nil
}

// sane predicts reference rows and refuses a set that answers with anything but positive,
// finite latencies below a day: a model trained on broken labels or damaged after its
// checksum was taken.
func (s *Set) sane() error {
	b := s.NewBuffer()
	for _, v := range referenceRows() {
		for _, t := range models.Targets() {
			p := s.pairs[targetIndex(t)]
			if p.mean == nil {
				continue
			}
			classes := p.mean.manifest.Classes
			if len(classes) == 0 {
				classes = []string{""}
			}
			for _, class := range classes {
				e := s.Predict(t, &v, class, b)
				bad := !(e.Mean > 0 && e.Mean < maxLatencyMs)
				if p.upper != nil {
					bad = bad || !(e.Upper > 0 && e.Upper < maxLatencyMs)
				}
				if bad {
					return fmt.Errorf("%w: %s models predict %v ms (upper %v) for a reference request on %q",
						models.ErrInvalidArtifact, t, e.Mean, e.Upper, class)
				}
			}
		}
	}
	return nil
}

// referenceRows are requests a serving model must answer sensibly: to an idle replica, and
// to a busy one.
func referenceRows() []models.Vector {
	set := func(v *models.Vector, name string, x float64) { v.Set(models.Index(name), x) }
	var idle, busy models.Vector
	for _, v := range []*models.Vector{&idle, &busy} {
		set(v, "input_tokens", 1000)
		set(v, "uncached_input_tokens", 1000)
		set(v, "max_tokens", 200)
		set(v, "num_gpu_blocks", 20000)
		set(v, "block_size", 16)
		set(v, "prefix_match", 0)
	}
	for _, name := range []string{"kv_cache_usage", "num_requests_waiting", "num_requests_running", "inflight_requests",
		"prefill_tokens_in_flight", "decode_requests_in_flight", "inflight_tokens", "metrics_age_ms", "prefill_uncached_tokens_in_flight",
		"decode_tokens_left", "request_rate", "uncached_token_rate", "dispatched_since_scrape", "first_tokens_since_scrape", "finished_since_scrape"} {
		set(&idle, name, 0)
	}
	for name, x := range map[string]float64{"kv_cache_usage": 0.5, "num_requests_waiting": 2, "num_requests_running": 30, "inflight_requests": 32,
		"prefill_tokens_in_flight": 4000, "decode_requests_in_flight": 30, "inflight_tokens": 60000, "metrics_age_ms": 25,
		"prefill_uncached_tokens_in_flight": 3000, "decode_tokens_left": 5000, "last_token_age_ms": 10, "request_rate": 4,
		"uncached_token_rate": 4000, "dispatched_since_scrape": 1, "first_tokens_since_scrape": 1, "finished_since_scrape": 1} {
		set(&busy, name, x)
	}
	return []models.Vector{idle, busy}
}

// Buffer is scratch space for Predict: one per goroutine, reused across calls.
type Buffer struct {
	vectors []models.Vector
	classes []string
	est     []Estimate
	sums    []float64
	drifts  []*replicaDrift // each candidate's correction (nil: none), looked up once per call
	// By the set's layouts: the rows of the vectors (see fillRow), each vector's class
	// among the layout's, and whether the rows hold this call's vectors.
	rows   [][]float32
	cls    [][]int
	filled []bool
}

// NewBuffer returns a buffer for s's models.
func (s *Set) NewBuffer() *Buffer {
	b := &Buffer{}
	b.start(s, 1)
	return b
}

// start readies b for n vectors predicted by s (nil: the cold start only).
func (b *Buffer) start(s *Set, n int) {
	if cap(b.vectors) < n {
		b.vectors, b.classes = make([]models.Vector, n), make([]string, n)
		b.est, b.sums, b.drifts = make([]Estimate, n), make([]float64, n), make([]*replicaDrift, n)
	}
	b.vectors, b.classes, b.est, b.sums, b.drifts = b.vectors[:n], b.classes[:n], b.est[:n], b.sums[:n], b.drifts[:n]
	if s == nil {
		return
	}
	for len(b.rows) < len(s.layouts) {
		b.rows, b.cls, b.filled = append(b.rows, nil), append(b.cls, nil), append(b.filled, false)
	}
	for li, l := range s.layouts {
		if w := n * 2 * l.Width(); cap(b.rows[li]) < w {
			b.rows[li] = make([]float32, w)
		}
		if cap(b.cls[li]) < n {
			b.cls[li] = make([]int, n)
		}
		b.rows[li], b.cls[li] = b.rows[li][:n*2*l.Width()], b.cls[li][:n]
		b.filled[li] = false
	}
}

// done drops what b holds of the caller's.
func (b *Buffer) done() { clear(b.classes); clear(b.drifts) }

// fillRow writes the forest's row (see forest) for v on a replica of the layout's class
// (-1: none) into dst, 2*l.Width() values: the values Layout.Fill writes, rounded to float32,
// once with NaN as -Inf and once as +Inf.
func fillRow(dst []float32, v *models.Vector, l models.Layout, class int) {
	w := l.Width()
	lo, hi := dst[:w], dst[w:2*w]
	l.Fill32(lo, v, class)
	copy(hi, lo)
	for i := range models.NumFeatures {
		if f := lo[i]; f != f {
			lo[i], hi[i] = float32(math.Inf(-1)), float32(math.Inf(1))
		}
	}
}

// input returns the rows of layout li for b's vectors, filling them on first use.
func (s *Set) input(li int, b *Buffer) ([]float32, []int) {
	rows, cls := b.rows[li], b.cls[li]
	if b.filled[li] {
		return rows, cls
	}
	l := s.layouts[li]
	w := 2 * l.Width()
	for i := range b.vectors {
		cls[i] = l.ClassIndex(b.classes[i])
		fillRow(rows[i*w:(i+1)*w], &b.vectors[i], l, cls[i])
	}
	b.filled[li] = true
	return rows, cls
}

// Predict is target t's estimate for features v on a replica of class (NaN when the set
// has no model for t). With a buffer from NewBuffer it allocates nothing.
func (s *Set) Predict(t models.Target, v *models.Vector, class string, b *Buffer) Estimate {
	b.start(s, 1)
	b.vectors[0], b.classes[0] = *v, class
	s.estimates(targetIndex(t), b)
	b.done()
	return b.est[0]
}

// estimates sets b.est[i] to target ti's estimate for b.vectors[i] on a replica of class
// b.classes[i]: the trees of every vector at once, then per vector
// exp(trees + ln prior + calibration), and the same for the quantile model.
func (s *Set) estimates(ti int, b *Buffer) {
	p := &s.pairs[ti]
	mean, u := p.mean, p.upper
	if mean == nil {
		for i := range b.est {
			b.est[i] = Estimate{Mean: math.NaN(), Upper: math.NaN()}
		}
		return
	}
	rows, cls := s.input(mean.input, b)
	mean.trees.predict(rows, b.sums)
	for i := range b.vectors {
		v, k, class := &b.vectors[i], cls[i], b.classes[i]
		sum, logPrior := b.sums[i], mean.logPrior(v, k, class)
		e := Estimate{Mean: math.Exp(sum + logPrior + mean.calibrationFor(v, k, class)), Upper: math.NaN()}
		if u != nil && p.shared {
			// The quantile is the mean model's trees and prior with its own calibration.
			e.Upper = math.Exp(sum + logPrior + u.calibrationFor(v, k, class))
		}
		b.est[i] = e
	}
	if u == nil || p.shared {
		return
	}
	rows, cls = s.input(u.input, b)
	u.trees.predict(rows, b.sums)
	for i := range b.vectors {
		v, k, class := &b.vectors[i], cls[i], b.classes[i]
		b.est[i].Upper = math.Exp(b.sums[i] + u.logPrior(v, k, class) + u.calibrationFor(v, k, class))
	}
}

// joinVersions names artifacts for logs.
func joinVersions(arts []models.Artifact) string {
	var v []string
	for _, a := range arts {
		v = append(v, a.Manifest.Name()+"="+a.Manifest.Version)
	}
	slices.Sort(v)
	return strings.Join(v, ", ")
}
