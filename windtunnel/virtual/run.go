package virtual

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/utils/clock"

	"github.com/augur-llm/augur/flowcontrol"
	"github.com/augur-llm/augur/pool"
	"github.com/augur-llm/augur/requestcontrol"
	"github.com/augur-llm/augur/scheduler"
	"github.com/augur-llm/augur/windtunnel/report"
	"github.com/augur-llm/augur/windtunnel/sim"
	"github.com/augur-llm/augur/windtunnel/workload"
)

// ReplicaSpec is one simulated replica.
type ReplicaSpec struct {
	Name    string
	Profile sim.Profile
}

// Config describes a run.
type Config struct {
	Replicas []ReplicaSpec
	// Profile is the scheduling profile under test.
	Profile scheduler.ProfileConfig
	// ScrapeInterval and StaleAfter are the picker's; defaults pool.DefaultScrapeInterval and
	// pool.DefaultStaleAfter.
	ScrapeInterval time.Duration
	StaleAfter     time.Duration
	// Seed drives the replicas' step jitter and the scheduler's tie-breaks.
	Seed uint64
	// Progress, when set, is called about once per simulated second.
	Progress func(p Progress)
	// Observers receive every dispatched request's completion, stamped with virtual time,
	// exactly as the picker's observers do in production (the recorder, for one).
	Observers []requestcontrol.Observer
	// Predictor, when set, predicts every decision's latencies as the picker's does.
	Predictor scheduler.Predictor
	// PredictorFor, when set instead, builds the predictor on the run's virtual clock: a
	// predictor's features (metric age, time since a replica's last token, dispatch rates)
	// are only right on the clock the run advances.
	PredictorFor func(clk clock.PassiveClock) scheduler.Predictor
	// Clairvoyant predicts with perfect knowledge of the replicas' state instead (Predictor
	// must then be nil): every candidate's latencies are forecast on a copy of its engine,
	// and predictions carry ModelVersion ClairvoyantVersion. It is the reference a predictor
	// is measured against, not something a picker could do.
	Clairvoyant bool
	// ClairvoyantTokens is how many tokens after the first the clairvoyant follows a request
	// for its TPOT (0: sim.DefaultForecastTokens; negative: to its end).
	ClairvoyantTokens int
	// Oracle, when active, replaces part of the predictor's predictions (Predictor or
	// PredictorFor, one of which it needs) with the clairvoyant's: what that part's error
	// costs the policy is then the difference to a run without it.
	Oracle Oracle
	// Start is the virtual instant the run begins at (zero: Epoch()). Outcomes are offsets
	// from it; recorded samples carry absolute times.
	Start time.Time
	// Slowdowns slow replicas from virtual instants on.
	Slowdowns []Slowdown
	// FlowControl, when set, admits every request through flow control on the run's clock,
	// as the picker does with a flowControl section.
	FlowControl *flowcontrol.Config
	// OnEvent, when set, is called after every event with the run's flow control (nil
	// without one) and the replicas: tests check invariants there.
	OnEvent func(now time.Time, fc *flowcontrol.Controller, replicas []*sim.Replica)
}

// ParsePool reads a pool description, "COUNTxPROFILE,..." (e.g. "6x8b-h100,2x8b-a100"), into
// replicas named sim-0, sim-1, ...
func ParsePool(s string) ([]ReplicaSpec, error) {
	var specs []ReplicaSpec
	for _, g := range strings.Split(s, ",") {
		n, name, ok := strings.Cut(strings.TrimSpace(g), "x")
		count, err := strconv.Atoi(n)
		if !ok || err != nil || count < 1 {
			return nil, fmt.Errorf("pool entry %q: want COUNTxPROFILE, e.g. 6x8b-h100", g)
		}
		p, err := sim.LookupProfile(name)
		if err != nil {
			return nil, fmt.Errorf("pool entry %q: %w", g, err)
		}
		for range count {
			specs = append(specs, ReplicaSpec{Name: fmt.Sprintf("sim-%d", len(specs)), Profile: p})
		}
	}
	return specs, nil
}

// Progress is how far a run has got.
type Progress struct {
	Elapsed   time.Duration // virtual time
	Arrived   int
	Completed int
}

// ReplicaResult is a replica's state at the end of a run.
type ReplicaResult struct {
	Name     string
	Profile  string
	Snapshot sim.Snapshot
}

// Result is what a run produced.
type Result struct {
	Outcomes []report.Outcome
	Elapsed  time.Duration // virtual time from the start to the last completion
	Replicas []ReplicaResult
	Events   int
	// MeanWaiting is the requests waiting in the replicas' own queues, per replica, averaged
	// over every scrape of the run.
	MeanWaiting float64
}

// Epoch is where virtual time starts by default; fixed so that runs repeat exactly.
func Epoch() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }

type record struct {
	arrived  time.Time
	first    time.Time
	last     time.Time
	flight   *requestcontrol.Flight
	replica  int
	cached   int
	out      int
	class    string
	stage    int
	sloTTFT  time.Duration
	sloTPOT  time.Duration
	prompt   int
	status   int
	reason   string // the dropped-reason of a refusal
	queued   time.Duration
	stream   bool
	finished bool
}

type run struct {
	cfg      Config
	epoch    time.Time
	clk      *vclock
	pool     *pool.Pool
	director *requestcontrol.Director
	replicas []*sim.Replica
	stepping []bool
	byAddr   map[*pool.Replica]int
	q        queue
	recs     []record
	next     func() (workload.Request, bool)
	pending  workload.Request // the next arrival, when hasNext
	hasNext  bool
	open     int // requests arrived and not finished
	done     int
	events   int
	emitFn   func(sim.Token)
	slow     []Slowdown // not applied yet, by instant
	fc       *flowcontrol.Controller
	held     int  // requests in flow control
	wake     bool // flow control is to be woken after the event
	// waitingSum and scrapes average the replicas' waiting queues over the scrapes.
	waitingSum float64
	scrapes    int
}

// Run drives the workload from next through the scheduler into the replicas until every
// request has finished, and returns each request's outcome.
func Run(ctx context.Context, cfg Config, next func() (workload.Request, bool)) (Result, error) {
	if len(cfg.Replicas) == 0 {
		return Result{}, errors.New("virtual: no replicas")
	}
	if cfg.ScrapeInterval <= 0 {
		cfg.ScrapeInterval = pool.DefaultScrapeInterval
	}
	if cfg.Start.IsZero() {
		cfg.Start = Epoch()
	}
	r := &run{cfg: cfg, epoch: cfg.Start, clk: &vclock{now: cfg.Start}, next: next, byAddr: map[*pool.Replica]int{}}
	var err error
	if r.slow, err = slowdowns(&cfg); err != nil {
		return Result{}, err
	}
	if cfg.Oracle.Active() && (cfg.Clairvoyant || (cfg.Predictor == nil && cfg.PredictorFor == nil)) {
		return Result{}, errors.New("virtual: an Oracle corrects a predictor: it needs Predictor or PredictorFor, and no Clairvoyant")
	}
	if cfg.Clairvoyant {
		if cfg.Predictor != nil || cfg.PredictorFor != nil {
			return Result{}, errors.New("virtual: Clairvoyant is a predictor: Predictor and PredictorFor must be nil")
		}
		cfg.Predictor = newClairvoyant(r, cfg.ClairvoyantTokens)
	}
	r.pool = pool.New(r.clk, cfg.StaleAfter)
	eps := make([]pool.Endpoint, len(cfg.Replicas))
	for i, spec := range cfg.Replicas {
		// Addresses are only names here; the pool wants them to look like ip:port.
		eps[i] = pool.Endpoint{Name: spec.Name, Address: fmt.Sprintf("127.0.0.1:%d", 10000+i), Class: spec.Profile.Name}
		rep, err := sim.NewReplica(sim.Config{Model: "sim", Profile: spec.Profile, Seed: cfg.Seed + uint64(i)})
		if err != nil {
			return Result{}, fmt.Errorf("virtual: replica %s: %w", spec.Name, err)
		}
		r.replicas = append(r.replicas, rep)
	}
	if err := r.pool.Set(eps); err != nil {
		return Result{}, fmt.Errorf("virtual: %w", err)
	}
	for i, rep := range r.pool.Replicas() {
		r.byAddr[rep] = i
	}
	r.stepping = make([]bool, len(r.replicas))
	pred := cfg.Predictor
	if cfg.PredictorFor != nil {
		if pred != nil {
			return Result{}, errors.New("virtual: set Predictor or PredictorFor, not both")
		}
		pred = cfg.PredictorFor(r.clk)
	}
	if cfg.Oracle.Active() {
		cv := newClairvoyant(r, cfg.ClairvoyantTokens)
		cv.oracle = &cfg.Oracle
		pred = oracled{pred, cv}
	}
	if cfg.FlowControl != nil {
		if cfg.Profile, err = flowcontrol.WithRoom(cfg.Profile, *cfg.FlowControl); err != nil {
			return Result{}, fmt.Errorf("virtual: %w", err)
		}
	}
	prof, err := scheduler.DefaultRegistry().Build(cfg.Profile, scheduler.Handle{Seed: cfg.Seed, Pool: r.pool, Clock: r.clk, Predictor: pred}, nil)
	if err != nil {
		return Result{}, fmt.Errorf("virtual: %w", err)
	}
	sched, err := scheduler.NewWithPredictor(r.pool, prof, 0, pred)
	if err != nil {
		return Result{}, fmt.Errorf("virtual: %w", err)
	}
	observers := cfg.Observers
	if ob, ok := pred.(requestcontrol.Observer); ok && cfg.PredictorFor != nil {
		// A predictor built for the run learns from its completions as the picker's does.
		observers = append(slices.Clip(observers), ob)
	}
	dc := requestcontrol.Config{Pool: r.pool, Scheduler: sched, Clock: r.clk, Observers: observers}
	if cfg.FlowControl != nil {
		if r.fc, err = flowcontrol.New(*cfg.FlowControl, flowcontrol.Options{Pool: r.pool, Clock: timers{r}}); err != nil {
			return Result{}, fmt.Errorf("virtual: %w", err)
		}
		dc.Admitter = deferredWake{r}
	}
	r.director = requestcontrol.New(dc)
	r.emitFn = r.onToken

	// Every replica is scraped once before traffic starts, then on its own phase.
	for i := range r.replicas {
		r.scrape(i)
		phase := cfg.ScrapeInterval * time.Duration(i) / time.Duration(len(r.replicas))
		r.q.push(event{at: r.epoch.Add(cfg.ScrapeInterval + phase), kind: evScrape, replica: i})
	}
	r.pull()

	// A request's context is never cancelled in virtual time: cancellation would fire on a
	// goroutine of its own, outside the event loop. An aborted run stops in the loop.
	reqCtx := context.WithoutCancel(ctx)
	lastReport := time.Duration(0)
	for r.q.h.Len() > 0 {
		e := r.q.pop()
		r.clk.now = e.at
		r.events++
		if r.events%4096 == 0 && ctx.Err() != nil {
			return Result{}, fmt.Errorf("virtual: %w", ctx.Err())
		}
		switch e.kind {
		case evArrival:
			r.arrive(reqCtx)
			r.pull()
		case evStepEnd:
			r.stepping[e.replica] = false
			r.replicas[e.replica].Finish(r.clk.now, r.emitFn)
			r.startStep(e.replica)
		case evTimer:
			if !e.timer.stopped {
				e.timer.stopped = true
				e.timer.f()
			}
		case evScrape:
			r.scrape(e.replica)
			r.waitingSum += float64(r.replicas[e.replica].Snapshot().Waiting)
			r.scrapes++
			r.wake = r.fc != nil
			if r.hasNext || r.open > 0 || r.held > 0 {
				r.q.push(event{at: e.at.Add(cfg.ScrapeInterval), kind: evScrape, replica: e.replica})
			}
		}
		if r.wake {
			// After the event, not inside it: a wake that dispatches submits to replicas,
			// which must not happen while one of them is emitting its step's tokens.
			r.wake = false
			r.fc.Wake()
		}
		if cfg.OnEvent != nil {
			cfg.OnEvent(r.clk.now, r.fc, r.replicas)
		}
		if cfg.Progress != nil {
			if el := r.clk.now.Sub(r.epoch); el-lastReport >= time.Second {
				lastReport = el
				cfg.Progress(Progress{Elapsed: el, Arrived: len(r.recs), Completed: r.done})
			}
		}
	}
	return r.result(), nil
}

