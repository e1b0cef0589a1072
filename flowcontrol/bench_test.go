//go:build unix

package flowcontrol_test

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/augur-llm/augur/flowcontrol"
	"github.com/augur-llm/augur/pool"
	"github.com/augur-llm/augur/scheduler"
)

// benchPool is one replica with fresh metrics (for an hour) and nothing waiting.
func benchPool(b *testing.B) (*pool.Pool, *pool.Replica) {
	p := pool.New(realClock{}, time.Hour)
	if err := p.Set([]pool.Endpoint{{Name: "r0", Address: "10.0.0.1:8000"}}); err != nil {
		b.Fatal(err)
	}
	r := p.Replicas()[0]
	r.SetMetrics(pool.Metrics{ScrapedAt: time.Now()})
	return p, r
}

type realClock struct{}

func (realClock) Now() time.Time                  { return time.Now() }
func (realClock) Since(t time.Time) time.Duration { return time.Since(t) }

// BenchmarkAdmitDispatch is what flow control adds to a request with 10,000 others waiting:
// each operation admits one request into the full band (its TTL timer and client watch
// armed) and, room having freed, dispatches the band's head. Scheduling is not included: the
// resume only credits the replica, as the lifecycle would.
func BenchmarkAdmitDispatch(b *testing.B) {
	p, r := benchPool(b)
	fc, err := flowcontrol.New(flowcontrol.Config{Objectives: classes, Saturation: flowcontrol.Saturation{QueuePerReplica: 1}, TTL: metav1(time.Hour), MaxRequestsPerBand: 20_000},
		flowcontrol.Options{Pool: p})
	if err != nil {
		b.Fatal(err)
	}
	var lease *pool.Lease
	resume := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
		lease = r.Dispatch(time.Now(), pool.Work{PromptTokens: 100, UncachedTokens: 100})
	}
	ctx := context.Background()
	reqs := make([]scheduler.Request, 10_000+b.N+1)
	for i := range reqs {
		reqs[i] = scheduler.Request{ID: fmt.Sprint(i), Objective: "standard", FairnessID: fmt.Sprintf("tenant-%d", i%16), Prompt: []byte("hello")}
	}
	fc.Admit(ctx, &reqs[0], resume) // takes the room
	for i := 1; i <= 10_000; i++ {
		fc.Admit(ctx, &reqs[i], resume)
	}
	if q := fc.Stats().Queued(); q != 10_000 {
		b.Fatalf("%d queued, want 10000", q)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		lease.FirstToken(time.Now()) // room for one
		lease.Release()
		fc.Admit(ctx, &reqs[10_001+i], resume)
	}
	b.StopTimer()
	if q := fc.Stats().Queued(); q != 10_000 {
		b.Fatalf("%d queued after the run, want 10000", q)
	}
}

// BenchmarkIdleCPU measures the process's CPU over 10 s of a flow controller holding 1,000
// requests on a saturated pool with nothing happening: the event-driven design against
// llm-d's 1 ms ticker. Run it alone: -bench IdleCPU -benchtime 1x.
func BenchmarkIdleCPU(b *testing.B) {
	for _, mode := range []string{flowcontrol.ModeEvents, flowcontrol.ModeTicker} {
		b.Run(mode, func(b *testing.B) {
			p, r := benchPool(b)
			r.SetMetrics(pool.Metrics{ScrapedAt: time.Now().Add(time.Hour), Waiting: 10}) // saturated for both detectors
			fc, err := flowcontrol.New(flowcontrol.Config{Objectives: classes, Mode: mode, TTL: metav1(time.Hour),
				Saturation: flowcontrol.Saturation{StaleAfter: metav1(2 * time.Hour)}}, flowcontrol.Options{Pool: p})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			for i := range 1000 {
				req := scheduler.Request{ID: fmt.Sprint(i), Objective: "standard", FairnessID: "t"}
				fc.Admit(ctx, &req, func(error) {})
			}
			for range b.N {
				before := cpu(b)
				time.Sleep(10 * time.Second)
				used := cpu(b) - before
				b.ReportMetric(100*used.Seconds()/10, "%core")
			}
		})
	}
}

func cpu(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
