package flowcontrol_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/augur-llm/augur/flowcontrol"
	"github.com/augur-llm/augur/requestcontrol"
	"github.com/augur-llm/augur/scheduler"
)

var classes = map[string]flowcontrol.Objective{
	"interactive": {Priority: 10, TTFTMs: 500, TPOTMs: 50},
	"standard":    {Priority: 0},
	"batch":       {Priority: -1},
}

// saturate fills every replica's room (2 waiting each by default) with standard requests.
func saturate(h *harness, n int) {
	for i := range n {
		h.send(context.Background(), fmt.Sprintf("fill-%d", i), "standard", "fill")
	}
	if !h.fc.Stats().Saturation.Saturated {
		h.t.Fatalf("pool not saturated after %d requests: %+v", n, h.fc.Stats().Saturation)
	}
}

func TestDispatchesAtOnceWithRoom(t *testing.T) {
	h := newHarness(t, 2, flowcontrol.Config{Objectives: classes})
	h.send(context.Background(), "a", "interactive", "t")
	r, ok := h.result("a")
	if !ok || r.err != nil || r.flight == nil {
		t.Fatalf("a: %+v, %v", r, ok)
	}
	if got := h.clk.pending(); got != 0 {
		t.Errorf("%d timers armed for a request dispatched at once", got)
	}
	// Default SLOs of the objective were applied to the request.
	if r.flight.Req.SLO.TTFT != 500*time.Millisecond || r.flight.Req.SLO.TPOT != 50*time.Millisecond {
		t.Errorf("SLO %+v, want the objective's 500 ms / 50 ms", r.flight.Req.SLO)
	}
}

// Under saturation the high band's requests go first: they wait for the next room only,
// while the low band's wait for all of them.
func TestStrictPriority(t *testing.T) {
	h := newHarness(t, 2, flowcontrol.Config{Objectives: classes})
	saturate(h, 4)
	for i := range 30 {
		h.send(context.Background(), fmt.Sprintf("low-%d", i), "standard", "t")
	}
	for i := range 10 {
		h.send(context.Background(), fmt.Sprintf("high-%d", i), "interactive", "t")
	}
	if q := h.fc.Stats().Queued(); q != 40 {
		t.Fatalf("%d queued, want 40", q)
	}
	// Room frees one request at a time; every dispatch is one step of 10 ms.
	for i := 0; i < 40; i++ {
		h.clk.advance(10 * time.Millisecond)
		d := h.dispatched()
		h.firstToken(d[i])
	}
	d := h.dispatched()[4:]
	for i, id := range d[:10] {
		if !strings.HasPrefix(id, "high-") {
			t.Fatalf("dispatch %d was %s before every high-band request: %v", i, id, d)
		}
	}
	var highWait, lowWait time.Duration
	for i := range 10 {
		r, _ := h.result(fmt.Sprintf("high-%d", i))
		highWait = max(highWait, r.at.Sub(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)))
	}
	for i := range 30 {
		r, _ := h.result(fmt.Sprintf("low-%d", i))
		lowWait = max(lowWait, r.at.Sub(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)))
	}
	if highWait > 100*time.Millisecond || lowWait < 300*time.Millisecond {
		t.Errorf("longest wait: high band %v (want <= 100ms), low band %v (want the queue, >= 300ms)", highWait, lowWait)
	}
}

func jain(xs []float64) float64 {
	s, s2 := 0.0, 0.0
	for _, x := range xs {
		s += x
		s2 += x * x
	}
	return s * s / (float64(len(xs)) * s2)
}

