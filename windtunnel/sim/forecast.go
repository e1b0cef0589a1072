package sim

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// This file is the clairvoyant's instrument: what a request would experience on a virtual
// replica, found by running a copy of the replica forward with the request added.

// DefaultForecastTokens is how many tokens after the first a Forecaster follows unless told
// otherwise. The first inter-token gaps are those of the batch the request joins, which the
// forecast knows; following the request to its end costs steps in proportion to its length
// and assumes the batch only drains, which it does not while requests keep arriving. Against
// what happened in a virtual run (mixed-slo, 60 req/s, 8 replicas) the TPOT forecast is off
// by 17.1% following 1 token, 17.3% following 4, 17.8% following 16 and 27.8% following all,
// while the run's forecasts cost 0.7 s of CPU following 1, 0.85 s following 4, 1.2 s
// following 16 and 4.2 s following all: 4 gives the first gaps' average for little more than
// the copy and the first token (see the package documentation, Cost).
const DefaultForecastTokens = 4

// ForecastAll, as a Forecaster's token bound, follows the request until it finishes.
const ForecastAll = -1

// maxForecastSteps bounds a forecast's loop. The engine always makes progress without new
// arrivals, so reaching it means a bug, reported rather than hung on.
const maxForecastSteps = 1 << 22

// Forecast is what one request would experience on a replica if nothing else arrived.
type Forecast struct {
	// TTFT is from submission to the first token, queueing included.
	TTFT time.Duration
	// TPOT is requestcontrol.TPOT's (last-first)/(n-1) over the Tokens followed; 0 when
	// fewer than two.
	TPOT time.Duration
	// Tokens is how many tokens the forecast followed: MaxTokens, or 1 plus the
	// Forecaster's bound when that is smaller.
	Tokens int
	// CachedTokens is the prompt's prefix-cache hit at admission.
	CachedTokens int
	// Steps counts the engine steps simulated, the one in progress included.
	Steps int
}

// Forecaster forecasts requests on virtual replicas: it copies a replica's complete engine
// state (sequences, KV blocks and prefix cache, the step in progress and when it ends,
// counters, the jitter generator), submits the request to the copy and runs the copy's steps
// until the request has its first token and then finishes or has followed the bound.
//
// The copy continues the replica's jitter sequence, so when nothing else arrives before the
// request ends the forecast is exactly what happens (TestForecastIsExact). Without that it
// would be right on average and off by the jitter (±5%) step by step, and two forecasts of
// the same state could not be compared exactly.
//
// The copy lives in the Forecaster's memory, reused from call to call: a forecast allocates
// only when a replica is bigger than any before it. The KV-block table, the bulk of the state
// (half a megabyte on 8b-h100), is kept per replica and brought up to date by the blocks that
// changed since the last forecast on it; for that the replica notes which blocks it writes,
// once it has been forecast on. Otherwise the forecast never writes the replica. It reads the
// replica's prefix-cache index in place rather than copying tens of thousands of entries, so
// the copy is only valid during the call, while the replica stands still. A Forecaster keeps
// the replicas it has forecast on reachable, and is not safe for concurrent use.
type Forecaster struct {
	bound int // tokens after the first to follow; negative: all

	m   machine
	c   core
	pcg rand.PCG
	// pools are the copies of the replicas' KV-block tables, by the replica's table; each
	// is brought up to date by the blocks that changed since its last forecast.
	pools   map[*blockPool]*blockPool
	seqs    []seq    // the copied sequences, then the forecast request
	slab    []int32  // the copies' block lists and prefix-hit buffers
	hash    []uint64 // the forecast request's block hashes
	waiting []*seq   // the copy's queue's memory: admission slices c.waiting from the front
}

// NewForecaster returns a forecaster that follows each request for its first token and then
// at most tokens more (0: DefaultForecastTokens; ForecastAll or any negative: to the end).
func NewForecaster(tokens int) *Forecaster {
	if tokens == 0 {
		tokens = DefaultForecastTokens
	}
	f := &Forecaster{bound: tokens, pools: map[*blockPool]*blockPool{}}
	f.m.core = &f.c
	f.m.pcg = &f.pcg
	f.m.rng = rand.New(&f.pcg)
	return f
}

// ErrForecastFailed is a forecast that could not finish: a bug in the forecaster or the
// engine, never a property of the request (a request the replica would refuse fails as
// Submit does, with ErrTooLong or a validation error).
var ErrForecastFailed = errors.New("sim: forecast failed")

