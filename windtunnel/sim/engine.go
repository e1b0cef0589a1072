package sim

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/utils/clock"
)

// ErrStopped is reported for requests that the engine dropped because Run ended, and by
// Submit once it has.
var ErrStopped = errors.New("sim: engine stopped")

// ErrTooLong is returned by Submit when prompt plus max tokens exceed the model length.
var ErrTooLong = errors.New("sim: request exceeds the maximum model length")

// Config configures one replica's engine.
type Config struct {
	Model   string  // served model name, also the model_name metric label
	Profile Profile // see LookupProfile
	Seed    uint64  // seeds the step-time jitter
	// DisablePrefixCaching turns the prefix cache off (it is on by default, as in vLLM V1).
	DisablePrefixCaching bool
	// TimeScale multiplies every step time; 0 means 1. Below 1 it runs a replica faster than
	// the hardware it models, for demos and end-to-end tests.
	TimeScale float64
}

// Request is one generation request.
type Request struct {
	Prompt    Prompt
	MaxTokens int // exactly this many tokens are generated (the simulator never stops early)
}

// Progress is a request's state as last published by the engine. Times are on the engine's
// clock.
type Progress struct {
	PromptTokens int
	CachedTokens int // prompt tokens served from the prefix cache at first admission
	Generated    int
	Arrived      time.Time
	Scheduled    time.Time // first admitted into the running batch; zero while waiting
	FirstToken   time.Time
	LastToken    time.Time
	Done         bool  // all tokens generated, or dropped (then Err is set)
	Err          error // why the engine dropped the request
}

// Handle follows one submitted request. Its methods are safe for concurrent use.
type Handle struct {
	changed chan struct{}
	mu      sync.Mutex
	p       Progress
	stop    func() bool // deregisters the cancellation hook
}

// Changed is signalled, coalesced, whenever Progress changes. A consumer that drains it and
// then reads Progress never misses the final state.
func (h *Handle) Changed() <-chan struct{} { return h.changed }

// Progress returns the latest published state.
func (h *Handle) Progress() Progress {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.p
}

// Wait blocks until the request is done or ctx ends.
func (h *Handle) Wait(ctx context.Context) (Progress, error) {
	for {
		p := h.Progress()
		if p.Done {
			return p, p.Err
		}
		select {
		case <-h.changed:
		case <-ctx.Done():
			return h.Progress(), fmt.Errorf("waiting for request: %w", ctx.Err())
		}
	}
}

func (h *Handle) publish(update func(*Progress)) {
	h.mu.Lock()
	update(&h.p)
	done := h.p.Done
	h.mu.Unlock()
	if done && h.stop != nil {
		h.stop()
	}
	select {
	case h.changed <- struct{}{}:
	default:
	}
}

// Snapshot is the engine state that /metrics reports. Counters are cumulative.
type Snapshot struct {
	Running            int
	Waiting            int
	KVCacheUsage       float64 // 0..1, as vLLM's kv_cache_usage_perc
	NumGPUBlocks       int
	FreeBlocks         int // including cached blocks that no request references
	PrefixCacheQueries int64
	PrefixCacheHits    int64
	Preemptions        int64
	PromptTokens       int64
	GenerationTokens   int64
	Steps              int64
	// FirstTokens counts the requests that produced a first token and TTFTSum adds up their
	// times from arrival at the engine to that token: the engine's own share of the TTFT, in
	// the latency model's time, without network or client.
	FirstTokens int64
	TTFTSum     time.Duration
}

// Engine simulates one vLLM replica's engine core. Submit and Snapshot may be called from
// any goroutine; Run drives the step loop and must be called exactly once.
type Engine struct {
	clk     clock.Clock
	metrics *metrics
	wake    chan struct{}
	started atomic.Bool

	mu       sync.Mutex // guards everything below, including the machine's state
	*machine            // configuration, scheduler core, jitter
	aborts   []*seq
	nextID   uint64
	stopped  bool
}

// New builds an engine on clk (clock.RealClock{} in production). It does not start it.
func New(cfg Config, clk clock.Clock) (*Engine, error) {
	m, err := newMachine(cfg)
	if err != nil {
		return nil, err
	}
	e := &Engine{clk: clk, wake: make(chan struct{}, 1), machine: m}
	e.metrics = newMetrics(e)
	return e, nil
}

// Config returns the engine's configuration, with defaults filled in.
func (e *Engine) Config() Config { return e.cfg }

// Clock returns the engine's clock, so that servers stamp responses on the same time line.
func (e *Engine) Clock() clock.Clock { return e.clk }

func (e *Engine) signal() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Submit queues a request. The engine drops it, freeing its blocks, once ctx is done; ctx is
// normally the HTTP request's context, so a vanished client costs nothing further.
func (e *Engine) Submit(ctx context.Context, req Request) (*Handle, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("sim: submit: %w", err)
	}
	now := e.clk.Now()
	s, err := e.newSeq(req, now) // outside the lock: it hashes the whole prompt
	if err != nil {
		return nil, err
	}
	h := &Handle{changed: make(chan struct{}, 1)}
	h.p = Progress{PromptTokens: s.prompt, Arrived: now}
	s.handle = h

	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped {
		return nil, ErrStopped
	}
	e.nextID++
	s.id = e.nextID
	e.core.waiting = append(e.core.waiting, s)
	// Registered under e.mu, which the engine holds whenever it publishes, so the engine
	// always sees stop set. The hook itself runs on its own goroutine and takes e.mu then.
	h.stop = context.AfterFunc(ctx, func() {
		e.mu.Lock()
		e.aborts = append(e.aborts, s)
		e.mu.Unlock()
		e.signal()
	})
	e.signal()
	return h, nil
}