// A tenant sending 5x its share gets no more than its share while every tenant waits.
func TestFairnessNoisyTenant(t *testing.T) {
	for _, fairness := range []string{flowcontrol.FairnessRoundRobin, flowcontrol.FairnessWeighted} {
		t.Run(fairness, func(t *testing.T) {
			h := newHarness(t, 2, flowcontrol.Config{Objectives: classes, Fairness: fairness})
			saturate(h, 4)
			tenants := []string{"noisy", "t1", "t2", "t3"}
			n := 0
			// Arrivals interleaved as they would come: the noisy tenant five for each other's one.
			for round := range 20 {
				for k, tn := range tenants {
					reps := 1
					if k == 0 {
						reps = 5
					}
					for range reps {
						h.send(context.Background(), fmt.Sprintf("%s-%d-%d", tn, round, n), "standard", tn)
						n++
					}
				}
			}
			// Serve 60 while all four are backlogged (the quiet ones hold 20 each).
			for i := range 60 {
				h.firstToken(h.dispatched()[i])
			}
			got := map[string]float64{}
			for _, id := range h.dispatched()[4:] {
				got[strings.SplitN(id, "-", 2)[0]]++
			}
			var xs []float64
			for _, tn := range tenants {
				xs = append(xs, got[tn])
			}
			if j := jain(xs); j < 0.9 || got["noisy"] > 60/4+1 {
				t.Errorf("dispatches by tenant %v: Jain's index %.3f (want >= 0.9), noisy %v (want <= its share, 15)", got, j, got["noisy"])
			}
		})
	}
}

// Under weighted fairness a flow of weight 2 gets twice the service of a flow of weight 1.
func TestWeightedFairness(t *testing.T) {
	h := newHarness(t, 2, flowcontrol.Config{Objectives: classes, Fairness: flowcontrol.FairnessWeighted,
		FlowWeights: map[string]float64{"gold": 2}})
	saturate(h, 4)
	for i := range 40 {
		h.send(context.Background(), fmt.Sprintf("gold-%d", i), "standard", "gold")
		h.send(context.Background(), fmt.Sprintf("plain-%d", i), "standard", "plain")
	}
	for i := range 30 {
		h.firstToken(h.dispatched()[i])
	}
	got := map[string]int{}
	for _, id := range h.dispatched()[4:] {
		got[strings.SplitN(id, "-", 2)[0]]++
	}
	if got["gold"] != 20 || got["plain"] != 10 {
		t.Errorf("dispatches %v, want gold 20 and plain 10", got)
	}
}

// Earliest deadline first orders a flow by arrival + TTFT objective.
func TestDeadlineOrdering(t *testing.T) {
	h := newHarness(t, 1, flowcontrol.Config{Objectives: map[string]flowcontrol.Objective{
		"slow": {TTFTMs: 10_000}, "fast": {TTFTMs: 100}, "none": {}}, Ordering: flowcontrol.OrderDeadline})
	for i := range 2 {
		h.send(context.Background(), fmt.Sprintf("fill-%d", i), "none", "t")
	}
	h.send(context.Background(), "slow", "slow", "t")
	h.send(context.Background(), "none", "none", "t")
	h.clk.advance(time.Second)
	h.send(context.Background(), "fast", "fast", "t")
	for i := range 3 {
		h.firstToken(h.dispatched()[i])
	}
	if got := strings.Join(h.dispatched()[2:], ","); got != "fast,slow,none" {
		t.Errorf("order %s, want fast,slow,none", got)
	}
}

func TestTTLExpiry(t *testing.T) {
	h := newHarness(t, 1, flowcontrol.Config{Objectives: classes, TTL: metav1(2 * time.Second)})
	saturate(h, 2)
	h.send(context.Background(), "late", "standard", "t")
	h.clk.advance(1999 * time.Millisecond)
	if _, done := h.result("late"); done {
		t.Fatal("resumed before its TTL")
	}
	h.clk.advance(time.Millisecond)
	r, done := h.result("late")
	if !done {
		t.Fatal("not resumed at its TTL")
	}
	if rej := rejection(t, r.err); rej.Status != 429 || rej.Reason != flowcontrol.ReasonTTLExpired {
		t.Errorf("rejection %+v, want 429 %s", rej, flowcontrol.ReasonTTLExpired)
	}
	if s := h.fc.Stats(); s.Queued() != 0 || flows(s) != 0 {
		t.Errorf("left behind: %+v", s.Bands)
	}
}

