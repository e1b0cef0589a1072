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
	for i, c := range cands {
		scores[i] = load(c)
	}
	lowerIsBetter(scores)
}

func load(c Candidate) float64 {
	return max(float64(c.Metrics.Running+c.Metrics.Waiting), float64(c.Load.Requests))
}

// lockedRand is a seeded random source shared by a picker's concurrent decisions.
type lockedRand struct {
	mu  sync.Mutex
	rng *rand.Rand
}

func newLockedRand(seed, stream uint64) lockedRand {
	return lockedRand{rng: rand.New(rand.NewPCG(seed, seed^stream))}
}

// shuffledIndices appends the indices 0..n-1 to order in random order and returns order and
// the appended part.
func (r *lockedRand) shuffledIndices(order []int, n int) ([]int, []int) {
	start := len(order)
	for i := range n {
		order = append(order, i)
	}
	idx := order[start:]
	r.mu.Lock()
	r.rng.Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
	r.mu.Unlock()
	return order, idx
}

// MaxScorePicker orders candidates by total score, breaking ties at random so that equal
// replicas share traffic instead of the first one taking it all.
type MaxScorePicker struct{ r lockedRand }

// NewMaxScorePicker returns a picker whose tie-breaks follow seed, so simulations repeat.
func NewMaxScorePicker(seed uint64) *MaxScorePicker {
	return &MaxScorePicker{r: newLockedRand(seed, 0x9e3779b97f4a7c15)}
}

// Name implements Picker.
func (*MaxScorePicker) Name() string { return "max-score" }

// Pick implements Picker.
func (p *MaxScorePicker) Pick(_ context.Context, _ *Request, cands []Candidate, scores []float64, n int, order []int) []int {
	start := len(order)
	// Shuffle first, then a stable sort by score: ties end up in random order.
	order, idx := p.r.shuffledIndices(order, len(cands))
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(scores[b], scores[a]) })
	return order[:start+min(n, len(idx))]
}
