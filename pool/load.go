package pool

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// RateWindow is the time constant of the dispatch rates a replica keeps: a dispatch's weight
// halves about every 0.7 RateWindow. Long enough to span the decode of a typical response
// (which the rates help predict), short enough to follow a change of traffic within a minute.
const RateWindow = 10 * time.Second

// Work is the size of one request as dispatched to a replica.
type Work struct {
	PromptTokens int
	// UncachedTokens is the part of the prompt the replica is expected to compute: the
	// prompt less what the prefix record expects it to hold (PromptTokens without a record).
	UncachedTokens int
	// MaxTokens is the client's output limit, 0 when it gave none.
	MaxTokens int
	// TPOTObjective is the request's time-per-output-token objective, 0 when it has none.
	// Every stream decoding on a replica shares its steps, so the tightest objective among
	// the requests there bounds how much more work the replica may take.
	TPOTObjective time.Duration
}

// Load is the picker's own accounting of work it dispatched to a replica and has not seen finish.
type Load struct {
	// Requests dispatched and not finished.
	Requests int64
	// PrefillTokens is the prompt tokens of dispatched requests whose first token has not
	// been seen yet: work the replica still has to prefill. A non-streaming response shows no
	// first token, so its prompt counts here until it completes.
	PrefillTokens int64
	// PrefillUncachedTokens is the same for the uncached part of those prompts.
	PrefillUncachedTokens int64
	// DecodeRequests is dispatched requests that are generating (first token seen).
	DecodeRequests int64
	// DecodeTokensLeft is the output tokens that decoding requests with a limit may still
	// generate: their limits less the tokens seen so far.
	DecodeTokensLeft int64
	// DecodeContextTokens is the context of the decoding requests: their prompts plus the
	// tokens they generated so far. Every decode step reads it all from the KV cache.
	DecodeContextTokens int64
	// Tokens is the work dispatched and not finished, in tokens: each request's prompt plus
	// its output limit when the client gave one.
	Tokens int64
	// Counts are the picker's cumulative counts for the replica; subtracting those a scrape
	// recorded (Metrics.Counts) gives what happened since the replica reported.
	Counts Counts
	// LastToken is when a streamed token from the replica last reached the picker; zero when
	// none has. Steps emit the tokens of every running request at once, so it marks where the
	// replica's step cycle is.
	LastToken time.Time
	// StepStart is when the replica's step in progress began as far as the picker can tell:
	// the latest token arrival, or the dispatch that found the replica idle (which starts a
	// step at once). Zero when neither happened.
	StepStart time.Time
	// NextStepRequests and NextStepUncachedTokens are the requests dispatched since
	// StepStart, and their uncached prompt tokens: work that came too late for the step in
	// progress and will be scheduled with (ahead of) a request dispatched now.
	NextStepRequests, NextStepUncachedTokens int64
	// Steps are the replica's step times as the token streams show them: the gaps between
	// successive token arrivals while a request of this picker was decoding there.
	Steps Steps
	// TightestTPOTObjective is the smallest TPOT objective among the requests dispatched to
	// the replica and not finished; 0 when none of them has one.
	TightestTPOTObjective time.Duration

	rates rates
}

// Steps summarises the step times a replica's token streams show. A running vLLM emits one
// token for every decoding request at the end of every step, so while a request decodes the
// gap between two token arrivals is one step: the time each output token took, and the time
// a newly arriving request waits for the step in progress to end.
type Steps struct {
	// Last is the latest step time seen; Fast and Slow average the latest steps, weighting
	// each new one StepFastWeight and StepSlowWeight. All are 0 until a step was seen.
	Last, Fast, Slow time.Duration
}

// Weights of a new step time in the averages of Steps.
const (
	StepFastWeight = 1.0 / 8
	StepSlowWeight = 1.0 / 64
)

// MinStepGap is the shortest gap between token arrivals counted as a step: tokens of one step
// reach the picker through different streams, a little apart. No vLLM step is this short.
const MinStepGap = time.Millisecond

// MaxStepGap is the longest gap counted as a step: a longer one is a stall or a stream the
// picker read late, not the replica's pace.
const MaxStepGap = 10 * time.Second

