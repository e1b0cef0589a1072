package requestcontrol

import (
	"context"
	"errors"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	"k8s.io/utils/clock"

	"github.com/augur-llm/augur/models"
	"github.com/augur-llm/augur/pool"
	"github.com/augur-llm/augur/scheduler"
)

// Admitter is flow control's hook. Admit must not block: it calls resume exactly once, with
// nil to let the request be scheduled or with an error (a *scheduler.Rejection to refuse it),
// either before returning or later from an event (a dispatch finishing, a timer on the
// injected clock), so the same code runs in real and in virtual time. When ctx ends while the
// request is held, the admitter resumes it with ctx's error.
type Admitter interface {
	Admit(ctx context.Context, req *scheduler.Request, resume func(error))
}

// Waker is an Admitter that wants to hear of the events that can make room on a replica: a
// dispatched request's first token (it left the replica's queue) and its end. Wake must not
// block for long; it runs on the caller of FirstToken and End.
type Waker interface {
	Wake()
}

// Deferrer is an Admitter that takes back a request the scheduler predicted no replica would
// serve within its objectives (scheduler.Result.Infeasible), rather than have it dispatched
// where it would miss them and slow the streams already there; res is that decision, with
// its predictions. Defer reports whether it took the request back: it then resumes it later
// exactly as Admit does (or refuses it), and nothing of the decision was recorded.
type Deferrer interface {
	Defer(ctx context.Context, req *scheduler.Request, res scheduler.Result, resume func(error)) bool
}

// Observer receives every dispatched request once it ended. It runs on the caller of End, on
// the request path: it must not block (hand the completion to a buffer).
type Observer interface {
	Observe(c Completion)
}

// RefusalObserver is an Observer that also hears of every request never dispatched, so that
// each request is accounted for once: as a Completion or as a Refusal. Like Observe, Refused
// runs on the request path and must not block.
type RefusalObserver interface {
	Observer
	Refused(r Refusal)
}

// Refusal is a request that was never dispatched: admission or the scheduler refused it, or
// its client left while it waited.
type Refusal struct {
	scheduler.Request
	Received time.Time // the request arrived
	Refused  time.Time // it was refused, or its client was found gone
	// Outcome is rejected, no_endpoints, cancelled (the client left) or internal_error.
	Outcome Outcome
	// Status is the HTTP status the request is answered with (0 when the client left);
	// Reason its x-llm-d-request-dropped-reason, if any.
	Status int
	Reason string
}

// ObserverFunc adapts a function to Observer.
type ObserverFunc func(Completion)

// Observe implements Observer.
func (f ObserverFunc) Observe(c Completion) { f(c) }

// Config configures a Director.
type Config struct {
	Pool      *pool.Pool
	Scheduler *scheduler.Scheduler
	Clock     clock.PassiveClock
	// Admitter decides admission; nil admits every request at once.
	Admitter  Admitter
	Observers []Observer
	// Probe checks a replica now (pool.Scraper.Probe), taking it out of rotation when it
	// fails. A response cut before its end is an upstream error when the probe of its replica
	// fails (the replica died), a cancel when it passes (the client left). nil: every cut is a
	// cancel.
	Probe func(ctx context.Context, r *pool.Replica) error
	// ProbeTimeout bounds a probe; 0 means DefaultProbeTimeout.
	ProbeTimeout time.Duration
}

// DefaultProbeTimeout bounds the probe of a replica whose response was cut: a dead replica
// refuses connections at once, a live one answers its metrics within milliseconds, and one
// that answers neither within this is treated as dead.
const DefaultProbeTimeout = time.Second

// Director runs requests through their lifecycle. It is safe for concurrent use.
type Director struct {
	cfg      Config
	refusals []RefusalObserver
	// probes shares one probe among the requests of a replica cut at the same time (a crash
	// cuts all of them), so a crash costs one scrape, not one per request.
	probes singleflight.Group
}

