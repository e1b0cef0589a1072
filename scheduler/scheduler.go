package scheduler

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/augur-llm/augur/pool"
)

// Result is a decision: Targets[0] is the primary, the rest are fallbacks in order. Each
// target carries the replica's state and the per-candidate values as the decision saw them.
type Result struct {
	Targets []Candidate
	// Profile is the profile that decided; its observers are told where the request went.
	Profile *Profile
}

// Scheduler runs the active profile over a pool's replicas.
type Scheduler struct {
	pool      *pool.Pool
	fallbacks atomic.Int64
	profile   atomic.Pointer[Profile]
	predictor Predictor // nil: no predictions
	scratch   sync.Pool
}

type scratch struct {
	cands  []Candidate
	scores []float64
	tmp    []float64
	order  []int
}

// New returns a scheduler over p using prof, choosing up to fallbacks extra replicas.
func New(p *pool.Pool, prof *Profile, fallbacks int) (*Scheduler, error) {
	return NewWithPredictor(p, prof, fallbacks, nil)
}

// NewWithPredictor is New with a latency predictor that every decision consults (nil: none).
func NewWithPredictor(p *pool.Pool, prof *Profile, fallbacks int, pred Predictor) (*Scheduler, error) {
	if err := prof.validate(); err != nil {
		return nil, err
	}
	s := &Scheduler{pool: p, predictor: pred}
	s.SetFallbacks(fallbacks)
	s.profile.Store(prof)
	s.scratch.New = func() any { return new(scratch) }
	return s, nil
}

// SetProfile swaps the profile used for new decisions; decisions in progress finish with the
// profile they started with.
func (s *Scheduler) SetProfile(prof *Profile) error {
	if err := prof.validate(); err != nil {
		return err
	}
	s.profile.Store(prof)
	return nil
}

// SetFallbacks sets how many replicas follow the primary in new decisions.
func (s *Scheduler) SetFallbacks(n int) { s.fallbacks.Store(int64(max(n, 0))) }

// Profile returns the active profile.
func (s *Scheduler) Profile() *Profile { return s.profile.Load() }

func (p *Profile) validate() error {
	if p == nil {
		return fmt.Errorf("profile is nil")
	}
	if p.Picker == nil {
		return fmt.Errorf("profile %q has no picker", p.Name)
	}
	plugins := make([]any, 0, len(p.Filters)+len(p.Scorers)+1)
	for _, f := range p.Filters {
		plugins = append(plugins, f)
	}
	for _, ws := range p.Scorers {
		if !(ws.Weight >= 0) {
			return fmt.Errorf("profile %q: scorer %q has weight %v, want >= 0", p.Name, ws.Name(), ws.Weight)
		}
		plugins = append(plugins, ws.Scorer)
	}
	plugins = append(plugins, p.Picker)
	p.valuesAt = len(p.Filters)
	for i, f := range p.Filters {
		if vr, ok := f.(ValueReader); ok && vr.ReadsValues() {
			p.valuesAt = i
			break
		}
	}
	p.preScorers, p.observers = p.preScorers[:0], p.observers[:0]
	for _, pl := range plugins {
		if ps, ok := pl.(PreScorer); ok && !slices.Contains(p.preScorers, ps) {
			p.preScorers = append(p.preScorers, ps)
		}
		if ob, ok := pl.(DispatchObserver); ok && !slices.Contains(p.observers, ob) {
			p.observers = append(p.observers, ob)
		}
	}
	return nil
}

