package requestcontrol

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/augur-llm/augur/pool"
	"github.com/augur-llm/augur/scheduler"
)

// holdingAdmitter holds every request until the test resumes it, as flow control does when a
// band is saturated; when ctx ends first it resumes with ctx's error, as Admitter requires.
type holdingAdmitter struct {
	mu   sync.Mutex
	held []func(error)
}

func (a *holdingAdmitter) Admit(ctx context.Context, _ *scheduler.Request, resume func(error)) {
	var once sync.Once
	r := func(err error) { once.Do(func() { resume(err) }) }
	a.mu.Lock()
	a.held = append(a.held, r)
	a.mu.Unlock()
	context.AfterFunc(ctx, func() { r(ctx.Err()) })
}

func (a *holdingAdmitter) resumeAll(err error) {
	a.mu.Lock()
	held := a.held
	a.held = nil
	a.mu.Unlock()
	for _, r := range held {
		r(err)
	}
}

type fixture struct {
	clk     *clocktesting.FakeClock
	pool    *pool.Pool
	dir     *Director
	seen    chan Completion
	refused chan Refusal
}

// both observes completions and refusals.
type both struct{ fx *fixture }

func (b both) Observe(c Completion) { b.fx.seen <- c }
func (b both) Refused(r Refusal)    { b.fx.refused <- r }

func newFixture(t *testing.T, n int, edit func(*Config)) *fixture {
	t.Helper()
	f := &fixture{clk: clocktesting.NewFakeClock(time.Unix(1_700_000_000, 0)), seen: make(chan Completion, 16),
		refused: make(chan Refusal, 16)}
	f.pool = pool.New(f.clk, 0)
	var eps []pool.Endpoint
	for i := range n {
		eps = append(eps, pool.Endpoint{Name: "r" + strconv.Itoa(i), Address: "10.0.0.1:" + strconv.Itoa(8000+i)})
	}
	if err := f.pool.Set(eps); err != nil {
		t.Fatal(err)
	}
	for _, r := range f.pool.Replicas() {
		r.SetMetrics(pool.Metrics{ScrapedAt: f.clk.Now()})
	}
	prof, err := scheduler.DefaultRegistry().Build(scheduler.BuiltinProfiles()["round-robin"], scheduler.Handle{Pool: f.pool, Seed: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sched, err := scheduler.New(f.pool, prof, 1)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Pool: f.pool, Scheduler: sched, Clock: f.clk, Observers: []Observer{both{f}}}
	if edit != nil {
		edit(&cfg)
	}
	f.dir = New(cfg)
	return f
}

type started struct {
	f   *Flight
	err error
}

// start runs Start and returns a channel that receives what done was called with.
func (fx *fixture) start(ctx context.Context, id string) <-chan started {
	out := make(chan started, 2) // 2: a second call of done would be seen, not block
	req := scheduler.Request{ID: id, Model: "m", PromptTokens: 100, MaxTokens: 10}
	fx.dir.Start(ctx, req, nil, fx.clk.Now(), func(f *Flight, err error) { out <- started{f, err} })
	return out
}

func receive[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s within 10 s", what)
		var zero T
		return zero
	}
}

func nothing[T any](t *testing.T, c <-chan T, what string) {
	t.Helper()
	select {
	case v := <-c:
		t.Fatalf("unexpected %s: %+v", what, v)
	default:
	}
}

func inFlight(p *pool.Pool) int64 {
	var n int64
	for _, r := range p.Replicas() {
		n += r.Load().Requests
	}
	return n
}

