package scheduler

import (
	"context"
	"math"
	"sync"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// lowerIsBetter turns per-candidate costs in scores[i] into scores in [0,1]: the cheapest
// candidate scores 1, the dearest 0, linearly between; all equal scores 1.
func lowerIsBetter(scores []float64) {
	if len(scores) == 0 {
		return
	}
	lo, hi := scores[0], scores[0]
	for _, v := range scores[1:] {
		lo, hi = min(lo, v), max(hi, v)
	}
	for i, v := range scores {
		if hi == lo {
			scores[i] = 1
		} else {
			scores[i] = (hi - v) / (hi - lo)
		}
	}
}

// QueueScorer prefers replicas with fewer requests waiting for admission, as the replica last
// reported (vllm:num_requests_waiting), as llm-d's queue scorer does.
type QueueScorer struct{}

// Name implements Scorer.
func (QueueScorer) Name() string { return "queue" }

// Score implements Scorer.
func (QueueScorer) Score(_ context.Context, _ *Request, cands []Candidate, scores []float64) {
	for i, c := range cands {
		scores[i] = float64(c.Metrics.Waiting)
	}
	lowerIsBetter(scores)
}

// KVUsageScorer prefers replicas with free KV cache: score 1 - vllm:kv_cache_usage_perc.
type KVUsageScorer struct{}

// Name implements Scorer.
func (KVUsageScorer) Name() string { return "kv-usage" }

// Score implements Scorer.
func (KVUsageScorer) Score(_ context.Context, _ *Request, cands []Candidate, scores []float64) {
	for i, c := range cands {
		scores[i] = 1 - c.Metrics.KVUsage
	}
}

// RunningScorer prefers replicas with fewer requests in their running batch
// (vllm:num_requests_running).
type RunningScorer struct{}

// Name implements Scorer.
func (RunningScorer) Name() string { return "running-requests" }

// Score implements Scorer.
func (RunningScorer) Score(_ context.Context, _ *Request, cands []Candidate, scores []float64) {
	for i, c := range cands {
		scores[i] = float64(c.Metrics.Running)
	}
	lowerIsBetter(scores)
}

// InflightLoadScorer prefers replicas with fewer tokens of work this picker dispatched to them
// and has not seen finish (prompts plus output limits). Unlike the scraped metrics it moves at
// once, so a burst does not all land on the replica that looked idle at the last scrape.
type InflightLoadScorer struct{}

// Name implements Scorer.
func (InflightLoadScorer) Name() string { return "inflight-load" }

// Score implements Scorer.
func (InflightLoadScorer) Score(_ context.Context, _ *Request, cands []Candidate, scores []float64) {
	for i, c := range cands {
		scores[i] = float64(c.Load.Tokens)
	}
	lowerIsBetter(scores)
}

// SessionAffinityScorer sends the requests of a session (x-session-id) back to the replica
// that served its previous request, where its history is likely cached. It remembers a
// bounded number of sessions, forgetting the least recently seen first.
type SessionAffinityScorer struct {
	mu       sync.Mutex
	sessions *simplelru.LRU[string, string] // session id -> replica name
}

var (
	_ Scorer           = (*SessionAffinityScorer)(nil)
	_ DispatchObserver = (*SessionAffinityScorer)(nil)
)

// DefaultSessionCapacity is how many sessions SessionAffinityScorer remembers by default.
const DefaultSessionCapacity = 100_000

// NewSessionAffinityScorer returns a scorer remembering up to capacity sessions.
func NewSessionAffinityScorer(capacity int) *SessionAffinityScorer {
	if capacity <= 0 {
		capacity = DefaultSessionCapacity
	}
	l, _ := simplelru.NewLRU[string, string](capacity, nil) // errors only for size <= 0
	return &SessionAffinityScorer{sessions: l}
}

// Name implements Scorer.
func (*SessionAffinityScorer) Name() string { return "session-affinity" }

// Score implements Scorer: 1 for the session's previous replica, 0 for the others.
func (s *SessionAffinityScorer) Score(_ context.Context, req *Request, cands []Candidate, scores []float64) {
	if req.SessionID == "" {
		return
	}
	s.mu.Lock()
	name, ok := s.sessions.Peek(req.SessionID)
	s.mu.Unlock()
	for i, c := range cands {
		if ok && c.Replica.Name == name {
			scores[i] = 1
		}
	}
}

// Dispatched implements DispatchObserver.
func (s *SessionAffinityScorer) Dispatched(_ context.Context, req *Request, target Candidate) {
	if req.SessionID == "" {
		return
	}
	s.mu.Lock()
	s.sessions.Add(req.SessionID, target.Replica.Name)
	s.mu.Unlock()
}

// Moved implements DispatchObserver: the session follows the replica that served it.
func (s *SessionAffinityScorer) Moved(ctx context.Context, req *Request, _, to Candidate) {
	s.Dispatched(ctx, req, to)
}

// RandomPicker orders candidates uniformly at random, ignoring scores: a baseline.
type RandomPicker struct{ r lockedRand }

// NewRandomPicker returns a random picker following seed.
func NewRandomPicker(seed uint64) *RandomPicker {
	return &RandomPicker{r: newLockedRand(seed, 0x5bd1e995)}
}

// Name implements Picker.
func (*RandomPicker) Name() string { return "random" }

// Pick implements Picker.
func (p *RandomPicker) Pick(_ context.Context, _ *Request, cands []Candidate, _ []float64, n int, order []int) []int {
	start := len(order)
	order, idx := p.r.shuffledIndices(order, len(cands))
	return order[:start+min(n, len(idx))]
}

// WeightedRandomPicker draws candidates with probability proportional to their total score,
// spreading load where the max-score picker would send every tie-free request to one replica.
type WeightedRandomPicker struct{ r lockedRand }

// NewWeightedRandomPicker returns a weighted random picker following seed.
func NewWeightedRandomPicker(seed uint64) *WeightedRandomPicker {
	return &WeightedRandomPicker{r: newLockedRand(seed, 0x27d4eb2f)}
}

// Name implements Picker.
func (*WeightedRandomPicker) Name() string { return "weighted-random" }

// Pick implements Picker: draws without replacement (Efraimidis-Spirakis keys u^(1/w), best
// first). Candidates scoring 0 come last, in random order, so fallbacks still exist when only
// one replica scores.
func (p *WeightedRandomPicker) Pick(_ context.Context, _ *Request, cands []Candidate, scores []float64, n int, order []int) []int {
	start := len(order)
	for i := range cands {
		order = append(order, i)
	}
	idx := order[start:]
	keys := make([]float64, len(idx))
	p.r.mu.Lock()
	for k, i := range idx {
		u := p.r.rng.Float64()
		if w := scores[i]; w > 0 {
			keys[k] = math.Pow(u, 1/w)
		} else {
			keys[k] = -1 + u // below every positive weight's key
		}
	}
	p.r.mu.Unlock()
	m := min(n, len(idx))
	for a := range m { // partial selection: only the first m places are needed
		best := a
		for b := a + 1; b < len(idx); b++ {
			if keys[b] > keys[best] {
				best = b
			}
		}
		idx[a], idx[best] = idx[best], idx[a]
		keys[a], keys[best] = keys[best], keys[a]
	}
	return order[:start+m]
}
