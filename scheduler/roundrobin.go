package scheduler

import (
	"context"
	"sync/atomic"
)

// RoundRobinPicker ignores scores and takes the candidates in turn: the baseline of a plain
// Kubernetes Service, for comparisons.
type RoundRobinPicker struct{ next atomic.Uint64 }

// Name implements Picker.
func (*RoundRobinPicker) Name() string { return "round-robin" }

// Pick implements Picker.
func (p *RoundRobinPicker) Pick(_ context.Context, _ *Request, cands []Candidate, _ []float64, n int, order []int) []int {
	start := int((p.next.Add(1) - 1) % uint64(len(cands)))
	for i := range min(n, len(cands)) {
		order = append(order, (start+i)%len(cands))
	}
	return order
}