// TestHeldRequestIsScheduledWhenResumed: a held request is neither scheduled nor dispatched
// until the admitter resumes it on a later event; then it is, at the time of resumption.
func TestHeldRequestIsScheduledWhenResumed(t *testing.T) {
	adm := &holdingAdmitter{}
	fx := newFixture(t, 2, func(c *Config) { c.Admitter = adm })
	got := fx.start(context.Background(), "a")
	nothing(t, got, "decision while held")
	if n := inFlight(fx.pool); n != 0 {
		t.Fatalf("%d dispatched while held", n)
	}
	fx.clk.Step(250 * time.Millisecond)
	adm.resumeAll(nil)
	s := receive(t, got, "decision after resume")
	if s.err != nil || s.f == nil {
		t.Fatalf("resumed request: %v", s.err)
	}
	if d := s.f.Admitted.Sub(s.f.Received); d != 250*time.Millisecond {
		t.Errorf("admitted %v after arrival, want 250ms", d)
	}
	if n := inFlight(fx.pool); n != 1 {
		t.Errorf("%d in flight after resume, want 1", n)
	}
	nothing(t, got, "second decision")
	nothing(t, fx.refused, "refusal of a dispatched request")
}

// TestHeldRequestRefused: a rejection from the admitter reaches done as a Rejection with
// its status, and nothing is dispatched.
func TestHeldRequestRefused(t *testing.T) {
	adm := &holdingAdmitter{}
	fx := newFixture(t, 2, func(c *Config) { c.Admitter = adm })
	got := fx.start(context.Background(), "a")
	adm.resumeAll(scheduler.Reject(429, "rejected-queue-full", "queue full"))
	s := receive(t, got, "refusal")
	rej, ok := scheduler.RejectionOf(s.err)
	if s.f != nil || !ok || rej.Status != 429 || rej.Reason != "rejected-queue-full" {
		t.Fatalf("got flight %v, err %v; want a 429 rejection", s.f, s.err)
	}
	if n := inFlight(fx.pool); n != 0 {
		t.Errorf("%d in flight after a refusal", n)
	}
	nothing(t, fx.seen, "completion of a refused request")
	r := receive(t, fx.refused, "refusal observed")
	if r.ID != "a" || r.Outcome != OutcomeRejected || r.Status != 429 || r.Reason != "rejected-queue-full" || !r.Refused.Equal(fx.clk.Now()) {
		t.Errorf("refusal %+v: want a, rejected, 429, rejected-queue-full, now", r)
	}
	nothing(t, fx.refused, "second refusal")
}

// TestNoEndpointsRefusal: a request no replica may serve is observed as refused with the
// scheduler's status, not as a completion.
func TestNoEndpointsRefusal(t *testing.T) {
	fx := newFixture(t, 2, nil)
	out := make(chan started, 2)
	fx.dir.Start(context.Background(), scheduler.Request{ID: "b", Model: "m", PromptTokens: 10}, []string{"10.9.9.9:1"}, fx.clk.Now(),
		func(f *Flight, err error) { out <- started{f, err} })
	if s := receive(t, out, "refusal"); !errors.Is(s.err, scheduler.ErrNoEndpoints) {
		t.Fatalf("err %v, want no endpoints", s.err)
	}
	if r := receive(t, fx.refused, "refusal observed"); r.ID != "b" || r.Outcome != OutcomeNoEndpoints || r.Status != 503 {
		t.Errorf("refusal %+v: want b, no_endpoints, 503", r)
	}
	nothing(t, fx.seen, "completion of a refused request")
}

// TestCancelWhileHeld: a request whose client leaves while it is held ends with the
// context's error and is never dispatched, even if the admitter lets it through later.
func TestCancelWhileHeld(t *testing.T) {
	adm := &holdingAdmitter{}
	fx := newFixture(t, 2, func(c *Config) { c.Admitter = adm })
	ctx, cancel := context.WithCancel(context.Background())
	got := fx.start(ctx, "a")
	cancel()
	s := receive(t, got, "end of a cancelled request")
	if !errors.Is(s.err, context.Canceled) || s.f != nil {
		t.Fatalf("got flight %v, err %v; want context.Canceled", s.f, s.err)
	}
	adm.resumeAll(nil) // too late: resume runs once
	nothing(t, got, "second call of done")
	if n := inFlight(fx.pool); n != 0 {
		t.Errorf("%d in flight after cancel while held", n)
	}
	if r := receive(t, fx.refused, "refusal observed"); r.ID != "a" || r.Outcome != OutcomeCancelled || r.Status != 0 {
		t.Errorf("refusal %+v: want a, cancelled, status 0", r)
	}
	nothing(t, fx.refused, "second refusal")
}