func (s *Steps) add(gap time.Duration) {
	s.Last = gap
	if s.Fast == 0 {
		s.Fast, s.Slow = gap, gap
		return
	}
	s.Fast += time.Duration(StepFastWeight * float64(gap-s.Fast))
	s.Slow += time.Duration(StepSlowWeight * float64(gap-s.Slow))
}

// Counts are events the picker saw for a replica since it started.
type Counts struct {
	Dispatched  int64 // requests sent to it
	FirstTokens int64 // first streamed tokens from it
	Finished    int64 // requests it stopped serving (completed, failed or cut)
}

// Since is what happened between o and c.
func (c Counts) Since(o Counts) Counts {
	return Counts{Dispatched: c.Dispatched - o.Dispatched, FirstTokens: c.FirstTokens - o.FirstTokens, Finished: c.Finished - o.Finished}
}

// Idle reports whether no dispatched request is in flight.
func (l Load) Idle() bool {
	return l.Requests == 0 && l.PrefillTokens == 0 && l.PrefillUncachedTokens == 0 && l.DecodeRequests == 0 &&
		l.DecodeTokensLeft == 0 && l.DecodeContextTokens == 0 && l.Tokens == 0
}

// FastRateWindow is the time constant of the fast dispatch rates: the load of the last
// seconds, which the requests decoding now will share the replica with.
const FastRateWindow = 2 * time.Second

// Rates are the dispatch rates of a Load as of one instant, in requests and uncached prompt
// tokens per second: averaged exponentially over RateWindow, and over FastRateWindow
// corrected for the picker's start (until it has run for a few windows, the average is over
// the time it has run). Uncached tokens arriving are prefill work, which slows the decoding
// of the requests running there.
type Rates struct {
	Request, UncachedToken         float64 // over RateWindow
	RequestFast, UncachedTokenFast float64 // over FastRateWindow
}

// Rates returns the rates as of now, with one exponential per time constant.
func (l *Load) Rates(now time.Time) Rates {
	r := &l.rates
	if r.since.IsZero() {
		return Rates{}
	}
	ws := RateWindow.Seconds()
	dt := max(0, now.Sub(r.since).Seconds())
	f := math.Exp(-dt / ws)
	out := Rates{Request: r.requests * f / ws, UncachedToken: r.uncached * f / ws}
	ws = FastRateWindow.Seconds()
	span := ws
	if run := now.Sub(r.start).Seconds(); run < 20*ws {
		span = ws * -math.Expm1(-max(run, ws/4)/ws)
	}
	f = math.Exp(-dt / ws)
	out.RequestFast, out.UncachedTokenFast = r.requestsFast*f/span, r.uncachedFast*f/span
	return out
}

// rates are exponentially decayed sums of dispatches, as of the instant since.
type rates struct {
	requests, uncached         float64
	requestsFast, uncachedFast float64
	since                      time.Time
	// start is the first dispatch's time: the averages cover no more than the time since.
	start time.Time
}

func (r *rates) add(now time.Time, uncached float64) {
	if !r.since.IsZero() {
		dt := max(0, now.Sub(r.since).Seconds())
		f := math.Exp(-dt / RateWindow.Seconds())
		r.requests *= f
		r.uncached *= f
		f = math.Exp(-dt / FastRateWindow.Seconds())
		r.requestsFast *= f
		r.uncachedFast *= f
	} else {
		r.start = now
	}
	if now.After(r.since) {
		r.since = now
	}
	r.requests++
	r.uncached += uncached
	r.requestsFast++
	r.uncachedFast += uncached
}

// inflight is a replica's accounting. Counters are read one by one without a lock, so every
// change adds before it subtracts: a reader caught in between over-counts the work rather than
// missing it.
type inflight struct {
	requests, prefillTokens, prefillUncached, decoding, decodeLeft, tokens atomic.Int64
	decodeContext                                                          atomic.Int64
	lastToken                                                              atomic.Int64 // UnixNano, 0 = none
	stepStart                                                              atomic.Int64 // UnixNano, 0 = none
	nextRequests, nextUncached                                             atomic.Int64
	dispatched, firstTokens, finished                                      atomic.Int64

	mu    sync.Mutex // guards rates, steps and objectives
	rates rates
	steps Steps
	// objectives counts the in-flight requests per distinct TPOT objective. A workload has
	// a handful of objectives, so a short list scanned linearly beats a heap or a map.
	objectives []objectiveCount
}