// New returns a director.
func New(cfg Config) *Director {
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = DefaultProbeTimeout
	}
	d := &Director{cfg: cfg}
	for _, o := range cfg.Observers {
		if r, ok := o.(RefusalObserver); ok {
			d.refusals = append(d.refusals, r)
		}
	}
	return d
}

// Start admits req and then schedules it, calling done exactly once: with the flight,
// dispatched to its primary target, or with the error that refused it (a
// *scheduler.Rejection when the request is to be answered with its status). subset, when not
// nil, restricts the eligible replicas to those addresses (the gateway's hint). done may run
// before Start returns, or later on the goroutine that resumes a held request.
func (d *Director) Start(ctx context.Context, req scheduler.Request, subset []string, received time.Time, done func(*Flight, error)) {
	f := &Flight{d: d, Req: req, Received: received}
	deferrer, _ := d.cfg.Admitter.(Deferrer)
	var admitted func(err error)
	admitted = func(err error) {
		if err != nil {
			d.refuse(ctx, f, err)
			done(nil, err)
			return
		}
		f.Admitted = d.cfg.Clock.Now()
		res, err := d.cfg.Scheduler.Schedule(ctx, &f.Req, subset)
		if err != nil {
			d.refuse(ctx, f, err)
			done(nil, err)
			return
		}
		if deferrer != nil && res.Infeasible() && deferrer.Defer(ctx, &f.Req, res, admitted) {
			return
		}
		f.dispatch(ctx, res)
		done(f, nil)
	}
	if d.cfg.Admitter == nil {
		admitted(nil)
		return
	}
	d.cfg.Admitter.Admit(ctx, &f.Req, admitted)
}

// refuse tells the refusal observers that f's request will not be dispatched, for err.
func (d *Director) refuse(ctx context.Context, f *Flight, err error) {
	if len(d.refusals) == 0 {
		return
	}
	r := Refusal{Request: f.Req, Received: f.Received, Refused: d.cfg.Clock.Now(), Outcome: OutcomeInternal, Status: 500}
	if rej, ok := scheduler.RejectionOf(err); ok {
		r.Outcome, r.Status, r.Reason = OutcomeRejected, rej.Status, rej.Reason
		if errors.Is(err, scheduler.ErrNoEndpoints) {
			r.Outcome = OutcomeNoEndpoints
		}
	} else if ctx.Err() != nil {
		r.Outcome, r.Status = OutcomeCancelled, 0
	}
	for _, o := range d.refusals {
		o.Refused(r)
	}
}

// Flight is one dispatched request. Its methods may be called from several goroutines (a
// response can end and be cancelled in racing paths); the first End wins.
type Flight struct {
	d *Director
	// Req is the request as scheduled.
	Req scheduler.Request
	// Decision is the scheduler's result: Decision.Targets[0] the primary.
	Decision scheduler.Result
	// Features are the primary's features at decision time, by the models schema.
	Features models.Vector
	// Received is when the request arrived; Admitted when admission let it through;
	// Decided when the scheduler chose.
	Received, Admitted, Decided time.Time

	mu         sync.Mutex
	lease      *pool.Lease
	served     scheduler.Candidate // the replica credited with the request
	fallback   bool
	dispatched time.Time
	first      time.Time
	ended      bool
}

// dispatch credits the decision's primary with the request.
func (f *Flight) dispatch(ctx context.Context, res scheduler.Result) {
	f.Decided = f.d.cfg.Clock.Now()
	f.Decision = res
	primary := res.Targets[0]
	f.Features = models.Extract(&f.Req, &primary, f.Decided)
	f.served = primary
	f.lease = primary.Replica.Dispatch(f.Decided, WorkOf(&f.Req, &primary))
	res.Profile.Dispatched(ctx, &f.Req, primary)
}

// Targets returns the decision's replicas, primary first.
func (f *Flight) Targets() []scheduler.Candidate { return f.Decision.Targets }