// pull reads the next request from the workload and schedules its arrival.
func (r *run) pull() {
	r.pending, r.hasNext = r.next()
	if r.hasNext {
		r.q.push(event{at: r.epoch.Add(r.pending.At), kind: evArrival})
	}
}

func (r *run) arrive(ctx context.Context) {
	w := r.pending
	now := r.clk.now
	tag := len(r.recs)
	prompt := w.PromptText()
	r.recs = append(r.recs, record{arrived: now, class: w.Class, stage: w.Stage, sloTTFT: w.SLOTTFT, sloTPOT: w.SLOTPOT, replica: -1, stream: w.Stream})
	rec := &r.recs[tag]
	req := scheduler.Request{
		ID: w.ID, Model: "sim", Prompt: prompt, PromptTokens: w.PromptTokens(), MaxTokens: w.MaxTokens, Stream: w.Stream,
		SLO: scheduler.SLO{TTFT: w.SLOTTFT, TPOT: w.SLOTPOT}, Objective: w.Objective, FairnessID: w.FairnessID, SessionID: w.SessionID,
	}
	rec.prompt = req.PromptTokens
	r.held++
	r.director.Start(ctx, req, nil, now, func(f *requestcontrol.Flight, err error) {
		// Flow control may resume the request later, on another event.
		now := r.clk.now
		r.held--
		rec := &r.recs[tag]
		rec.queued = now.Sub(rec.arrived)
		if err != nil {
			rec.status, rec.finished = 503, true
			if rej, ok := scheduler.RejectionOf(err); ok {
				rec.status, rec.reason = rej.Status, rej.Reason
			}
			r.done++
			return
		}
		i := r.byAddr[f.Targets()[0].Replica]
		f.Sent(now)
		if err := r.replicas[i].Submit(now, tag, sim.Request{Prompt: sim.TextPrompt(prompt), MaxTokens: w.MaxTokens}); err != nil {
			f.End(now, requestcontrol.End{Outcome: requestcontrol.OutcomeUpstreamError, Status: 400})
			rec.status, rec.finished = 400, true
			r.done++
			return
		}
		rec.replica, rec.flight = i, f
		r.open++
		r.startStep(i)
	})
}

