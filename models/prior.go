package models

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"gonum.org/v1/gonum/mat"
)

// Target is what a model predicts.
type Target string

// Targets.
const (
	TTFT Target = "ttft" // time to first token, ms
	TPOT Target = "tpot" // time per output token, ms
)

// Targets lists the targets in order.
func Targets() []Target { return []Target{TTFT, TPOT} }

// Valid reports whether t is a known target.
func (t Target) Valid() bool { return t == TTFT || t == TPOT }

// PriorTerms is the number of terms of a prior's basis.
const PriorTerms = 10

// legacyPriorTerms is how many terms priors had before the KV-overflow and queued-prefill
// terms: such a prior is the same estimate with those coefficients zero.
const legacyPriorTerms = 9

// Prior is an analytic latency model: for each replica class, a linear combination of a few
// terms that follow from how a vLLM step is timed (PriorBasis). It is the cold-start estimate
// before any tree model exists (fitted online from the first samples), and the starting
// point of every tree model: trees are boosted from its logarithm (XGBoost's base margin),
// so they learn only what it misses and fall back to it where the data are thin.
type Prior struct {
	Target Target `json:"target"`
	// Classes and Coef: Coef[i] are the coefficients for replica class Classes[i]; Pooled,
	// fitted on every class at once, serves the others.
	Classes []string    `json:"classes"`
	Coef    [][]float64 `json:"coef"`
	Pooled  []float64   `json:"pooled"`
	// Floor is the least estimate returned, ms: a linear fit can dip below zero far from its
	// data.
	Floor float64 `json:"floor_ms"`
	// Samples is how many samples the fit used (0: the default prior).
	Samples int `json:"samples"`
}

var (
	idxUncached      = Index("uncached_input_tokens")
	idxQueued        = Index("prefill_uncached_tokens_in_flight")
	idxDecoding      = Index("decode_requests_in_flight")
	idxLeft          = Index("decode_tokens_left")
	idxTokenRate     = Index("uncached_token_rate")
	idxInput         = Index("input_tokens")
	idxStep          = Index("step_ms")
	idxStepSlow      = Index("step_slow_ms")
	idxStepWait      = Index("step_wait_ms")
	idxTokenRateFast = Index("uncached_token_rate_fast")
	idxCurStep       = Index("current_step_uncached_tokens")
	idxNextStep      = Index("next_step_uncached_tokens")
	idxDecodeCtx     = Index("decode_context_tokens")
	idxKVUsage       = Index("kv_cache_usage")
	idxGPUBlocks     = Index("num_gpu_blocks")
	idxBlockSize     = Index("block_size")
)

// PriorBasis writes the terms of target t for features v into b and returns it:
//
//	TTFT: 1, uncached prompt tokens u, u^2/1e4 (attention), uncached prompt tokens in the step
//	      in progress, uncached prompt tokens that will share the next step, decode context
//	      tokens/1000 (the KV every step reads), requests waiting, time left of the step in
//	      progress, all uncached prompt tokens queued ahead, and those of them (with the
//	      prompt) that do not fit in the KV cache left free at the last scrape
//	TPOT: 1, decoding requests + 1, decode context tokens/1000, uncached prompt tokens
//	      arriving per second/100, decode tokens left/100, prompt tokens/100, the replica's
//	      step time (slow and fast averages), uncached prompt tokens arriving per second over
//	      the last seconds/100, uncached prompt tokens queued ahead/1000
//
// A TTFT is the rest of the step in progress plus the step (or steps) that prefill the
// prompt, whose length grows with the tokens scheduled in it and the context decoded; a TPOT
// is the step time while the request decodes: the step time now, made longer by prefills
// that arrive meanwhile, among them the prompts already queued. A prompt that finds the KV
// cache full waits for running requests to finish, which is far slower than prefilling: the
// overflow term lets a linear fit have a second, steeper slope there, where trees, which do
// not extrapolate, would keep the last slope they saw. NULL features count as 0 (and a
// replica that reports no KV size has no overflow). The scales keep the fit well conditioned.
func PriorBasis(t Target, v *Vector, b *[PriorTerms]float64) {
	x := &v.values // a NULL feature's value is 0 (see Vector); read directly, on the request path
	get := func(i int) float64 { return x[i] }
	switch t {
	case TTFT:
		u := get(idxUncached)
		*b = [PriorTerms]float64{1, u, u * u / 1e4, get(idxCurStep), get(idxNextStep), get(idxDecodeCtx) / 1000, get(idxWaiting),
			get(idxStepWait), get(idxQueued), kvOverflow(get(idxQueued)+u, x)}
	default:
		*b = [PriorTerms]float64{1, get(idxDecoding) + 1, get(idxDecodeCtx) / 1000, get(idxTokenRate) / 100, get(idxLeft) / 100,
			get(idxInput) / 100, get(idxStepSlow), get(idxStep), get(idxTokenRateFast) / 100, get(idxQueued) / 1000}
	}
}