// Sent records that the request left for its replica at now: the adapter sent the
// destination to the gateway, or submitted the request to a replica. Latencies are measured
// from here.
func (f *Flight) Sent(now time.Time) {
	f.mu.Lock()
	f.dispatched = now
	f.mu.Unlock()
}

// ServedBy records that r, not the replica credited so far, is serving the request (the
// gateway fell back): the lease and what scheduling plugins learned move to r.
func (f *Flight) ServedBy(ctx context.Context, r *pool.Replica) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r == nil || r == f.served.Replica || f.ended {
		return
	}
	to := scheduler.CandidateOf(r)
	f.lease.MoveTo(r)
	f.Decision.Profile.Moved(ctx, &f.Req, f.served, to)
	f.served, f.fallback = to, true
}

// Served returns the replica currently credited with the request.
func (f *Flight) Served() *pool.Replica {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.served.Replica
}

// FirstToken records that the first generated output reached the picker at now; the replica's
// accounting moves the request from prefill to decode.
func (f *Flight) FirstToken(now time.Time) {
	f.mu.Lock()
	first := f.first.IsZero() && !f.ended
	if first {
		f.first = now
		f.lease.FirstToken(now)
	}
	f.mu.Unlock()
	if first {
		f.d.wake()
	}
}

// wake tells the admitter, if it listens, that a replica may have room.
func (d *Director) wake() {
	if w, ok := d.cfg.Admitter.(Waker); ok {
		w.Wake()
	}
}

// Generated records that the response has shown n output tokens in all, the latest at now.
// Adapters call it as the stream goes; what the replica may still generate counts as its
// load, and the time shows where the replica's step cycle is.
func (f *Flight) Generated(now time.Time, n int) {
	// Called for every streamed token: the lease's own state (decoding, not released) is
	// the check, without the flight's lock. The lease is set before the flight is handed out
	// and never replaced.
	f.lease.Generated(now, n)
}

// WorkOf is req's size as dispatched to c: the uncached part of its prompt follows the prefix
// match the decision computed for c.
func WorkOf(req *scheduler.Request, c *scheduler.Candidate) pool.Work {
	return pool.Work{PromptTokens: req.PromptTokens, UncachedTokens: c.UncachedTokens(req), MaxTokens: req.MaxTokens,
		TPOTObjective: req.SLO.TPOT}
}

// Outcome is how a request ended, as counted in metrics and recorded.
type Outcome string

// Outcomes.
const (
	OutcomeOK            Outcome = "ok"
	OutcomeUpstreamError Outcome = "upstream_error"
	OutcomeCancelled     Outcome = "cancelled"
	OutcomeBadRequest    Outcome = "bad_request"
	OutcomeTooLarge      Outcome = "too_large"
	OutcomeNoEndpoints   Outcome = "no_endpoints"
	OutcomeRejected      Outcome = "rejected"
	OutcomeShuttingDown  Outcome = "shutting_down"
	OutcomeInternal      Outcome = "internal_error"
)

// Usage is the token accounting a server reported.
type Usage struct {
	PromptTokens     int
	CompletionTokens int
	CachedTokens     int
}

// End describes how a response ended, as the adapter observed it.
type End struct {
	Outcome Outcome
	Status  int // the response's HTTP status, 0 when none arrived
	// LastToken is when the last generated output arrived (zero: none seen).
	LastToken time.Time
	// OutputTokens is how many tokens were generated, as measured.
	OutputTokens int
	Usage        Usage
	HasUsage     bool
}