func TestCancelWhileQueued(t *testing.T) {
	h := newHarness(t, 1, flowcontrol.Config{Objectives: classes})
	saturate(h, 2)
	ctx, cancel := context.WithCancel(context.Background())
	resumed := make(chan error, 1)
	req := scheduler.Request{ID: "c", Model: "m", Objective: "standard", FairnessID: "t"}
	h.dir.Start(ctx, req, nil, h.clk.Now(), func(_ *requestcontrol.Flight, err error) { resumed <- err })
	if h.fc.Stats().Queued() != 1 {
		t.Fatalf("not queued: %+v", h.fc.Stats())
	}
	cancel()
	select {
	case err := <-resumed:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("resumed with %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("not resumed after its client left")
	}
	if s := h.fc.Stats(); s.Queued() != 0 {
		t.Errorf("left behind: %+v", s.Bands)
	}
	if got := h.clk.pending(); got != 0 {
		t.Errorf("%d timers still armed", got)
	}
}

func TestBandCapacity(t *testing.T) {
	h := newHarness(t, 1, flowcontrol.Config{Objectives: classes, MaxRequestsPerBand: 3})
	saturate(h, 2)
	for i := range 4 {
		h.send(context.Background(), fmt.Sprintf("q-%d", i), "standard", "t")
	}
	r, done := h.result("q-3")
	if !done {
		t.Fatal("the request over capacity was not refused at once")
	}
	if rej := rejection(t, r.err); rej.Status != 429 || rej.Reason != flowcontrol.ReasonSaturated || !strings.Contains(rej.Msg, "full") {
		t.Errorf("rejection %+v", rej)
	}
	// Another band has room of its own.
	h.send(context.Background(), "i", "interactive", "t")
	if _, done := h.result("i"); done {
		t.Error("a request of another band was refused for this band's capacity")
	}

	hb := newHarness(t, 1, flowcontrol.Config{Objectives: classes, MaxBytesPerBand: 1500})
	saturate(hb, 2)
	hb.send(context.Background(), "b-0", "standard", "t") // 5 bytes of prompt + 512 of overhead
	hb.send(context.Background(), "b-1", "standard", "t")
	hb.send(context.Background(), "b-2", "standard", "t")
	if r, done := hb.result("b-2"); !done || rejection(t, r.err).Status != 429 {
		t.Errorf("the request over the byte capacity: %+v, %v", r, done)
	}
}

func TestShedding(t *testing.T) {
	h := newHarness(t, 1, flowcontrol.Config{Objectives: classes})
	h.send(context.Background(), "b-free", "batch", "t")
	if r, _ := h.result("b-free"); r.err != nil {
		t.Fatalf("a sheddable request was refused with room: %v", r.err)
	}
	saturate(h, 1)
	h.send(context.Background(), "b-sat", "batch", "t")
	r, done := h.result("b-sat")
	if !done {
		t.Fatal("a sheddable request waits under saturation")
	}
	if rej := rejection(t, r.err); rej.Status != 429 || rej.Reason != flowcontrol.ReasonSaturated {
		t.Errorf("rejection %+v", rej)
	}
	// Nor does it pass a higher band that waits, even when room frees.
	h.send(context.Background(), "s", "standard", "t")
	h.firstToken("b-free")
	h.send(context.Background(), "b-behind", "batch", "t")
	if r, done := h.result("b-behind"); done && r.err == nil {
		t.Error("a sheddable request overtook a higher band's")
	}
}

// Unknown and missing objectives take the configured default.
func TestDefaultObjective(t *testing.T) {
	h := newHarness(t, 1, flowcontrol.Config{Objectives: classes, DefaultObjective: "batch"})
	saturate(h, 2)
	h.send(context.Background(), "x", "no-such-objective", "t")
	h.send(context.Background(), "y", "", "t")
	for _, id := range []string{"x", "y"} {
		r, done := h.result(id)
		if !done || rejection(t, r.err).Reason != flowcontrol.ReasonSaturated {
			t.Errorf("%s: %+v, %v: want shed as the default objective batch", id, r, done)
		}
	}
	if _, err := flowcontrol.New(flowcontrol.Config{Objectives: classes, DefaultObjective: "nope"}, flowcontrol.Options{Pool: h.pool}); err == nil {
		t.Error("a default objective that is not configured was accepted")
	}
}

// Whatever arrives and ends in whatever order, no replica's queue grows past the limit by
// more than one decision: checked after every event.
func TestNoOvershoot(t *testing.T) {
	const replicas, q = 4, 2
	h := newHarness(t, replicas, flowcontrol.Config{Objectives: classes})
	rng := rand.New(rand.NewPCG(7, 7))
	var started []string // dispatched, first token not yet seen
	var decoding []string
	seen := 0
	for ev := range 5000 {
		h.clk.advance(time.Millisecond)
		switch k := rng.IntN(10); {
		case k < 5:
			objs := []string{"interactive", "standard", "batch"}
			h.send(context.Background(), fmt.Sprintf("r-%d", ev), objs[rng.IntN(3)], fmt.Sprintf("t%d", rng.IntN(5)))
		case k < 8 && len(started) > 0:
			i := rng.IntN(len(started))
			h.firstToken(started[i])
			decoding = append(decoding, started[i])
			started = append(started[:i], started[i+1:]...)
		case k < 9 && len(decoding) > 0:
			i := rng.IntN(len(decoding))
			r, _ := h.result(decoding[i])
			r.flight.End(h.clk.Now(), requestcontrol.End{Outcome: requestcontrol.OutcomeOK, Status: 200})
			decoding = append(decoding[:i], decoding[i+1:]...)
		default:
			h.scrape()
		}
		// What this event dispatched is not streaming yet.
		known := map[string]bool{}
		for _, id := range started {
			known[id] = true
		}
		for _, id := range h.dispatched()[seen:] {
			if !known[id] {
				started = append(started, id)
			}
		}
		seen = len(h.dispatched())
		for i, w := range h.waiting() {
			if w > q {
				t.Fatalf("event %d: replica %d holds %d waiting, limit %d", ev, i, w, q)
			}
		}
	}
}

// Concurrent arrivals: dispatch is serialised, so the limit holds with many goroutines.
func TestNoOvershootConcurrent(t *testing.T) {
	h := newHarness(t, 4, flowcontrol.Config{Objectives: classes})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				h.send(context.Background(), fmt.Sprintf("g%d-%d", g, i), "standard", fmt.Sprintf("t%d", g))
			}
		}()
	}
	wg.Wait()
	if d := len(h.dispatched()); d != 8 {
		t.Errorf("%d dispatched into 4 replicas of room 2, want 8", d)
	}
	for i, w := range h.waiting() {
		if w > 2 {
			t.Errorf("replica %d holds %d waiting, limit 2", i, w)
		}
	}
}