// kvOverflow is how many of the tokens do not fit in the KV cache the replica had free at its
// last scrape (0 when it reports no KV size).
func kvOverflow(tokens float64, x *[NumFeatures]float64) float64 {
	capacity := x[idxGPUBlocks] * x[idxBlockSize]
	if capacity <= 0 {
		return 0
	}
	return max(0, tokens-capacity*(1-x[idxKVUsage]))
}

// DefaultPrior is the estimate before any sample was seen: a generic 8B-class replica on one
// H100 (TTFT 15 ms + 0.05 ms per uncached prompt token, its own or queued ahead, + 0.5 ms per
// 1000 tokens of decode context; TPOT 8 ms + 0.05 ms per request decoding, this one
// included). It only has to order replicas sensibly until the online fit takes over.
func DefaultPrior(t Target) Prior {
	p := Prior{Target: t, Floor: 1}
	if t == TTFT {
		p.Pooled = []float64{15, 0.05, 0, 0, 0, 0.5, 0, 0, 0.05, 0}
	} else {
		p.Pooled = []float64{8, 0.05, 0, 0, 0, 0, 0, 0, 0, 0}
	}
	return p
}

// ClassIndex is the position of class in p.Classes, or -1.
func (p *Prior) ClassIndex(class string) int { return slices.Index(p.Classes, class) }

// Estimate is the prior's latency in ms for features v on a replica whose class is
// p.Classes[class] (-1: another class). It does not allocate.
func (p *Prior) Estimate(v *Vector, class int) float64 {
	var b [PriorTerms]float64
	PriorBasis(p.Target, v, &b)
	coef := p.Pooled
	if class >= 0 && class < len(p.Coef) {
		coef = p.Coef[class]
	}
	e := 0.0
	for i, c := range coef {
		e += c * b[i]
	}
	if !(e >= p.Floor) { // also NaN
		return p.Floor
	}
	return e
}

// Check reports a prior that cannot be evaluated.
func (p *Prior) Check() error {
	if !p.Target.Valid() {
		return fmt.Errorf("prior: unknown target %q", p.Target)
	}
	if len(p.Classes) != len(p.Coef) {
		return fmt.Errorf("prior: %d classes, %d coefficient sets", len(p.Classes), len(p.Coef))
	}
	for _, c := range append([][]float64{p.Pooled}, p.Coef...) {
		if len(c) != PriorTerms && len(c) != legacyPriorTerms {
			return fmt.Errorf("prior: %d coefficients, want %d (or %d, from before the KV-overflow terms)", len(c), PriorTerms, legacyPriorTerms)
		}
		for _, x := range c {
			if math.IsNaN(x) || math.IsInf(x, 0) {
				return errors.New("prior: coefficient not finite")
			}
		}
	}
	if !(p.Floor > 0) || math.IsInf(p.Floor, 0) {
		return fmt.Errorf("prior: floor %v must be positive", p.Floor)
	}
	return nil
}

// Observation is one sample a prior is fitted to.
type Observation struct {
	Features Vector
	Class    string
	Ms       float64 // the observed latency, > 0
}

// MinPriorSamples is the fewest samples a class needs for a fit of its own.
const MinPriorSamples = 50