// End ends the flight at now: the replica is released and the completion goes to the
// observers. Later calls do nothing and report false.
func (f *Flight) End(now time.Time, e End) bool {
	f.mu.Lock()
	if f.ended {
		f.mu.Unlock()
		return false
	}
	f.ended = true
	f.lease.Release()
	c := Completion{
		Request: f.Req, Target: f.served.Endpoint, Features: f.Features, ServedByFallback: f.fallback,
		Received: f.Received, Admitted: f.Admitted, Decided: f.Decided, Dispatched: f.dispatched,
		FirstToken: f.first, End: e,
	}
	primary := &f.Decision.Targets[0]
	for _, p := range []struct {
		v   scheduler.Value
		dst **float64
	}{
		{scheduler.ValuePredictedTTFT, &c.PredictedTTFTMs}, {scheduler.ValuePredictedTPOT, &c.PredictedTPOTMs},
		{scheduler.ValuePredictedTTFTUpper, &c.PredictedTTFTUpperMs}, {scheduler.ValuePredictedTPOTUpper, &c.PredictedTPOTUpperMs},
	} {
		if v, ok := primary.Value(p.v); ok {
			*p.dst = &v
		}
	}
	c.ModelVersion = primary.ModelVersion
	if c.Dispatched.IsZero() {
		c.Dispatched = f.Decided // ended before it was sent
	}
	c.E2E = now.Sub(c.Dispatched)
	if !f.first.IsZero() {
		c.TTFT = f.first.Sub(c.Dispatched)
		c.TPOT = TPOT(f.first, e.LastToken, e.OutputTokens)
	}
	f.mu.Unlock()
	for _, o := range f.d.cfg.Observers {
		o.Observe(c)
	}
	f.d.wake()
	return true
}

// Cut ends a flight whose response stopped before its end (the gateway reset the stream): e
// is what was observed until then, its Outcome ignored. Without a probe the flight ends at
// once as cancelled. With one, the replica that served is probed off the request path and the
// flight ends when the probe answers: upstream_error if the replica failed it, cancelled if
// not. done, when not nil, runs after the flight ended.
func (f *Flight) Cut(now time.Time, e End, done func()) {
	e.Outcome = OutcomeCancelled
	probe := f.d.cfg.Probe
	r := f.Served()
	if probe == nil || r == nil {
		f.End(now, e)
		if done != nil {
			done()
		}
		return
	}
	// Joined here, not in the goroutine, so that cuts made while a probe is running share it.
	res := f.d.probes.DoChan(r.Name, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.Background(), f.d.cfg.ProbeTimeout)
		defer cancel()
		return nil, probe(ctx, r)
	})
	go func() {
		if (<-res).Err != nil {
			e.Outcome = OutcomeUpstreamError
		}
		f.End(now, e)
		if done != nil {
			done()
		}
	}()
}

// TPOT is the time per output token of a stream whose first and last tokens arrived at first
// and last: the gaps between tokens, averaged. It is 0 with fewer than two tokens.
func TPOT(first, last time.Time, tokens int) time.Duration {
	if tokens < 2 || last.Before(first) {
		return 0
	}
	return last.Sub(first) / time.Duration(tokens-1)
}

// Completion is one dispatched request as observed from decision to end.
type Completion struct {
	scheduler.Request
	// Target is the replica that served, as configured when it was credited.
	Target pool.Endpoint
	// Features are the primary's features at decision time. When ServedByFallback, Target is
	// the fallback and Features still the primary's.
	Features         models.Vector
	ServedByFallback bool
	// PredictedTTFTMs and PredictedTPOTMs are the predictions (mean models) the decision had
	// for the primary, the Upper ones its upper-quantile predictions, if any; ModelVersion
	// names the models that made them.
	PredictedTTFTMs, PredictedTPOTMs           *float64
	PredictedTTFTUpperMs, PredictedTPOTUpperMs *float64
	ModelVersion                               string

	Received   time.Time // the request arrived
	Admitted   time.Time // admission let it through
	Decided    time.Time // the scheduler chose
	Dispatched time.Time // it left for the replica
	FirstToken time.Time // zero when none was seen
	End
	// DecisionLatency is Dispatched - Admitted: scheduling and answering the gateway.
	// TTFT is from dispatch to the first token (0 when none was seen); TPOT by TPOT(); E2E
	// from dispatch to the end.
	TTFT, TPOT, E2E time.Duration
}

// DecisionLatency is the time from admission to dispatch.
func (c *Completion) DecisionLatency() time.Duration { return c.Dispatched.Sub(c.Admitted) }
