package schedulertest

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/augur-llm/augur/pool"
	"github.com/augur-llm/augur/scheduler"
)

// DecisionOptions shape a Decision.
type DecisionOptions struct {
	// Replicas in the pool (default 64).
	Replicas int
	// Classes are the replicas' classes, assigned in turn (default none).
	Classes []string
	// Profile is the built-in profile that decides (default "llm-d": prefix 3, queue 2,
	// KV usage 2).
	Profile string
	// Predictor, when set, returns the scheduler's predictor, given the pool's clock.
	Predictor func(clock.PassiveClock) scheduler.Predictor
}

// Decision is a scheduler over a pool of replicas with scraped metrics, requests in flight
// (some decoding, so that their step times are known) and warm prefix records, and the
// 8,000-token prompts the benchmarks ask it to place. The clock stands still: every decision
// sees the same pool.
type Decision struct {
	Pool      *pool.Pool
	Clock     *clocktesting.FakeClock
	Scheduler *scheduler.Scheduler
	Prompts   [][]byte
}

// PromptTokens is the length of every prompt of a Decision, by the token rule.
const PromptTokens = 8000

// NewDecision builds the pool and scheduler o describes and warms every replica's prefix
// record with 256 decisions.
func NewDecision(tb testing.TB, o DecisionOptions) *Decision {
	tb.Helper()
	if o.Replicas <= 0 {
		o.Replicas = 64
	}
	if o.Profile == "" {
		o.Profile = "llm-d"
	}
	start := time.Unix(1_700_000_000, 0)
	clk := clocktesting.NewFakeClock(start)
	p := pool.New(clk, time.Second)
	eps := make([]pool.Endpoint, o.Replicas)
	for i := range eps {
		eps[i] = pool.Endpoint{Name: fmt.Sprint("r", i), Address: fmt.Sprintf("10.0.%d.%d:8000", i/250, i%250+1)}
		if len(o.Classes) > 0 {
			eps[i].Class = o.Classes[i%len(o.Classes)]
		}
	}
	if err := p.Set(eps); err != nil {
		tb.Fatal(err)
	}
	// Requests in flight: i%5 per replica, dispatched over the last second; every other one
	// is decoding and has streamed a few tokens, 20-40 ms apart.
	for i, r := range p.Replicas() {
		for k := range i % 5 {
			at := start.Add(time.Duration(k*200+i) * time.Millisecond)
			l := r.Dispatch(at, pool.Work{PromptTokens: 1000 + 500*k, UncachedTokens: 300 + 200*k, MaxTokens: 200})
			if k%2 == 0 {
				l.FirstToken(at.Add(50 * time.Millisecond))
				for n := 2; n <= 4; n++ {
					l.Generated(at.Add(time.Duration(50+n*(20+i%3*10))*time.Millisecond), n)
				}
			}
		}
	}
	clk.SetTime(start.Add(1200 * time.Millisecond))
	for i, r := range p.Replicas() {
		r.SetMetrics(pool.Metrics{Running: i % 7, Waiting: i % 3, KVUsage: float64(i%10) / 10, BlockSize: 16, NumGPUBlocks: 20000,
			ScrapedAt: clk.Now().Add(-time.Duration(i%5) * 10 * time.Millisecond)})
	}
	var pred scheduler.Predictor
	if o.Predictor != nil {
		pred = o.Predictor(clk)
	}
	prof, err := scheduler.DefaultRegistry().Build(scheduler.BuiltinProfiles()[o.Profile], scheduler.Handle{Seed: 1, Pool: p, Clock: clk, Predictor: pred}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := scheduler.NewWithPredictor(p, prof, 0, pred)
	if err != nil {
		tb.Fatal(err)
	}
	d := &Decision{Pool: p, Clock: clk, Scheduler: s, Prompts: make([][]byte, 16)}
	for i := range d.Prompts {
		d.Prompts[i] = []byte(strings.Repeat(fmt.Sprintf("system prompt %d ", i%4), PromptTokens*4/16+1)[:PromptTokens*4])
	}
	for i := range 256 { // warm every replica's record
		if _, err := d.Decide(i); err != nil {
			tb.Fatal(err)
		}
	}
	return d
}

// Decide is decision i: prompt i%16 scheduled, and the primary told to its profile's
// observers (the prefix record learns the prompt), as the request lifecycle does.
func (d *Decision) Decide(i int) (scheduler.Result, error) {
	req := d.Request(i)
	res, err := d.Scheduler.Schedule(context.Background(), req, nil)
	if err == nil {
		res.Profile.Dispatched(context.Background(), req, res.Targets[0])
	}
	return res, err
}

// Request is decision i's request.
func (d *Decision) Request(i int) *scheduler.Request {
	return &scheduler.Request{Prompt: d.Prompts[i%len(d.Prompts)], PromptTokens: PromptTokens, MaxTokens: 256, Stream: true}
}

// Run times decisions for b and reports, besides the mean, the median and 99th percentile
// decision in microseconds of wall time (p50-us, p99-us) and the allocations. Every eighth
// decision is timed in CPU time of the thread instead (cpu-p50-us, cpu-p99-us, on Linux): what
// the decision costs without the waits for a core that other processes on a busy machine add
// to the wall time. Those decisions are left out of the wall-time percentiles, as reading the
// thread's clock is a system call.
func (d *Decision) Run(b *testing.B) {
	runtime.LockOSThread() // the thread's CPU clock must be this goroutine's
	defer runtime.UnlockOSThread()
	lat := make([]time.Duration, 0, 1<<16)
	cpu := make([]time.Duration, 0, 1<<13)
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		if i%8 == 7 {
			c0, ok := threadCPU()
			if _, err := d.Decide(i); err != nil {
				b.Fatal(err)
			}
			if c1, _ := threadCPU(); ok && len(cpu) < cap(cpu) {
				cpu = append(cpu, c1-c0)
			}
		} else {
			start := time.Now()
			if _, err := d.Decide(i); err != nil {
				b.Fatal(err)
			}
			if len(lat) < cap(lat) {
				lat = append(lat, time.Since(start))
			}
		}
		i++
	}
	b.StopTimer()
	report := func(lat []time.Duration, unit string) {
		slices.Sort(lat)
		if len(lat) > 0 {
			b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, unit+"p50-us")
			b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, unit+"p99-us")
		}
	}
	report(lat, "")
	report(cpu, "cpu-")
}