// Schedule picks replicas for req. When subset is non-nil only replicas whose address is in
// it are eligible (the gateway's subset hint); an empty non-nil subset matches nothing.
// Scheduling records nothing: the request lifecycle tells res.Profile where the request went.
// A refusal is a *Rejection (ErrNoEndpoints, or a plugin's).
func (s *Scheduler) Schedule(ctx context.Context, req *Request, subset []string) (Result, error) {
	prof := s.profile.Load()
	sc := s.scratch.Get().(*scratch)
	defer func() {
		clear(sc.cands) // drop replica pointers so pooled scratch does not pin removed replicas
		s.scratch.Put(sc)
	}()

	cands := sc.cands[:0]
	// A replica that lists its models and not this one would answer 404; one whose models are
	// not known yet may serve it. The model exists when some replica, ready or not, serves it
	// or might.
	modelExists := req.Model == ""
	now := s.pool.Clock().Now() // one instant for every replica's freshness
	for _, r := range s.pool.Replicas() {
		if req.Model != "" {
			if serves, known := r.Serves(req.Model); known && !serves {
				continue
			}
			modelExists = true
		}
		if !s.pool.FreshAt(r, now) {
			continue
		}
		cands = append(cands, Candidate{})
		c := &cands[len(cands)-1]
		c.of(r) // in place: a candidate is large
		if subset != nil && !slices.Contains(subset, c.Endpoint.Address) {
			*c = Candidate{}
			cands = cands[:len(cands)-1]
		}
	}
	sc.cands = cands
	if len(cands) == 0 {
		if !modelExists && len(s.pool.Replicas()) > 0 {
			return Result{}, s.modelNotFound(req.Model)
		}
		if subset != nil {
			return Result{}, fmt.Errorf("%w: subset hint %v matched no ready endpoint", ErrNoEndpoints, subset)
		}
		return Result{}, ErrNoEndpoints
	}
	for i, f := range prof.Filters {
		if i == prof.valuesAt {
			s.computeValues(ctx, prof, req, cands)
		}
		cands = f.Filter(ctx, req, cands)
		if len(cands) == 0 {
			return Result{}, fmt.Errorf("%w: filter %q removed every endpoint", ErrNoEndpoints, f.Name())
		}
	}
	if prof.valuesAt >= len(prof.Filters) {
		s.computeValues(ctx, prof, req, cands)
	}

	scores := grow(sc.scores, len(cands))
	tmp := grow(sc.tmp, len(cands))
	sc.scores, sc.tmp = scores, tmp
	clear(scores)
	for _, ws := range prof.Scorers {
		if ws.Weight == 0 {
			continue
		}
		clear(tmp)
		ws.Score(ctx, req, cands, tmp)
		for i, v := range tmp {
			scores[i] += ws.Weight * clamp01(v)
		}
	}
	order := prof.Picker.Pick(ctx, req, cands, scores, 1+int(s.fallbacks.Load()), sc.order[:0])
	sc.order = order
	if len(order) == 0 {
		return Result{}, fmt.Errorf("%w: picker %q chose nothing", ErrNoEndpoints, prof.Picker.Name())
	}
	res := Result{Targets: make([]Candidate, len(order)), Profile: prof}
	for i, idx := range order {
		res.Targets[i] = cands[idx]
	}
	return res, nil
}

// computeValues runs the profile's pre-scorers, then the predictor, over cands: once per
// decision, before the first filter that reads values or after the last filter (see
// ValueReader).
func (s *Scheduler) computeValues(ctx context.Context, prof *Profile, req *Request, cands []Candidate) {
	for _, ps := range prof.preScorers {
		ps.PreScore(ctx, req, cands)
	}
	if s.predictor != nil {
		s.predictor.Predict(ctx, req, cands)
	}
}

// modelNotFound is the refusal of a request for a model no replica serves; it names the
// models that are served so that a client sees its typo. It runs only on that refusal, so
// its allocations do not weigh on requests that are served.
func (s *Scheduler) modelNotFound(model string) error {
	var served []string
	for _, r := range s.pool.Replicas() {
		ms, _ := r.Models()
		for _, m := range ms {
			if !slices.Contains(served, m) {
				served = append(served, m)
			}
		}
	}
	slices.Sort(served)
	return fmt.Errorf("%w: model %q is not served here (served: %s)", ErrModelNotFound, model, strings.Join(served, ", "))
}

func grow(b []float64, n int) []float64 {
	if cap(b) < n {
		return make([]float64, n)
	}
	return b[:n]
}

func clamp01(v float64) float64 {
	switch {
	case v > 1:
		return 1
	case v >= 0:
		return v
	default:
		return 0 // also NaN: a broken scorer must not win a replica its votes
	}
}