// Forecast returns what req, submitted to r at now, would experience if no other request
// arrived. now must not be earlier than the last Step's start nor, when a step is in
// progress, later than its end: the forecast finishes that step when Step said it would.
func (f *Forecaster) Forecast(r *Replica, now time.Time, req Request) (Forecast, error) {
	s, err := f.fork(r, now, req)
	if err != nil {
		return Forecast{}, err
	}
	want := req.MaxTokens
	if f.bound >= 0 {
		want = min(want, 1+f.bound)
	}
	c := &f.c
	t := now
	steps := 0
	if r.stepped {
		t = r.due
		c.complete(t)
		steps++
	}
	for s.generated < want {
		if len(c.schedule(t)) == 0 {
			return Forecast{}, fmt.Errorf("%w: the engine stalled with the request unfinished", ErrForecastFailed)
		}
		t = t.Add(f.m.stepDuration(c.plan))
		c.complete(t)
		if steps++; steps > maxForecastSteps {
			return Forecast{}, fmt.Errorf("%w: no result after %d steps", ErrForecastFailed, steps)
		}
	}
	fc := Forecast{TTFT: s.firstTokenAt.Sub(now), Tokens: s.generated, CachedTokens: s.cached, Steps: steps}
	if s.generated > 1 {
		fc.TPOT = s.lastTokenAt.Sub(s.firstTokenAt) / time.Duration(s.generated-1)
	}
	return fc, nil
}

// fork makes the forecaster's machine a copy of r's and queues req there as arrived at now;
// it returns the request's sequence in the copy.
func (f *Forecaster) fork(r *Replica, now time.Time, req Request) (*seq, error) {
	src := r.m
	f.m.cfg, f.m.seed, f.m.slowdown = src.cfg, src.seed, src.slowdown
	f.pcg = *src.pcg

	sc := src.core
	nr, nw := len(sc.running), len(sc.waiting)
	f.seqs = growTo(f.seqs, nr+nw+1) // every element is overwritten below
	s := &f.seqs[nr+nw]
	if err := f.m.initSeq(s, req, now, f.hash); err != nil {
		return nil, fmt.Errorf("forecast: %w", err)
	}
	f.hash = s.hashes

	// Each copy gets room in the slab for the most blocks it can ever hold and for a prefix
	// lookup's result, so that neither appends into a neighbour nor allocates.
	need := 0
	for _, q := range sc.running {
		need += slabRoom(q)
	}
	for _, q := range sc.waiting {
		need += slabRoom(q)
	}
	need += slabRoom(s)
	f.slab = growTo(f.slab, need)
	off := 0
	place := func(dst, q *seq) {
		*dst = *q
		nb := blocksFor(q.prompt + q.maxTokens)
		dst.blocks = append(f.slab[off:off:off+nb], q.blocks...)
		off += nb
		dst.hit = f.slab[off : off : off+len(q.hashes)]
		off += len(q.hashes)
	}
	c := &f.c
	c.prof, c.prefixCaching, c.counters = sc.prof, sc.prefixCaching, sc.counters
	pool := f.pools[sc.pool]
	if pool == nil {
		pool = &blockPool{}
		f.pools[sc.pool] = pool
	}
	pool.syncFrom(sc.pool)
	c.pool = pool
	c.running = c.running[:0]
	for i, q := range sc.running {
		place(&f.seqs[i], q)
		c.running = append(c.running, &f.seqs[i])
	}
	c.waiting = f.waiting[:0]
	for i, q := range sc.waiting {
		place(&f.seqs[nr+i], q)
		c.waiting = append(c.waiting, &f.seqs[nr+i])
	}
	fresh := *s
	place(s, &fresh)
	c.waiting = append(c.waiting, s)
	f.waiting = c.waiting

	// The step in progress served a subsequence of the running list in its order (the
	// running requests it kept, then those it admitted, all appended to running), so its
	// chunks map to the copies by one walk.
	c.plan, c.admitted, c.emitted = c.plan[:0], c.admitted[:0], c.emitted[:0]
	if r.stepped {
		j := 0
		for _, ch := range sc.plan {
			for j < nr && sc.running[j] != ch.s {
				j++
			}
			if j == nr {
				return nil, errors.New("sim: forecast: the step in progress serves a request that is not running")
			}
			ch.s = &f.seqs[j]
			c.plan = append(c.plan, ch)
		}
	}
	return s, nil
}

// slabRoom is the slab space a sequence's copy needs: its largest block list, which a full
// recompute after preemption may reach, and a prefix lookup's result.
func slabRoom(q *seq) int { return blocksFor(q.prompt+q.maxTokens) + len(q.hashes) }

// growTo returns b with length n, reusing its memory when it is large enough.
func growTo[T any](b []T, n int) []T {
	if cap(b) < n {
		return make([]T, n, n+n/4)
	}
	return b[:n]
}
