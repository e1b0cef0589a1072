package sim

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Replica is one simulated replica driven by its caller in virtual time: no goroutines, no
// locks, no clock. It runs the same scheduler core and step-time model as Engine, so a
// virtual-time run and a real-time run of the same traffic differ only in how time passes.
//
// The caller alternates Step, which plans the next engine step and says how long it lasts,
// and Finish at the step's end, which reports the tokens the step produced. Submit may be
// called at any time; a request submitted during a step joins at the next one, as in vLLM.
type Replica struct {
	m       *machine
	stepped bool
	due     time.Time // when the step in progress ends, as Step said; a forecast needs it
}

// Token reports one request's progress at the end of a step.
type Token struct {
	Tag          int // as given to Submit
	Generated    int // tokens generated so far; 1 means this step produced the first
	CachedTokens int // prompt tokens found in the prefix cache at first admission
	Done         bool
}

// NewReplica returns an idle virtual-time replica.
func NewReplica(cfg Config) (*Replica, error) {
	m, err := newMachine(cfg)
	if err != nil {
		return nil, err
	}
	return &Replica{m: m}, nil
}

// Submit queues a request that arrived at now. tag names it in the Tokens reported later.
func (r *Replica) Submit(now time.Time, tag int, req Request) error {
	s, err := r.m.newSeq(req, now)
	if err != nil {
		return err
	}
	s.tag = tag
	r.m.core.waiting = append(r.m.core.waiting, s)
	return nil
}

// Step plans the engine step starting at now and returns its duration; false when the
// replica has nothing to do. Finish must be called before the next Step.
func (r *Replica) Step(now time.Time) (time.Duration, bool, error) {
	if r.stepped {
		return 0, false, errors.New("sim: Step called before the previous step finished")
	}
	plan := r.m.core.schedule(now)
	if len(plan) == 0 {
		return 0, false, nil
	}
	d := r.m.stepDuration(plan)
	r.stepped, r.due = true, now.Add(d)
	return d, true, nil
}

// Finish completes the planned step at now, normally the end Step announced (a Forecaster
// assumes so), and calls emit for every request that produced a token, in the order the
// step served them.
func (r *Replica) Finish(now time.Time, emit func(Token)) {
	if !r.stepped {
		return
	}
	r.stepped = false
	c := r.m.core
	c.complete(now)
	for _, s := range c.emitted {
		emit(Token{Tag: s.tag, Generated: s.generated, CachedTokens: s.cached, Done: s.state == stateFinished})
	}
}

// SetSlowdown multiplies the duration of every step planned from now on by f (1: as the
// profile says), as a replica that silently slows (a throttled GPU, a noisy neighbour) does;
// a step in progress keeps its duration. f must be positive.
func (r *Replica) SetSlowdown(f float64) error {
	if !(f > 0) || math.IsInf(f, 0) {
		return fmt.Errorf("sim: slowdown %v is not a positive factor", f)
	}
	r.m.slowdown = f
	return nil
}

// Snapshot returns the replica's state, as its /metrics would report it.
func (r *Replica) Snapshot() Snapshot { return r.m.snapshot() }

// Config returns the replica's configuration, with defaults filled in.
func (r *Replica) Config() Config { return r.m.cfg }
