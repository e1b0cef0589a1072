package scheduler

import (
	"cmp"
	"context"
	"math/rand/v2"
	"slices"
	"sync"
)

// LoadScorer prefers replicas with fewer requests on them. A replica's load is the larger of
// what it last reported (running + waiting) and what this picker has dispatched to it and not
// seen finish: the report covers other pickers' traffic but lags by a scrape interval, the
// in-flight count is exact but local.
type LoadScorer struct{}

// Name implements Scorer.
func (LoadScorer) Name() string { return "load" }

// Score implements Scorer: min-max normalised, the least loaded replica scores 1.
func (LoadScorer) Score(_ context.Context, _ *Request, cands []Candidate, scores []float64) {
	lo, hi := 0.0, 0.0
	for i, c := range cands {
		v := load(c)
		scores[i] = v
		if i == 0 || v < lo {
			lo = v
		}
		if i == 0 || v > hi {
			hi = v
		}
	}
	for i := range scores {
		if hi == lo {
			scores[i] = 1
		} else {
			scores[i] = 1 - (scores[i]-lo)/(hi-lo)
		}
	}
}

func load(c Candidate) float64 {
	return max(float64(c.Metrics.Running+c.Metrics.Waiting), float64(c.Load.Requests))
}

// MaxScorePicker orders candidates by total score, breaking ties at random so that equal
// replicas share traffic instead of the first one taking it all.
type MaxScorePicker struct {
	mu  sync.Mutex
	rng *rand.Rand
}

// NewMaxScorePicker returns a picker whose tie-breaks follow seed, so simulations repeat.
func NewMaxScorePicker(seed uint64) *MaxScorePicker {
	return &MaxScorePicker{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// Name implements Picker.
func (*MaxScorePicker) Name() string { return "max-score" }

// Pick implements Picker.
func (p *MaxScorePicker) Pick(_ context.Context, _ *Request, cands []Candidate, scores []float64, n int, order []int) []int {
	start := len(order)
	for i := range cands {
		order = append(order, i)
	}
	idx := order[start:]
	// Shuffle first, then a stable sort by score: ties end up in random order.
	p.mu.Lock()
	p.rng.Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
	p.mu.Unlock()
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(scores[b], scores[a]) })
	if len(idx) > n {
		order = order[:start+n]
	}
	return order
}
