package flowcontrol_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/augur-llm/augur/flowcontrol"
	"github.com/augur-llm/augur/scheduler"
)

// predicted admits a request with a TTFT objective of 500 ms to h's flow control as the
// lifecycle does, with a scheduler that predicts a TTFT of ttftMs on the only replica and,
// while infeasible holds, finds the objectives missed there (so flow control may take the
// request back). Its outcome arrives on the channel: nil when dispatched.
func predicted(h *harness, id, objective string, ttftMs float64, infeasible *atomic.Bool) <-chan error {
	out := make(chan error, 2) // 2: a second outcome would be seen, not block
	req := &scheduler.Request{ID: id, Model: "m", PromptTokens: 100, Objective: objective, FairnessID: "t",
		SLO: scheduler.SLO{TTFT: 500 * time.Millisecond}}
	ctx := context.Background()
	var resume func(error)
	resume = func(err error) {
		if err != nil {
			out <- err
			return
		}
		c := scheduler.CandidateOf(h.pool.Replicas()[0])
		c.SetValue(scheduler.ValuePredictedTTFT, ttftMs)
		if infeasible.Load() {
			c.SetValue(scheduler.ValueSLOViolation, 1)
			res := scheduler.Result{Targets: []scheduler.Candidate{c}}
			if !res.Infeasible() {
				h.t.Fatal("the fabricated decision is not infeasible")
			}
			if h.fc.Defer(ctx, req, res, resume) {
				return
			}
		}
		out <- nil
	}
	h.fc.Admit(ctx, req, resume)
	return out
}

func outcome(t *testing.T, c <-chan error, what string) (error, bool) {
	t.Helper()
	select {
	case err := <-c:
		return err, true
	default:
		return nil, false
	}
}

// busy dispatches one request, so that the only replica is not idle (flow control does not
// hold a request back while a replica serves nothing), and scrapes.
func busy(t *testing.T, h *harness) {
	t.Helper()
	h.send(context.Background(), "busy", "standard", "t")
	if r, ok := h.result("busy"); !ok || r.err != nil {
		t.Fatalf("busy: %+v", r)
	}
	h.scrape()
}

// Prediction saturation: a request no replica is predicted to serve within its objectives
// goes back to its queue, holding dispatch, and leaves with the next event that finds it
// feasible; a sheddable one is refused with rejected-saturated instead.
func TestPredictionSaturationDefers(t *testing.T) {
	h := newHarness(t, 1, flowcontrol.Config{Objectives: classes})
	busy(t, h)
	var infeasible atomic.Bool
	infeasible.Store(true)
	got := predicted(h, "deferred", "standard", 300, &infeasible)
	if err, done := outcome(t, got, "deferred"); done {
		t.Fatalf("an infeasible request left flow control: %v", err)
	}
	if q := h.fc.Stats().Queued(); q != 1 {
		t.Fatalf("%d queued, want the deferred request", q)
	}
	// Held: a request arriving behind it waits too, even with room by the metrics.
	h.send(context.Background(), "behind", "standard", "t")
	if _, done := h.result("behind"); done {
		t.Error("a request passed one held for prediction saturation")
	}
	infeasible.Store(false)
	h.clk.advance(10 * time.Millisecond)
	h.fc.Wake()
	if err, done := outcome(t, got, "deferred"); !done || err != nil {
		t.Fatalf("after the wake the request got %v (resumed %v), want dispatched", err, done)
	}
	if r, done := h.result("behind"); !done || r.err != nil {
		t.Errorf("the request behind: %+v, %v; want dispatched", r, done)
	}

	hs := newHarness(t, 1, flowcontrol.Config{Objectives: classes})
	busy(t, hs)
	infeasible.Store(true)
	err, done := outcome(t, predicted(hs, "shed", "batch", 300, &infeasible), "shed")
	if !done {
		t.Fatal("an infeasible sheddable request waits")
	}
	if rej := rejection(t, err); rej.Status != 429 || rej.Reason != flowcontrol.ReasonSaturated {
		t.Errorf("rejection %+v, want 429 %s", rej, flowcontrol.ReasonSaturated)
	}
	if q := hs.fc.Stats().Queued(); q != 0 {
		t.Errorf("%d queued after the shedding", q)
	}
}

// While a replica serves nothing, an infeasible request is dispatched all the same: no
// replica would serve it sooner.
func TestPredictionSaturationNotWhileIdle(t *testing.T) {
	h := newHarness(t, 1, flowcontrol.Config{Objectives: classes})
	var infeasible atomic.Bool
	infeasible.Store(true)
	if err, done := outcome(t, predicted(h, "idle", "standard", 300, &infeasible), "idle"); !done || err != nil {
		t.Fatalf("with an idle replica: %v (resumed %v), want dispatched", err, done)
	}
}