// 10,000 requests cancelled while queued or failed after dispatch leave nothing behind: no
// queued request, flow, timer or in-flight load.
func TestNoPhantomOccupancy(t *testing.T) {
	h := newHarness(t, 4, flowcontrol.Config{Objectives: classes})
	var cancels []context.CancelFunc
	for i := range 10_000 {
		ctx, cancel := context.WithCancel(context.Background())
		cancels = append(cancels, cancel)
		h.send(ctx, fmt.Sprintf("p-%d", i), []string{"interactive", "standard"}[i%2], fmt.Sprintf("tenant-%d", i%97))
		if i%10 == 9 {
			// Every tenth step the dispatched requests fail upstream and room frees.
			for _, id := range h.dispatched() {
				if r, _ := h.result(id); r.flight != nil {
					r.flight.End(h.clk.Now(), requestcontrol.End{Outcome: requestcontrol.OutcomeUpstreamError, Status: 502})
				}
			}
			h.scrape()
		}
	}
	for _, c := range cancels {
		c()
	}
	deadline := time.Now().Add(30 * time.Second)
	for h.fc.Stats().Queued() > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // cancellations land on their own goroutines
	}
	for _, id := range h.dispatched() {
		if r, _ := h.result(id); r.flight != nil {
			r.flight.End(h.clk.Now(), requestcontrol.End{Outcome: requestcontrol.OutcomeUpstreamError, Status: 502})
		}
	}
	s := h.fc.Stats()
	for _, b := range s.Bands {
		if b.Requests != 0 || b.Bytes != 0 || b.Flows != 0 {
			t.Errorf("band %d keeps %+v", b.Priority, b)
		}
	}
	for _, r := range h.pool.Replicas() {
		if l := r.Load(); !l.Idle() {
			t.Errorf("replica %s keeps load %+v", r.Name, l)
		}
	}
	if got := h.clk.pending(); got != 0 {
		t.Errorf("%d timers still armed", got)
	}
	h.mu.Lock()
	n := len(h.seen)
	h.mu.Unlock()
	if n != 10_000 {
		t.Errorf("%d of 10000 requests resumed", n)
	}
}

