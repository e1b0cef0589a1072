package virtual

import (
	"fmt"
	"slices"
	"time"
)

// Slowdown slows one replica from a virtual instant on: every step it starts At or later
// (an offset from the run's start) lasts Factor times as long as its profile says (see
// sim.Replica.SetSlowdown), as a replica that silently degrades does. A later Slowdown of the
// same replica replaces the factor (1: back to normal).
type Slowdown struct {
	Replica int // index in Config.Replicas
	At      time.Duration
	Factor  float64
}

// slowdowns checks cfg's schedule and returns it in the order it applies.
func slowdowns(cfg *Config) ([]Slowdown, error) {
	s := slices.Clone(cfg.Slowdowns)
	for _, d := range s {
		if d.Replica < 0 || d.Replica >= len(cfg.Replicas) || !(d.Factor > 0) || d.At < 0 {
			return nil, fmt.Errorf("virtual: slowdown %+v: want a replica index, a positive factor and a non-negative instant", d)
		}
	}
	slices.SortStableFunc(s, func(a, b Slowdown) int { return int(a.At - b.At) })
	return s, nil
}

// applySlowdowns applies the slowdowns due by now, before a step is planned: steps that
// start at or after a slowdown's instant are slowed, those in progress are not.
func (r *run) applySlowdowns() {
	for len(r.slow) > 0 && !r.clk.now.Before(r.epoch.Add(r.slow[0].At)) {
		d := r.slow[0]
		r.slow = r.slow[1:]
		_ = r.replicas[d.Replica].SetSlowdown(d.Factor) // checked by slowdowns
	}
}