type objectiveCount struct {
	tpot time.Duration
	n    int
}

// addObjective counts one more (delta 1) or one fewer (delta -1) request with objective tpot.
// The caller holds mu.
func (in *inflight) addObjective(tpot time.Duration, delta int) {
	if tpot <= 0 {
		return
	}
	for i := range in.objectives {
		if in.objectives[i].tpot == tpot {
			in.objectives[i].n += delta
			if in.objectives[i].n <= 0 {
				in.objectives = append(in.objectives[:i], in.objectives[i+1:]...)
			}
			return
		}
	}
	if delta > 0 {
		in.objectives = append(in.objectives, objectiveCount{tpot: tpot, n: delta})
	}
}

// tightest returns the smallest objective counted. The caller holds mu.
func (in *inflight) tightest() time.Duration {
	var t time.Duration
	for _, o := range in.objectives {
		if t == 0 || o.tpot < t {
			t = o.tpot
		}
	}
	return t
}

// Load returns the picker's in-flight accounting for the replica.
func (r *Replica) Load() Load {
	in := &r.load
	l := Load{
		Requests: in.requests.Load(), PrefillTokens: in.prefillTokens.Load(), PrefillUncachedTokens: in.prefillUncached.Load(),
		DecodeRequests: in.decoding.Load(), DecodeTokensLeft: in.decodeLeft.Load(), Tokens: in.tokens.Load(),
		DecodeContextTokens: in.decodeContext.Load(),
	}
	l.Counts = r.counts()
	if ns := in.lastToken.Load(); ns != 0 {
		l.LastToken = time.Unix(0, ns)
	}
	if ns := in.stepStart.Load(); ns != 0 {
		l.StepStart = time.Unix(0, ns)
	}
	l.NextStepRequests, l.NextStepUncachedTokens = in.nextRequests.Load(), in.nextUncached.Load()
	in.mu.Lock()
	l.rates = in.rates
	l.Steps = in.steps
	l.TightestTPOTObjective = in.tightest()
	in.mu.Unlock()
	return l
}

func (r *Replica) counts() Counts {
	in := &r.load
	// Finished first: a request counted finished is then surely counted dispatched.
	f := in.finished.Load()
	return Counts{FirstTokens: in.firstTokens.Load(), Dispatched: in.dispatched.Load(), Finished: f}
}

// Dispatch accounts a request sent to the replica at now and returns the lease that releases it.
func (r *Replica) Dispatch(now time.Time, w Work) *Lease {
	w.UncachedTokens = min(max(w.UncachedTokens, 0), w.PromptTokens)
	in := &r.load
	in.dispatched.Add(1)
	if in.requests.Add(1) == 1 {
		// An idle replica starts a step for the request at once.
		in.nextRequests.Store(0)
		in.nextUncached.Store(0)
		advance(&in.stepStart, now.UnixNano())
	} else {
		in.nextRequests.Add(1)
		in.nextUncached.Add(int64(w.UncachedTokens))
	}
	in.tokens.Add(int64(w.PromptTokens + w.MaxTokens))
	in.prefillTokens.Add(int64(w.PromptTokens))
	in.prefillUncached.Add(int64(w.UncachedTokens))
	in.mu.Lock()
	in.rates.add(now, float64(w.UncachedTokens))
	in.addObjective(w.TPOTObjective, 1)
	in.mu.Unlock()
	return &Lease{replica: r, work: w}
}

// sawToken records a token arrival at now; decoding reports whether a request of this picker
// was generating on the replica since the previous arrival, so that the gap is one step.
func (r *Replica) sawToken(now time.Time, decoding bool) {
	ns := now.UnixNano()
	for {
		cur := r.load.lastToken.Load()
		if cur >= ns {
			return
		}
		if r.load.lastToken.CompareAndSwap(cur, ns) {
			// A step ended: what was dispatched meanwhile is in the next one.
			r.load.nextRequests.Store(0)
			r.load.nextUncached.Store(0)
			advance(&r.load.stepStart, ns)
			gap := time.Duration(ns - cur)
			if decoding && cur != 0 && gap >= MinStepGap && gap <= MaxStepGap {
				r.load.mu.Lock()
				r.load.steps.add(gap)
				r.load.mu.Unlock()
			}
			return
		}
	}
}