// TestEndOnce: the first End releases the replica and reaches the observers with the
// measured latencies; later Ends, and a Cut racing them, change nothing.
func TestEndOnce(t *testing.T) {
	fx := newFixture(t, 1, nil)
	s := receive(t, fx.start(context.Background(), "a"), "decision")
	f := s.f
	t0 := fx.clk.Now()
	f.Sent(t0)
	f.FirstToken(t0.Add(40 * time.Millisecond))
	last := t0.Add(130 * time.Millisecond)
	if !f.End(last, End{Outcome: OutcomeOK, Status: 200, LastToken: last, OutputTokens: 10}) {
		t.Fatal("first End reported false")
	}
	c := receive(t, fx.seen, "completion")
	if c.TTFT != 40*time.Millisecond || c.TPOT != 10*time.Millisecond || c.E2E != 130*time.Millisecond || c.Outcome != OutcomeOK {
		t.Errorf("completion TTFT %v TPOT %v E2E %v %q, want 40ms 10ms 130ms ok", c.TTFT, c.TPOT, c.E2E, c.Outcome)
	}
	if f.End(last, End{Outcome: OutcomeCancelled}) {
		t.Error("second End reported true")
	}
	f.Cut(last, End{}, nil)
	f.FirstToken(last) // late events after the end are ignored
	nothing(t, fx.seen, "second completion")
	if l := fx.pool.Replicas()[0].Load(); !l.Idle() {
		t.Errorf("load after End = %+v, want zero (released exactly once)", l)
	}
}

// TestServedByMovesLease: when a fallback serves, the in-flight accounting moves to it and
// the completion names it.
func TestServedByMovesLease(t *testing.T) {
	fx := newFixture(t, 2, nil)
	s := receive(t, fx.start(context.Background(), "a"), "decision")
	primary := s.f.Targets()[0].Replica
	fallback := s.f.Targets()[1].Replica
	s.f.ServedBy(context.Background(), fallback)
	if primary.Load().Requests != 0 || fallback.Load().Requests != 1 {
		t.Fatalf("after the move: primary %+v, fallback %+v", primary.Load(), fallback.Load())
	}
	s.f.End(fx.clk.Now(), End{Outcome: OutcomeOK})
	c := receive(t, fx.seen, "completion")
	if c.Target.Name != fallback.Name || !c.ServedByFallback {
		t.Errorf("completion credits %s (fallback %v), want %s", c.Target.Name, c.ServedByFallback, fallback.Name)
	}
}

// TestCutProbesOncePerReplica: the flights of a replica cut together share one probe, and
// its failure makes each an upstream error.
func TestCutProbesOncePerReplica(t *testing.T) {
	var probes atomic.Int32
	release := make(chan struct{})
	fx := newFixture(t, 1, func(c *Config) {
		c.Probe = func(ctx context.Context, _ *pool.Replica) error {
			probes.Add(1)
			select {
			case <-release:
			case <-ctx.Done():
			}
			return errors.New("connection refused")
		}
	})
	const n = 5
	var flights []*Flight
	for i := range n {
		flights = append(flights, receive(t, fx.start(context.Background(), strconv.Itoa(i)), "decision").f)
	}
	for _, f := range flights {
		f.Cut(fx.clk.Now(), End{OutputTokens: 3}, nil)
	}
	// Every cut is waiting on the probe in flight before it answers.
	for deadline := time.Now().Add(10 * time.Second); probes.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no probe within 10 s")
		}
	}
	close(release)
	for range n {
		if c := receive(t, fx.seen, "completion"); c.Outcome != OutcomeUpstreamError || c.OutputTokens != 3 {
			t.Errorf("cut completion %q with %d tokens, want upstream_error with 3", c.Outcome, c.OutputTokens)
		}
	}
	if p := probes.Load(); p != 1 {
		t.Errorf("%d probes for %d cuts of one replica, want 1", p, n)
	}
	if inFlight(fx.pool) != 0 {
		t.Error("requests in flight after the cuts")
	}
}
