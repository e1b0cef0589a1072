package scheduler

import "context"

// HotspotGuard keeps affinity from piling work onto one warm replica: it removes candidates
// whose load (requests, as the load scorer counts them) exceeds Factor times the least loaded
// candidate's plus Slack. Prefix or session affinity then chooses among the rest, so a hot
// prefix spills to other replicas instead of queueing behind itself.
type HotspotGuard struct {
	Factor float64 `json:"factor"`
	Slack  float64 `json:"slack"`
}

// Defaults of HotspotGuard: a replica may carry twice the least loaded one's requests plus
// sixteen before it is passed over.
const (
	DefaultHotspotFactor = 2
	DefaultHotspotSlack  = 16
)

// Name implements Filter.
func (HotspotGuard) Name() string { return "hotspot-guard" }

// Filter implements Filter. The least loaded candidate always survives.
func (g HotspotGuard) Filter(_ context.Context, _ *Request, cands []Candidate) []Candidate {
	if len(cands) < 2 {
		return cands
	}
	least := load(cands[0])
	for _, c := range cands[1:] {
		least = min(least, load(c))
	}
	limit := g.Factor*least + g.Slack
	out := cands[:0]
	for _, c := range cands {
		if load(c) <= limit {
			out = append(out, c)
		}
	}
	return out
}