// startStep starts replica i's next step if it is idle and has work.
func (r *run) startStep(i int) {
	if r.stepping[i] {
		return
	}
	r.applySlowdowns()
	d, ok, err := r.replicas[i].Step(r.clk.now)
	if err != nil || !ok {
		return
	}
	r.stepping[i] = true
	r.q.push(event{at: r.clk.now.Add(d), kind: evStepEnd, replica: i})
}

func (r *run) onToken(t sim.Token) {
	rec := &r.recs[t.Tag]
	now := r.clk.now
	if t.Generated == 1 {
		rec.first = now
		rec.cached = t.CachedTokens
		if rec.stream {
			// The picker sees a first token only in a streamed response, as in production.
			rec.flight.FirstToken(now)
		}
	} else if rec.stream {
		// Every token, the last included: production's response stream shows them all.
		rec.flight.Generated(now, t.Generated)
	}
	rec.last, rec.out = now, t.Generated
	if t.Done {
		rec.flight.End(now, requestcontrol.End{Outcome: requestcontrol.OutcomeOK, Status: 200, LastToken: now, OutputTokens: t.Generated,
			Usage: requestcontrol.Usage{PromptTokens: rec.prompt, CompletionTokens: t.Generated, CachedTokens: rec.cached}, HasUsage: true})
		rec.flight = nil
		rec.status, rec.finished = 200, true
		r.open--
		r.done++
	}
}

func (r *run) scrape(i int) {
	s := r.replicas[i].Snapshot()
	r.pool.Replicas()[i].SetMetrics(pool.Metrics{
		Running: s.Running, Waiting: s.Waiting, KVUsage: s.KVCacheUsage,
		BlockSize: sim.BlockSize, NumGPUBlocks: s.NumGPUBlocks,
		PrefixQueries: float64(s.PrefixCacheQueries), PrefixHits: float64(s.PrefixCacheHits),
		Preemptions: float64(s.Preemptions), ScrapedAt: r.clk.now,
	})
}

func (r *run) result() Result {
	res := Result{Events: r.events, Outcomes: make([]report.Outcome, 0, len(r.recs))}
	var last time.Time
	for _, rec := range r.recs {
		o := report.Outcome{
			Class: rec.class, Stage: rec.stage, SLOTTFT: rec.sloTTFT, SLOTPOT: rec.sloTPOT,
			Start: rec.arrived.Sub(r.epoch), Status: rec.status, ShedReason: rec.reason, Queued: rec.queued,
			PromptTokens: rec.prompt, CachedTokens: rec.cached, OutputTokens: rec.out,
		}
		if rec.replica >= 0 {
			o.Replica = r.cfg.Replicas[rec.replica].Name
		}
		if rec.status == 200 {
			o.End = rec.last.Sub(r.epoch)
			o.E2E = rec.last.Sub(rec.arrived)
			o.TTFT = rec.first.Sub(rec.arrived)
			o.TPOT = requestcontrol.TPOT(rec.first, rec.last, rec.out)
			if rec.last.After(last) {
				last = rec.last
			}
		} else {
			o.End = o.Start
		}
		res.Outcomes = append(res.Outcomes, o)
	}
	if !last.IsZero() {
		res.Elapsed = last.Sub(r.epoch)
	}
	if r.scrapes > 0 {
		res.MeanWaiting = r.waitingSum / float64(r.scrapes)
	}
	for i, rep := range r.replicas {
		res.Replicas = append(res.Replicas, ReplicaResult{Name: r.cfg.Replicas[i].Name, Profile: rep.Config().Profile.Name, Snapshot: rep.Snapshot()})
	}
	return res
}

// deferredWake is the run's flow control as the lifecycle sees it: the wakes of first tokens
// and completions are held until the event that caused them is over.
type deferredWake struct{ r *run }

func (d deferredWake) Admit(ctx context.Context, req *scheduler.Request, resume func(error)) {
	d.r.fc.Admit(ctx, req, resume)
}

func (d deferredWake) Wake() { d.r.wake = true }

func (d deferredWake) Defer(ctx context.Context, req *scheduler.Request, res scheduler.Result, resume func(error)) bool {
	return d.r.fc.Defer(ctx, req, res, resume)
}