// RefuseLate: a request predicted to reach its first token after its objective even when
// dispatched now is refused at once; one predicted in time is held, and refused when a
// later decision finds that waiting made it late.
func TestRefuseLateByPrediction(t *testing.T) {
	h := newHarness(t, 1, flowcontrol.Config{Objectives: classes, RefuseLate: true})
	busy(t, h)
	var infeasible atomic.Bool
	infeasible.Store(true)
	err, done := outcome(t, predicted(h, "hopeless", "standard", 800, &infeasible), "hopeless")
	if !done {
		t.Fatal("a request predicted to miss its deadline was held")
	}
	if rej := rejection(t, err); rej.Status != 429 || rej.Reason != flowcontrol.ReasonLate || !strings.Contains(rej.Msg, "predicted") {
		t.Errorf("rejection %+v, want 429 %s, predicted", rej, flowcontrol.ReasonLate)
	}

	got := predicted(h, "in-time", "standard", 300, &infeasible)
	if err, done := outcome(t, got, "in-time"); done {
		t.Fatalf("a request predicted within its deadline was refused: %v", err)
	}
	h.clk.advance(300 * time.Millisecond) // 200 ms left, 300 predicted
	h.fc.Wake()
	err, done = outcome(t, got, "in-time")
	if !done || rejection(t, err).Reason != flowcontrol.ReasonLate {
		t.Fatalf("after waiting past its chance: %v (resumed %v), want %s", err, done, flowcontrol.ReasonLate)
	}
	if q := h.fc.Stats().Queued(); q != 0 {
		t.Errorf("%d queued after the refusals", q)
	}

	// Without RefuseLate the hopeless request waits for its chance instead.
	hw := newHarness(t, 1, flowcontrol.Config{Objectives: classes})
	busy(t, hw)
	if err, done := outcome(t, predicted(hw, "hopeless", "standard", 800, &infeasible), "hopeless"); done {
		t.Errorf("without RefuseLate a request was refused: %v", err)
	}
}

// RefuseLate: a request whose TTFT objective passes while it waits is refused when it
// reaches the head of its queue, not dispatched.
func TestRefuseLateDeadlinePassed(t *testing.T) {
	h := newHarness(t, 1, flowcontrol.Config{Objectives: classes, RefuseLate: true})
	saturate(h, 2)
	h.send(context.Background(), "late", "interactive", "t") // 500 ms objective
	h.send(context.Background(), "none", "standard", "t")    // no objective: never late
	h.clk.advance(600 * time.Millisecond)
	h.firstToken("fill-0")
	r, done := h.result("late")
	if !done {
		t.Fatal("the late request is still queued after room freed")
	}
	if rej := rejection(t, r.err); rej.Status != 429 || rej.Reason != flowcontrol.ReasonLate {
		t.Errorf("rejection %+v, want 429 %s", rej, flowcontrol.ReasonLate)
	}
	if r, done := h.result("none"); !done || r.err != nil {
		t.Errorf("the request without an objective: %+v, %v; want dispatched in the room", r, done)
	}
}

// infeasibleOn is a decision that finds the objectives missed on h's only replica.
func infeasibleOn(h *harness) scheduler.Result {
	c := scheduler.CandidateOf(h.pool.Replicas()[0])
	c.SetValue(scheduler.ValuePredictedTTFT, 300)
	c.SetValue(scheduler.ValueSLOViolation, 1)
	return scheduler.Result{Targets: []scheduler.Candidate{c}}
}

// observed replaces h's controller with one that reports every outcome on the returned
// channel.
func observed(t *testing.T, h *harness) <-chan flowcontrol.Outcome {
	t.Helper()
	out := make(chan flowcontrol.Outcome, 8)
	fc, err := flowcontrol.New(h.cfg, flowcontrol.Options{Pool: h.pool, Clock: h.clk,
		Observe: func(_ *scheduler.Request, o flowcontrol.Outcome, _ time.Duration) { out <- o }})
	if err != nil {
		t.Fatal(err)
	}
	h.fc = fc
	return out
}