// FitPrior fits target t's prior to obs by least squares on the relative error (each
// residual divided by its label), so that short and long requests count alike, with a slight
// ridge so that a term the data never vary (no queue ever) does not break the fit. Classes
// with fewer than MinPriorSamples samples use the pooled fit.
func FitPrior(t Target, obs []Observation) (Prior, error) {
	var ok []int
	for i, o := range obs {
		if o.Ms > 0 && !math.IsInf(o.Ms, 0) {
			ok = append(ok, i)
		}
	}
	if len(ok) < MinPriorSamples {
		return Prior{}, fmt.Errorf("prior: %d usable samples, need %d", len(ok), MinPriorSamples)
	}
	p := Prior{Target: t, Samples: len(ok)}
	minMs := math.Inf(1)
	byClass := map[string][]int{}
	for _, i := range ok {
		byClass[obs[i].Class] = append(byClass[obs[i].Class], i)
		minMs = min(minMs, obs[i].Ms)
	}
	p.Floor = max(minMs/2, 0.01)
	var err error
	if p.Pooled, err = fitTerms(t, obs, ok); err != nil {
		return Prior{}, err
	}
	for class, idx := range byClass {
		if len(idx) < MinPriorSamples {
			continue
		}
		c, err := fitTerms(t, obs, idx)
		if err != nil {
			continue // the pooled fit serves it
		}
		p.Classes = append(p.Classes, class)
		p.Coef = append(p.Coef, c)
	}
	// Deterministic order, whatever the map's.
	order := make([]int, len(p.Classes))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		if p.Classes[a] < p.Classes[b] {
			return -1
		}
		return 1
	})
	classes, coef := make([]string, len(order)), make([][]float64, len(order))
	for k, i := range order {
		classes[k], coef[k] = p.Classes[i], p.Coef[i]
	}
	p.Classes, p.Coef = classes, coef
	return p, p.Check()
}

// fitTerms solves (A'A + ridge) x = A'1 where row r of A is basis(r)/y(r). Terms that are
// zero throughout get a zero coefficient; the ridge, relative to each term's own scale (they
// differ by orders of magnitude), keeps collinear terms from blowing up; a rising term
// (risingTerms) is never negative.
func fitTerms(t Target, obs []Observation, idx []int) ([]float64, error) {
	var full [PriorTerms][PriorTerms]float64
	var rhs [PriorTerms]float64
	var b [PriorTerms]float64
	for _, i := range idx {
		PriorBasis(t, &obs[i].Features, &b)
		w := 1 / obs[i].Ms
		for j := range b {
			b[j] *= w
		}
		for j := range b {
			rhs[j] += b[j]
			for k := range b {
				full[j][k] += b[j] * b[k]
			}
		}
	}
	var used []int
	for j := range PriorTerms {
		if full[j][j] > 0 {
			used = append(used, j)
		}
	}
	for {
		if len(used) == 0 {
			return nil, errors.New("prior: every term is zero")
		}
		x, err := solveTerms(&full, &rhs, used)
		if err != nil {
			return nil, err
		}
		// A term latency cannot fall with that came out negative (collinear with others,
		// or absent from the data) is dropped and the rest refitted: far from the data a
		// negative slope would predict a deeper queue as faster.
		drop, worst := -1, 0.0
		for a, j := range used {
			if x[a] < worst && slices.Contains(risingTerms(t), j) {
				drop, worst = j, x[a]
			}
		}
		if drop < 0 {
			out := make([]float64, PriorTerms)
			for a, j := range used {
				out[j] = x[a]
			}
			return out, nil
		}
		used = slices.DeleteFunc(used, func(j int) bool { return j == drop })
	}
}

// risingTerms are, per target, the positions in PriorBasis of the terms latency cannot fall
// with: the prompt queued ahead and its overflow of the KV cache for TTFT; the batch and
// the prompt queued ahead for TPOT.
func risingTerms(t Target) []int {
	if t == TTFT {
		return []int{8, 9}
	}
	return []int{1, 9}
}

// solveTerms solves the normal equations restricted to the terms used.
func solveTerms(full *[PriorTerms][PriorTerms]float64, rhs *[PriorTerms]float64, used []int) ([]float64, error) {
	ata := mat.NewSymDense(len(used), nil)
	atb := mat.NewVecDense(len(used), nil)
	for a, j := range used {
		atb.SetVec(a, rhs[j])
		for c, k := range used {
			v := full[j][k]
			if a == c {
				v *= 1 + 1e-6
			}
			ata.SetSym(a, c, v)
		}
	}
	var chol mat.Cholesky
	if !chol.Factorize(ata) {
		return nil, errors.New("prior: normal equations not positive definite")
	}
	var x mat.VecDense
	if err := chol.SolveVecTo(&x, atb); err != nil {
		var cond mat.Condition
		if !errors.As(err, &cond) {
			return nil, fmt.Errorf("prior: %w", err)
		}
		// Ill-conditioned but solved: the ridge bounds the coefficients.
	}
	out := make([]float64, len(used))
	for a := range used {
		out[a] = x.AtVec(a)
	}
	return out, nil
}