// advance sets a to ns unless it is later already.
func advance(a *atomic.Int64, ns int64) {
	for {
		cur := a.Load()
		if cur >= ns || a.CompareAndSwap(cur, ns) {
			return
		}
	}
}

// Lease is one dispatched request's share of a replica's in-flight accounting.
// Its methods are idempotent and safe to call from several goroutines, because a request can
// finish, fail and be cancelled in racing paths and must be released exactly once.
type Lease struct {
	mu        sync.Mutex
	replica   *Replica
	work      Work
	generated int // output tokens seen, once decoding
	state     leaseState
}

type leaseState uint8

const (
	leaseDispatched leaseState = iota
	leaseDecoding
	leaseReleased
)

// Replica returns the replica the lease is held on.
func (l *Lease) Replica() *Replica {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.replica
}

// left is the output tokens the request may still generate, counted in DecodeTokensLeft.
func (l *Lease) left() int64 {
	if l.work.MaxTokens <= 0 {
		return 0
	}
	return int64(max(0, l.work.MaxTokens-l.generated))
}

// FirstToken moves the request from prefill to decode accounting: its first token reached
// the picker at now.
func (l *Lease) FirstToken(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.state != leaseDispatched {
		return
	}
	l.state = leaseDecoding
	l.generated = 1
	in := &l.replica.load
	in.firstTokens.Add(1)
	wasDecoding := in.decoding.Add(1) > 1
	in.decodeLeft.Add(l.left())
	in.decodeContext.Add(int64(l.work.PromptTokens + l.generated))
	in.prefillTokens.Add(-int64(l.work.PromptTokens))
	in.prefillUncached.Add(-int64(l.work.UncachedTokens))
	l.replica.sawToken(now, wasDecoding)
}

// Generated records that the request has generated n output tokens in all, the latest
// reaching the picker at now.
func (l *Lease) Generated(now time.Time, n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.state != leaseDecoding || n <= l.generated {
		return
	}
	before, was := l.left(), l.generated
	l.generated = n
	l.replica.load.decodeContext.Add(int64(n - was))
	l.replica.load.decodeLeft.Add(l.left() - before)
	l.replica.sawToken(now, true)
}

// Release ends the lease. Later calls do nothing.
func (l *Lease) Release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.state != leaseReleased {
		l.replica.load.finished.Add(1)
	}
	l.unaccount(l.replica)
	l.state = leaseReleased
}

func (l *Lease) unaccount(r *Replica) {
	in := &r.load
	if l.state != leaseReleased {
		in.mu.Lock()
		in.addObjective(l.work.TPOTObjective, -1)
		in.mu.Unlock()
	}
	switch l.state {
	case leaseDispatched:
		in.requests.Add(-1)
		in.tokens.Add(-int64(l.work.PromptTokens + l.work.MaxTokens))
		in.prefillTokens.Add(-int64(l.work.PromptTokens))
		in.prefillUncached.Add(-int64(l.work.UncachedTokens))
	case leaseDecoding:
		in.requests.Add(-1)
		in.tokens.Add(-int64(l.work.PromptTokens + l.work.MaxTokens))
		in.decoding.Add(-1)
		in.decodeLeft.Add(-l.left())
		in.decodeContext.Add(-int64(l.work.PromptTokens + l.generated))
	}
}

// MoveTo transfers the lease to another replica, for when the gateway reports that a fallback
// served the request instead of the primary.
func (l *Lease) MoveTo(r *Replica) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if r == nil || r == l.replica || l.state == leaseReleased {
		return
	}
	in := &r.load
	in.dispatched.Add(1)
	in.requests.Add(1)
	in.tokens.Add(int64(l.work.PromptTokens + l.work.MaxTokens))
	in.mu.Lock()
	in.addObjective(l.work.TPOTObjective, 1)
	in.mu.Unlock()
	if l.state == leaseDispatched {
		in.prefillTokens.Add(int64(l.work.PromptTokens))
		in.prefillUncached.Add(int64(l.work.UncachedTokens))
	} else {
		in.decoding.Add(1)
		in.decodeLeft.Add(l.left())
		in.decodeContext.Add(int64(l.work.PromptTokens + l.generated))
	}
	l.unaccount(l.replica)
	l.replica = r
}
