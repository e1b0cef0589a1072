package flowcontrol_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	metav1pkg "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/augur-llm/augur/flowcontrol"
	"github.com/augur-llm/augur/pool"
	"github.com/augur-llm/augur/requestcontrol"
	"github.com/augur-llm/augur/scheduler"
)

// vclock is a virtual clock: time moves only when a test advances it, and timers fire in
// order as it passes them, on the advancing goroutine.
type vclock struct {
	mu     sync.Mutex
	now    time.Time
	seq    int
	timers []*vtimer
}

type vtimer struct {
	at      time.Time
	seq     int
	f       func()
	stopped bool
}

func newClock() *vclock { return &vclock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *vclock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *vclock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

func (c *vclock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	t := &vtimer{at: c.now.Add(d), seq: c.seq, f: f}
	c.timers = append(c.timers, t)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		was := !t.stopped
		t.stopped = true
		return was
	}
}

// pending is the timers armed and not stopped.
func (c *vclock) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.timers {
		if !t.stopped {
			n++
		}
	}
	return n
}

// advance moves time forward by d, firing every timer due on the way, in order.
func (c *vclock) advance(d time.Duration) {
	end := c.Now().Add(d)
	for {
		c.mu.Lock()
		sort.Slice(c.timers, func(i, j int) bool {
			if !c.timers[i].at.Equal(c.timers[j].at) {
				return c.timers[i].at.Before(c.timers[j].at)
			}
			return c.timers[i].seq < c.timers[j].seq
		})
		var next *vtimer
		for len(c.timers) > 0 && c.timers[0].stopped {
			c.timers = c.timers[1:]
		}
		if len(c.timers) > 0 && !c.timers[0].at.After(end) {
			next = c.timers[0]
			c.timers = c.timers[1:]
			next.stopped = true
			c.now = next.at
		} else {
			c.now = end
		}
		c.mu.Unlock()
		if next == nil {
			return
		}
		next.f()
	}
}

// harness is flow control in front of a real scheduler and lifecycle over a pool whose
// replicas report what the test says.
type harness struct {
	t     *testing.T
	clk   *vclock
	pool  *pool.Pool
	fc    *flowcontrol.Controller
	dir   *requestcontrol.Director
	cfg   flowcontrol.Config
	mu    sync.Mutex
	order []string // request ids in the order they were dispatched
	seen  map[string]result
	// resumed is signalled when a request sent leaves flow control.
	resumed chan struct{}
}

type result struct {
	flight *requestcontrol.Flight
	err    error
	at     time.Time
}

func newHarness(t *testing.T, replicas int, cfg flowcontrol.Config) *harness {
	t.Helper()
	h := &harness{t: t, clk: newClock(), cfg: cfg, seen: map[string]result{}, resumed: make(chan struct{}, 1)}
	h.pool = pool.New(h.clk, 10*time.Second)
	var eps []pool.Endpoint
	for i := range replicas {
		eps = append(eps, pool.Endpoint{Name: fmt.Sprintf("r%d", i), Address: fmt.Sprintf("10.0.0.%d:8000", i+1)})
	}
	if err := h.pool.Set(eps); err != nil {
		t.Fatal(err)
	}
	h.scrape()
	pc, err := flowcontrol.WithRoom(scheduler.BuiltinProfiles()["round-robin"], cfg)
	if err != nil {
		t.Fatal(err)
	}
	prof, err := scheduler.DefaultRegistry().Build(pc, scheduler.Handle{Pool: h.pool, Clock: h.clk, Seed: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sched, err := scheduler.New(h.pool, prof, 0)
	if err != nil {
		t.Fatal(err)
	}
	if h.fc, err = flowcontrol.New(cfg, flowcontrol.Options{Pool: h.pool, Clock: h.clk}); err != nil {
		t.Fatal(err)
	}
	h.dir = requestcontrol.New(requestcontrol.Config{Pool: h.pool, Scheduler: sched, Clock: h.clk, Admitter: h.fc})
	return h
}

// scrape reports every replica with nothing waiting and nothing running, as a replica that
// started every request it was sent reports it, and wakes flow control.
func (h *harness) scrape() {
	for _, r := range h.pool.Replicas() {
		r.SetMetrics(pool.Metrics{ScrapedAt: h.clk.Now(), Running: int(r.Load().Requests)})
	}
	if h.fc != nil {
		h.fc.Wake()
	}
}

// send starts a request and records where it went, or why it was refused.
func (h *harness) send(ctx context.Context, id, objective, tenant string) {
	req := scheduler.Request{ID: id, Model: "m", PromptTokens: 100, MaxTokens: 10, Objective: objective, FairnessID: tenant, Prompt: []byte("hello")}
	h.dir.Start(ctx, req, nil, h.clk.Now(), func(f *requestcontrol.Flight, err error) {
		h.mu.Lock()
		defer h.mu.Unlock()
		if _, dup := h.seen[id]; dup {
			h.t.Errorf("request %s resumed twice", id)
		}
		h.seen[id] = result{flight: f, err: err, at: h.clk.Now()}
		if err == nil {
			h.order = append(h.order, id)
		}
		select {
		case h.resumed <- struct{}{}:
		default:
		}
	})
}

// await waits, up to 10 s, for request id to leave flow control on another goroutine.
func (h *harness) await(id string) (result, bool) {
	timeout := time.After(10 * time.Second)
	for {
		if r, ok := h.result(id); ok {
			return r, true
		}
		select {
		case <-h.resumed:
		case <-timeout:
			return result{}, false
		}
	}
}

func (h *harness) result(id string) (result, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r, ok := h.seen[id]
	return r, ok
}

func (h *harness) dispatched() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.order...)
}

// firstToken makes the oldest dispatched, not yet streaming request stream its first token:
// it left its replica's queue, which frees room for one more.
func (h *harness) firstToken(id string) {
	h.t.Helper()
	r, ok := h.result(id)
	if !ok || r.flight == nil {
		h.t.Fatalf("%s was not dispatched", id)
	}
	r.flight.FirstToken(h.clk.Now())
}

// waiting is the requests each replica is estimated to hold waiting.
func (h *harness) waiting() []int64 {
	var out []int64
	for _, r := range h.pool.Replicas() {
		c := scheduler.CandidateOf(r)
		out = append(out, scheduler.Waiting(&c))
	}
	return out
}

func rejection(t *testing.T, err error) *scheduler.Rejection {
	t.Helper()
	rej, ok := scheduler.RejectionOf(err)
	if !ok {
		t.Fatalf("error %v is no rejection", err)
	}
	return rej
}

type metav1Duration = metav1pkg.Duration

func metav1(d time.Duration) metav1Duration { return metav1Duration{Duration: d} }
