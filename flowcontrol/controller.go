package flowcontrol

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/augur-llm/augur/pool"
	"github.com/augur-llm/augur/requestcontrol"
	"github.com/augur-llm/augur/scheduler"
)

// Clock is the time flow control runs on: real time in the picker, the wind tunnel's virtual
// time in simulation. AfterFunc runs f once d has passed, on a goroutine or event of its own
// (never inside AfterFunc); stop cancels it and reports whether it had not run.
type Clock interface {
	Now() time.Time
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

// RealClock is the wall clock.
type RealClock struct{}

// Now returns the current time.
func (RealClock) Now() time.Time { return time.Now() }

// AfterFunc runs f on its own goroutine after d.
func (RealClock) AfterFunc(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }

// Reasons of the refusals, as the x-llm-d-request-dropped-reason header carries them.
const (
	ReasonSaturated  = "rejected-saturated"
	ReasonTTLExpired = "rejected-ttl-expired"
	// ReasonLate: the request's TTFT objective passed while it waited (Config.RefuseLate).
	ReasonLate = "rejected-deadline-passed"
)

// Outcome is how a request left flow control, as counted in metrics.
type Outcome string

// Outcomes.
const (
	OutcomeDispatched Outcome = "dispatched"
	OutcomeShed       Outcome = "shed"        // sheddable while saturated
	OutcomeFull       Outcome = "band_full"   // its band was at capacity
	OutcomeExpired    Outcome = "ttl_expired" // waited past the TTL
	OutcomeLate       Outcome = "late"        // its TTFT objective passed while it waited
	OutcomeCancelled  Outcome = "cancelled"   // the client left while it waited
)

// Options are a controller's collaborators.
type Options struct {
	// Pool is where saturation is read: the replicas' metrics and the picker's own counts.
	Pool *pool.Pool
	// Clock defaults to RealClock.
	Clock Clock
	// Metrics, when set, records every outcome, wait and the queues (NewMetrics).
	Metrics *Metrics
	// Observe, when set, is told of every request leaving flow control, with how long it
	// waited. It runs on the request path: it must not block.
	Observe func(req *scheduler.Request, o Outcome, waited time.Duration)
	Log     *slog.Logger
}

// Controller is flow control: a requestcontrol.Admitter, woken by the lifecycle
// (requestcontrol.Waker) when a request streams its first token or ends, and by the scraper
// when metrics arrive. It is safe for concurrent use.
type Controller struct {
	cfg  resolved
	opts Options
	clk  Clock
	log  *slog.Logger

	mu      sync.Mutex
	det     detector
	bands   []*band // by priority, highest first
	byPrio  map[int]*band
	seq     uint64
	pumping bool // a goroutine is dispatching; others leave the work to it
	again   bool // something changed while it was
	// ticking says a ModeTicker tick is armed.
	ticking bool
	// halted says the last check found no replica to count (every one stale or failing).
	halted bool
	// current is the request being dispatched by the goroutine pumping, which the
	// lifecycle may hand back (Defer); held is the one that was, while dispatch waits for
	// the next event that can make room.
	current *item
	held    *item
	// wakes counts Wake calls; currentWakes is its value when current was taken, so a
	// Defer knows whether room may have been made while the request was being scheduled.
	wakes        uint64
	currentWakes uint64
	unknowns     map[string]bool // objective names not configured, logged once each
}

// New returns a controller.
func New(cfg Config, opts Options) (*Controller, error) {
	r, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	if opts.Pool == nil {
		return nil, fmt.Errorf("flowcontrol: a pool is required")
	}
	if opts.Clock == nil {
		opts.Clock = RealClock{}
	}
	c := &Controller{cfg: r, opts: opts, clk: opts.Clock, log: opts.Log, byPrio: map[int]*band{}, unknowns: map[string]bool{}}
	if c.log == nil {
		c.log = slog.Default()
	}
	c.det = detector{pool: opts.Pool, cfg: &c.cfg, running: map[*pool.Replica]int{}}
	return c, nil
}

// Objective returns the objective a request naming name is under: the configured one, else
// the default.
func (c *Controller) Objective(name string) Objective {
	o, _ := c.cfg.objective(name)
	return o
}

// Admit implements requestcontrol.Admitter. The request's objective (else the default)
// gives its band and, when it states none, its SLOs. A sheddable request is refused at once
// while the pool is saturated or higher bands wait; any other waits in its band until it can
// be dispatched, its TTL passes or ctx ends.
func (c *Controller) Admit(ctx context.Context, req *scheduler.Request, resume func(error)) {
	now := c.clk.Now()
	o, known := c.cfg.objective(req.Objective)
	if req.SLO.TTFT == 0 && o.TTFTMs > 0 {
		req.SLO.TTFT = time.Duration(o.TTFTMs * float64(time.Millisecond))
	}
	if req.SLO.TPOT == 0 && o.TPOTMs > 0 {
		req.SLO.TPOT = time.Duration(o.TPOTMs * float64(time.Millisecond))
	}
	it := &item{ctx: ctx, req: req, resume: resume, arrived: now, bytes: int64(len(req.Prompt)) + 512, index: -1}
	if req.SLO.TTFT > 0 {
		it.deadline = now.Add(req.SLO.TTFT)
	}

	c.mu.Lock()
	if !known && req.Objective != "" && !c.unknowns[req.Objective] && len(c.unknowns) < 100 {
		c.unknowns[req.Objective] = true
		c.log.Warn("flow control: objective not configured; the default applies", "objective", req.Objective, "default", c.cfg.DefaultObjective)
	}
	b := c.band(o.Priority)
	it.band = b
	// In ModeTicker every request waits for a tick, so a queue above is no sign of
	// saturation there: llm-d sheds on its detector alone.
	if o.Priority < 0 && ((c.cfg.Mode == ModeEvents && c.queuedAbove(o.Priority)) || c.det.check(now).Saturated) {
		c.mu.Unlock()
		c.finish(it, OutcomeShed, scheduler.Reject(429, ReasonSaturated, "the pool is saturated and the request is sheddable"))
		return
	}
	if b.n+1 > c.cfg.MaxRequestsPerBand || b.bytes+it.bytes > c.cfg.MaxBytesPerBand {
		c.mu.Unlock()
		c.finish(it, OutcomeFull, scheduler.Reject(429, ReasonSaturated, "the queue of priority %d is full (%d requests, %d bytes)", o.Priority, b.n, b.bytes))
		return
	}
	c.seq++
	it.seq = c.seq
	it.key = int64(it.seq)
	if c.cfg.Ordering == OrderDeadline {
		it.key = math.MaxInt64
		if !it.deadline.IsZero() {
			it.key = it.deadline.UnixNano()
		}
	}
	f := b.flows[req.FairnessID]
	if f == nil {
		f = &flow{id: req.FairnessID, weight: c.cfg.weight(req.FairnessID, o)}
		b.flows[req.FairnessID] = f
	}
	it.flow = f
	b.push(it)
	c.opts.Metrics.queuedDelta(b, 1, it.bytes)
	c.mu.Unlock()

	c.pump()

	// Still waiting: only now does it need its timer and the watch on its client, so a
	// request dispatched at once costs neither.
	c.mu.Lock()
	c.watch(it)
	c.mu.Unlock()
}

// watch arms a queued item's TTL and the watch on its client (under c.mu).
func (c *Controller) watch(it *item) {
	if it.index < 0 || it.stopTTL != nil {
		return
	}
	ttl := c.cfg.ttl - c.clk.Now().Sub(it.arrived)
	it.stopTTL = c.clk.AfterFunc(max(ttl, 0), func() {
		c.drop(it, OutcomeExpired, scheduler.Reject(429, ReasonTTLExpired, "waited %v in the queue, past the TTL", c.cfg.ttl))
	})
	ctx := it.ctx
	it.stopCtx = context.AfterFunc(ctx, func() { c.drop(it, OutcomeCancelled, ctx.Err()) })
}

// Defer implements requestcontrol.Deferrer: the request being dispatched was predicted to
// miss its objectives on every replica, so the pool is saturated for it (prediction
// saturation). It goes back to the head of its flow and dispatch waits for the next event
// that can make room; a sheddable request is refused instead. A request is not taken back
// while a replica is idle (nothing would serve it sooner) or once its TTFT objective has
// passed (waiting cannot help it). With RefuseLate, a request whose TTFT objective passed,
// or that the decision predicted (mean models, on its best target) to reach its first token
// after the objective even now, at the head of the queue, is refused: waiting would not
// make it sooner, as a replica's queue drains no faster than its deadline nears.
func (c *Controller) Defer(ctx context.Context, req *scheduler.Request, res scheduler.Result, resume func(error)) bool {
	c.mu.Lock()
	it := c.current
	now := c.clk.Now()
	if it == nil || it.req != req || c.cfg.Mode == ModeTicker {
		c.mu.Unlock()
		return false
	}
	if c.cfg.RefuseLate && !it.deadline.IsZero() {
		best, predicted := lowestTTFT(res)
		if passed := !now.Before(it.deadline); passed || (predicted && now.Add(best).After(it.deadline)) {
			c.current = nil
			it.defers++ // reported here, not by the dispatch that called
			c.mu.Unlock()
			c.report(it, OutcomeLate, now)
			if passed {
				resume(scheduler.Reject(429, ReasonLate, "waited %v in the queue, past its TTFT objective of %v", now.Sub(it.arrived), req.SLO.TTFT))
			} else {
				resume(scheduler.Reject(429, ReasonLate, "predicted to miss its TTFT objective of %v: %v at best, %v after waiting %v",
					req.SLO.TTFT, best.Round(time.Millisecond), it.deadline.Sub(now).Round(time.Millisecond), now.Sub(it.arrived)))
			}
			return true
		}
	}
	if c.idleReplica() || (!it.deadline.IsZero() && !now.Before(it.deadline)) {
		c.mu.Unlock()
		return false
	}
	c.current = nil
	it.defers++
	it.resume = resume
	if it.band.priority < 0 {
		c.mu.Unlock()
		c.report(it, OutcomeShed, now)
		resume(scheduler.Reject(429, ReasonSaturated, "no replica is predicted to meet the objectives and the request is sheddable"))
		return true
	}
	f := it.flow
	if cur := it.band.flows[f.id]; cur != nil && cur != f {
		f, it.flow = cur, cur // the flow emptied and came back while this was out
	} else {
		it.band.flows[f.id] = f
		f.vt -= 1 / f.weight // no service was had
	}
	it.stopTTL, it.stopCtx = nil, nil
	it.band.push(it)
	c.opts.Metrics.queuedDelta(it.band, 1, it.bytes)
	// A wake while it was being scheduled may have made room the decision did not see: it
	// is tried again at once rather than waiting for the next event.
	if c.wakes == c.currentWakes {
		c.held = it
	}
	c.watch(it)
	c.mu.Unlock()
	return true
}

// lowestTTFT is the lowest mean TTFT the decision predicted among its targets, if any.
func lowestTTFT(res scheduler.Result) (time.Duration, bool) {
	best, ok := math.Inf(1), false
	for i := range res.Targets {
		if v, has := res.Targets[i].Value(scheduler.ValuePredictedTTFT); has && v < best {
			best, ok = v, true
		}
	}
	if !ok {
		return 0, false
	}
	// A day bounds any prediction worth a duration (an infinite one does not convert).
	return time.Duration(min(best, 24*60*60*1000) * float64(time.Millisecond)), true
}

// idleReplica reports whether a replica with fresh metrics serves nothing (under c.mu).
func (c *Controller) idleReplica() bool {
	now := c.clk.Now()
	for _, r := range c.opts.Pool.Replicas() {
		m, ok := r.Metrics()
		if ok && c.det.fresh(r, m, now) && m.Running == 0 && m.Waiting == 0 && r.Load().Requests == 0 {
			return true
		}
	}
	return false
}

// Wake tells flow control that something changed (a completion, a first token, new
// metrics): it dispatches what the pool now has room for. It returns once it did, or at
// once when another goroutine is dispatching (which then does it).
func (c *Controller) Wake() {
	c.mu.Lock()
	c.held = nil
	c.wakes++
	c.mu.Unlock()
	c.pump()
}

// pump dispatches while there is room.
func (c *Controller) pump() {
	if c.cfg.Mode == ModeTicker {
		c.mu.Lock()
		c.armTick()
		c.mu.Unlock()
		return
	}
	c.mu.Lock()
	if c.pumping {
		c.again = true
		c.mu.Unlock()
		return
	}
	c.pumping = true
	for {
		c.again = false
		it, o, err := c.next(c.clk.Now())
		if it == nil && !c.again {
			break
		}
		if it == nil {
			continue
		}
		if o == OutcomeDispatched {
			c.current, c.currentWakes = it, c.wakes
		}
		c.mu.Unlock()
		// Dispatched one at a time, each scheduled (and counted on its replica) before the
		// next check: the detector sees every dispatch, so there is no overshoot.
		c.finish(it, o, err)
		c.mu.Lock()
		c.current = nil
	}
	c.pumping = false
	c.mu.Unlock()
}

// next takes the item to dispatch or refuse now, if any, and removes it from its queue.
func (c *Controller) next(now time.Time) (*item, Outcome, error) {
	var head *item
	for _, b := range c.bands {
		if head = b.head(); head != nil {
			break
		}
	}
	if head == nil || c.held != nil {
		return nil, "", nil
	}
	if c.cfg.RefuseLate && !head.deadline.IsZero() && !now.Before(head.deadline) {
		c.take(head, false)
		return head, OutcomeLate, scheduler.Reject(429, ReasonLate, "waited %v in the queue, past its TTFT objective of %v", now.Sub(head.arrived), head.req.SLO.TTFT)
	}
	s := c.det.check(now)
	c.noteHalt(s)
	c.opts.Metrics.saturation(s)
	if s.Saturated {
		if head.band.priority < 0 {
			// Sheddable requests do not wait for room (one can be queued when the pool
			// saturated between its arrival and its turn).
			c.take(head, false)
			return head, OutcomeShed, scheduler.Reject(429, ReasonSaturated, "the pool is saturated and the request is sheddable")
		}
		return nil, "", nil
	}
	c.take(head, true)
	return head, OutcomeDispatched, nil
}

// noteHalt logs when dispatch stops or resumes for want of fresh metrics: a halt is never
// silent.
func (c *Controller) noteHalt(s SaturationState) {
	halted := s.Fresh == 0 && s.Limit == 0
	if halted != c.halted {
		c.halted = halted
		if halted {
			c.log.Warn("flow control: no replica has fresh metrics or a known capacity; requests wait", "stale", s.Stale, "policy", c.cfg.Saturation.Stale)
		} else {
			c.log.Info("flow control: replicas with capacity again; dispatching")
		}
	}
}

// take removes it from its queue (under c.mu) and stops its timers.
func (c *Controller) take(it *item, dispatched bool) {
	it.band.remove(it, dispatched)
	c.opts.Metrics.queuedDelta(it.band, -1, -it.bytes)
	if it.stopTTL != nil {
		it.stopTTL()
	}
	if it.stopCtx != nil {
		it.stopCtx()
	}
}

// drop refuses it if it is still queued.
func (c *Controller) drop(it *item, o Outcome, err error) {
	c.mu.Lock()
	if it.index < 0 {
		c.mu.Unlock()
		return
	}
	c.take(it, false)
	// The request holding dispatch left: the next may fit where it did not.
	released := c.held == it
	if released {
		c.held = nil
	}
	c.mu.Unlock()
	c.finish(it, o, err)
	if released {
		c.pump()
	}
}

// finish resumes the request outside the lock and reports the outcome; a request taken
// back during its dispatch (Defer) is reported when it finally leaves.
func (c *Controller) finish(it *item, o Outcome, err error) {
	now := c.clk.Now()
	c.mu.Lock()
	defers := it.defers
	c.mu.Unlock()
	it.resume(err)
	c.mu.Lock()
	deferred := it.defers != defers
	c.mu.Unlock()
	if !deferred {
		c.report(it, o, now)
	}
}

func (c *Controller) report(it *item, o Outcome, now time.Time) {
	waited := now.Sub(it.arrived)
	c.opts.Metrics.outcome(it.req, o, waited, it.band)
	if c.opts.Observe != nil {
		c.opts.Observe(it.req, o, waited)
	}
}

// armTick arms ModeTicker's next tick while anything waits (under c.mu). llm-d's loop ticks
// whether or not anything waits; arming it only then changes nothing it dispatches and
// keeps virtual runs short.
func (c *Controller) armTick() {
	if c.ticking || c.queued() == 0 {
		return
	}
	c.ticking = true
	c.clk.AfterFunc(c.cfg.tick, c.tick)
}

// tick is one turn of llm-d's dispatch loop: at most one request, when the utilization
// detector sees room.
func (c *Controller) tick() {
	c.mu.Lock()
	c.ticking = false
	it, o, err := c.next(c.clk.Now())
	c.armTick()
	c.mu.Unlock()
	if it != nil {
		c.finish(it, o, err)
	}
}

func (c *Controller) queued() int {
	n := 0
	for _, b := range c.bands {
		n += b.n
	}
	return n
}

// queuedAbove reports whether a band above priority p holds requests.
func (c *Controller) queuedAbove(p int) bool {
	for _, b := range c.bands {
		if b.priority <= p {
			return false
		}
		if b.n > 0 {
			return true
		}
	}
	return false
}

// band returns priority p's band, creating it (under c.mu).
func (c *Controller) band(p int) *band {
	if b := c.byPrio[p]; b != nil {
		return b
	}
	b := &band{priority: p, label: strconv.Itoa(p), flows: map[string]*flow{}}
	c.byPrio[p] = b
	i, _ := slices.BinarySearchFunc(c.bands, p, func(x *band, p int) int { return p - x.priority })
	c.bands = slices.Insert(c.bands, i, b)
	return b
}

// BandStats is one band's queue.
type BandStats struct {
	Priority int
	Requests int
	Bytes    int64
	Flows    int // flows with requests waiting (idle flows are not kept)
}

// Stats is what flow control holds now.
type Stats struct {
	Bands      []BandStats // highest priority first
	Saturation SaturationState
	Replicas   []ReplicaQueue
}

// ReplicaQueue is one replica's own queue as flow control sees it.
type ReplicaQueue struct {
	Name string
	// Scraped is the waiting requests its last scrape showed; Waiting adds the picker's
	// dispatches since and subtracts the first tokens since. The picker dispatches to a
	// replica only while Waiting is under the limit, so Waiting never exceeds the larger of
	// the limit and Scraped.
	Scraped, Waiting int64
}

// Queued is the requests waiting in every band.
func (s Stats) Queued() int {
	n := 0
	for _, b := range s.Bands {
		n += b.Requests
	}
	return n
}

// Stats returns what flow control holds now and the pool's saturation as it sees it.
func (c *Controller) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := Stats{Saturation: c.det.check(c.clk.Now())}
	for _, r := range c.opts.Pool.Replicas() {
		cand := scheduler.CandidateOf(r)
		s.Replicas = append(s.Replicas, ReplicaQueue{Name: r.Name, Scraped: int64(cand.Metrics.Waiting), Waiting: scheduler.Waiting(&cand)})
	}
	for _, b := range c.bands {
		s.Bands = append(s.Bands, BandStats{Priority: b.priority, Requests: b.n, Bytes: b.bytes, Flows: len(b.flows)})
	}
	return s
}

var (
	_ requestcontrol.Admitter = (*Controller)(nil)
	_ requestcontrol.Waker    = (*Controller)(nil)
	_ requestcontrol.Deferrer = (*Controller)(nil)
)