// A client that leaves while its request is taken back (Defer) gets one outcome reported,
// cancelled, not also the dispatch that was under way.
func TestDeferThenCancelReportsOnce(t *testing.T) {
	h := newHarness(t, 1, flowcontrol.Config{Objectives: classes})
	busy(t, h)
	outcomes := observed(t, h)
	ctx, cancel := context.WithCancel(context.Background())
	req := &scheduler.Request{ID: "leaves", Model: "m", PromptTokens: 100, Objective: "standard", FairnessID: "t",
		SLO: scheduler.SLO{TTFT: 500 * time.Millisecond}}
	cancelled := make(chan error, 1)
	// Admit resumes the dispatch once; the request taken back is resumed through the
	// function handed to Defer.
	h.fc.Admit(ctx, req, func(error) {
		cancel() // the client leaves while the request is being scheduled
		if !h.fc.Defer(ctx, req, infeasibleOn(h), func(err error) { cancelled <- err }) {
			t.Error("the request was not taken back")
			return
		}
		// The cancellation is seen at once; the dispatch returns after it.
		if err, ok := receive(cancelled); ok {
			cancelled <- err
		} else {
			t.Error("the cancellation never reached the request")
		}
	})
	if err, ok := receive(cancelled); !ok || err == nil {
		t.Fatalf("the cancelled request: resumed %v with %v, want an error", ok, err)
	}
	// Admit has returned, so the dispatch's report, if any, is made; the cancellation's
	// comes from its own goroutine.
	var got []flowcontrol.Outcome
	for wait := true; wait; {
		select {
		case o := <-outcomes:
			got = append(got, o)
			wait = o != flowcontrol.OutcomeCancelled
		case <-time.After(10 * time.Second):
			wait = false
		}
	}
	for len(outcomes) > 0 {
		got = append(got, <-outcomes)
	}
	if len(got) != 1 || got[0] != flowcontrol.OutcomeCancelled {
		t.Errorf("outcomes reported %v, want [%s]", got, flowcontrol.OutcomeCancelled)
	}
}

// A wake while a request is being scheduled (a first token, a completion, a scrape) may
// make the room its decision did not see: taken back, it is tried again at once, not left
// waiting for the next event.
func TestWakeDuringDecisionIsNotLost(t *testing.T) {
	h := newHarness(t, 1, flowcontrol.Config{Objectives: classes})
	busy(t, h)
	var infeasible atomic.Bool
	infeasible.Store(true)
	out := make(chan error, 2)
	req := &scheduler.Request{ID: "woken", Model: "m", PromptTokens: 100, Objective: "standard", FairnessID: "t",
		SLO: scheduler.SLO{TTFT: 500 * time.Millisecond}}
	var resume func(error)
	resume = func(err error) {
		if err == nil && infeasible.Swap(false) {
			h.fc.Wake() // arrives while the decision is made, on another goroutine in production
			if h.fc.Defer(context.Background(), req, infeasibleOn(h), resume) {
				return
			}
		}
		out <- err
	}
	h.fc.Admit(context.Background(), req, resume)
	select {
	case err := <-out:
		if err != nil {
			t.Fatalf("refused: %v", err)
		}
	default:
		t.Fatalf("the request waits after a wake during its decision (%d queued)", h.fc.Stats().Queued())
	}
}

// The request holding dispatch for prediction saturation leaves (its client did): the
// requests behind it are dispatched without waiting for another event.
func TestHoldingRequestLeavingReleases(t *testing.T) {
	h := newHarness(t, 1, flowcontrol.Config{Objectives: classes})
	busy(t, h)
	ctx, cancel := context.WithCancel(context.Background())
	req := &scheduler.Request{ID: "holder", Model: "m", PromptTokens: 100, Objective: "standard", FairnessID: "a",
		SLO: scheduler.SLO{TTFT: 500 * time.Millisecond}}
	left := make(chan error, 2)
	first := true
	var resume func(error)
	resume = func(err error) {
		if err == nil && first {
			first = false
			if h.fc.Defer(ctx, req, infeasibleOn(h), resume) {
				return
			}
		}
		left <- err
	}
	h.fc.Admit(ctx, req, resume)
	h.send(context.Background(), "behind", "standard", "b")
	if _, done := h.result("behind"); done {
		t.Fatal("a request passed the one holding dispatch")
	}
	cancel()
	if err, ok := receive(left); !ok || err == nil {
		t.Fatalf("the cancelled holder: left %v with %v, want an error", ok, err)
	}
	if r, done := h.await("behind"); !done || r.err != nil {
		t.Fatalf("the request behind: %+v, %v; want dispatched once the holder left (%d queued)", r, done, h.fc.Stats().Queued())
	}
}

// receive waits up to 10 s for what another goroutine sends on c.
func receive[T any](c <-chan T) (T, bool) {
	select {
	case v := <-c:
		return v, true
	case <-time.After(10 * time.Second):
		var zero T
		return zero, false
	}
}
