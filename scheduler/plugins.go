package scheduler

import (
	"cmp"
	"context"
	"fmt"
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

// float64 draws a uniform number in [0,1).
func (r *lockedRand) float64() float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rng.Float64()
}

// intN draws a uniform number in [0,n).
func (r *lockedRand) intN(n int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rng.IntN(n)
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
// replicas share traffic instead of the first one taking it all. With an exploration rate it
// orders a share of decisions at random instead, so that what is learnt from where requests
// went covers replicas the scores would not have chosen.
type MaxScorePicker struct {
	r       lockedRand
	explore float64
}

// MaxScoreArgs are the max-score picker's arguments.
type MaxScoreArgs struct {
	// Explore is the share of decisions, 0..1, whose order is drawn uniformly at random.
	Explore float64 `json:"explore"`
}

// NewMaxScorePicker returns a picker whose tie-breaks follow seed, so simulations repeat.
func NewMaxScorePicker(seed uint64) *MaxScorePicker {
	return &MaxScorePicker{r: newLockedRand(seed, 0x9e3779b97f4a7c15)}
}

// NewExploringMaxScorePicker returns a max-score picker that orders a share explore of its
// decisions at random.
func NewExploringMaxScorePicker(seed uint64, explore float64) (*MaxScorePicker, error) {
	if !(explore >= 0 && explore <= 1) {
		return nil, fmt.Errorf("explore %v must be between 0 and 1", explore)
	}
	p := NewMaxScorePicker(seed)
	p.explore = explore
	return p, nil
}

// Name implements Picker.
func (*MaxScorePicker) Name() string { return "max-score" }

// Pick implements Picker.
func (p *MaxScorePicker) Pick(_ context.Context, _ *Request, cands []Candidate, scores []float64, n int, order []int) []int {
	start := len(order)
	explore := p.explore > 0 && p.r.float64() < p.explore
	// Shuffle first, then a stable sort by score: ties end up in random order.
	order, idx := p.r.shuffledIndices(order, len(cands))
	if !explore {
		byScore := func(a, b int) int { return cmp.Compare(scores[b], scores[a]) }
		if n < len(idx) && n <= maxSelect {
			selectStable(idx, n, byScore)
		} else {
			slices.SortStableFunc(idx, byScore)
		}
	}
	return order[:start+min(n, len(idx))]
}

// maxSelect is the most leading elements selectStable is asked for: it compares each
// element once per element it selects, a sort about log2(n) times.
const maxSelect = 8

// selectStable moves to idx[:n] the n elements slices.SortStableFunc(idx, cmp) would put
// there, in the same order; the rest keep their relative order.
func selectStable(idx []int, n int, cmp func(a, b int) int) {
	for k := range n {
		best := k
		for j := k + 1; j < len(idx); j++ {
			if cmp(idx[j], idx[best]) < 0 {
				best = j
			}
		}
		v := idx[best]
		copy(idx[k+1:best+1], idx[k:best])
		idx[k] = v
	}
}