// With every replica's metrics stale and the saturated policy, requests wait (they are not
// refused, and dispatch does not halt for good): fresh metrics resume them.
func TestStaleMetricsHoldThenResume(t *testing.T) {
	h := newHarness(t, 2, flowcontrol.Config{Objectives: classes,
		Saturation: flowcontrol.Saturation{Stale: flowcontrol.StaleSaturated, StaleAfter: metav1(time.Second)}})
	h.clk.advance(2 * time.Second)
	h.send(context.Background(), "s", "standard", "t")
	if _, done := h.result("s"); done {
		t.Fatal("dispatched on stale metrics under the saturated policy")
	}
	if st := h.fc.Stats().Saturation; !st.Saturated || st.Stale != 2 {
		t.Errorf("saturation %+v", st)
	}
	h.scrape()
	if r, done := h.result("s"); !done || r.err != nil {
		t.Errorf("not dispatched once metrics were fresh: %+v, %v", r, done)
	}
}

// llm-d's design reproduced: one dispatch per tick, on scraped metrics alone.
func TestTickerModeOnePerTick(t *testing.T) {
	h := newHarness(t, 2, flowcontrol.Config{Objectives: classes, Mode: flowcontrol.ModeTicker})
	for i := range 5 {
		h.send(context.Background(), fmt.Sprintf("t-%d", i), "standard", "t")
	}
	if d := len(h.dispatched()); d != 0 {
		t.Fatalf("%d dispatched before the first tick", d)
	}
	for tick := 1; tick <= 5; tick++ {
		h.clk.advance(time.Millisecond)
		if d := len(h.dispatched()); d != tick {
			t.Fatalf("after %d ticks %d dispatched", tick, d)
		}
	}
	if got := h.clk.pending(); got != 0 {
		t.Errorf("the ticker keeps %d timers with nothing queued", got)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []flowcontrol.Config{
		{Mode: "busy"}, {Fairness: "lottery"}, {Ordering: "lifo"}, {Saturation: flowcontrol.Saturation{Stale: "ignore"}},
		{Saturation: flowcontrol.Saturation{KVCache: 2}}, {Saturation: flowcontrol.Saturation{QueuePerReplica: math.NaN()}},
		{TTL: metav1(-time.Second)}, {MaxRequestsPerBand: -1}, {FlowWeights: map[string]float64{"a": 0}},
		{Objectives: map[string]flowcontrol.Objective{"x": {TTFTMs: -1}}},
	} {
		h := newHarness(t, 1, flowcontrol.Config{})
		if _, err := flowcontrol.New(c, flowcontrol.Options{Pool: h.pool}); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

func flows(s flowcontrol.Stats) int {
	n := 0
	for _, b := range s.Bands {
		n += b.Flows
	}
	return n
}