// Snapshot returns the current engine state.
func (e *Engine) Snapshot() Snapshot {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.snapshot()
}

// maxCatchUp bounds how far behind the latency model a real-time engine may fall and still
// make the time up (see Run). Beyond it the engine gives the time up: after the process was
// stopped, say, it does not replay seconds of steps at once.
const maxCatchUp = time.Second

// Run executes steps until ctx ends, then drops every pending request with ErrStopped. Each
// step is planned, its duration is slept on the engine's clock, and its tokens are published
// at the step's end. With nothing to do it blocks until a request arrives.
//
// Steps follow the latency model's time line rather than the wake-ups of the clock: a step
// starts when the previous one ends in the model (or, on an idle engine, when its first
// request arrived) and is waited for until its modelled end. A timer that fires late, or a
// goroutine scheduled late on a busy machine, therefore delays the tokens of one step but not
// the steps after it: the next step is shorter by the lateness, so a real-time replica decodes
// at the modelled speed, as a virtual-time one does. Requests that arrived after a step's
// modelled start wait for the next step, as they would have.
func (e *Engine) Run(ctx context.Context) error {
	if !e.started.CompareAndSwap(false, true) {
		return errors.New("sim: Run called twice")
	}
	var timer clock.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
		e.shutdown()
	}()
	var due time.Time // the modelled end of the last step; zero before the first
	for ctx.Err() == nil {
		e.mu.Lock()
		now := e.clk.Now()
		e.applyAborts()
		start := e.stepStart(now, due)
		plan := e.core.schedule(start)
		if len(plan) > 0 {
			due = start.Add(e.stepDuration(plan))
			e.observeAdmitted(start)
		}
		e.mu.Unlock()

		if len(plan) == 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-e.wake:
			}
			continue
		}

		if d := due.Sub(e.clk.Now()); d > 0 {
			// The timer is reused across steps: one allocation per engine instead of per step.
			if timer == nil {
				timer = e.clk.NewTimer(d)
			} else {
				timer.Reset(d)
			}
			select {
			case <-ctx.Done():
				return nil
			case <-timer.C():
			}
		} else if ctx.Err() != nil {
			return nil
		}

		e.mu.Lock()
		e.core.complete(due)
		e.publishEmitted(due)
		e.mu.Unlock()
	}
	return nil
}

// stepStart is when, on the latency model's time line, the step planned at now starts: at
// now if the engine is on time; at the previous step's modelled end if it is behind (its
// timer fired late), or at the arrival of the first waiting request if the engine was idle
// since then (its wake-up was late); never more than maxCatchUp before now.
func (e *Engine) stepStart(now, due time.Time) time.Time {
	if due.IsZero() || !due.Before(now) {
		return now
	}
	start := due
	c := e.core
	if len(c.running) == 0 && len(c.waiting) > 0 && c.waiting[0].arrived.After(start) {
		start = c.waiting[0].arrived
	}
	if floor := now.Add(-maxCatchUp); start.Before(floor) {
		start = floor
	}
	if start.After(now) {
		start = now
	}
	return start
}

func (e *Engine) applyAborts() {
	for _, s := range e.aborts {
		if e.core.abort(s) {
			s.handle.publish(func(p *Progress) {
				p.Done = true
				p.Err = fmt.Errorf("request %d cancelled: %w", s.id, context.Canceled)
			})
		}
	}
	clear(e.aborts)
	e.aborts = e.aborts[:0]
}

func (e *Engine) observeAdmitted(now time.Time) {
	for _, s := range e.core.admitted {
		e.metrics.queueTime.Observe(now.Sub(s.arrived).Seconds())
		at := s.scheduledAt
		s.handle.publish(func(p *Progress) { p.Scheduled = at })
	}
}

func (e *Engine) publishEmitted(now time.Time) {
	m := e.metrics
	for _, s := range e.core.emitted {
		if s.generated == 1 {
			m.ttft.Observe(now.Sub(s.arrived).Seconds())
		} else {
			m.itl.Observe(s.lastTokenAt.Sub(s.prevTokenAt).Seconds())
		}
		done := s.state == stateFinished
		if done {
			m.e2e.Observe(now.Sub(s.arrived).Seconds())
		}
		gen, cached, first := s.generated, s.cached, s.firstTokenAt
		s.handle.publish(func(p *Progress) {
			p.Generated = gen
			p.CachedTokens = cached
			p.FirstToken = first
			p.LastToken = now
			p.Done = done
		})
	}
}

func (e *Engine) shutdown() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.stopped = true
	c := e.core
	pending := append(append([]*seq(nil), c.running...), c.waiting...)
	for _, s := range pending {
		c.abort(s)
		s.handle.publish(func(p *Progress) {
			p.Done = true
			p.Err = ErrStopped
		})
	}
}
