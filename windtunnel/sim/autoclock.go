package sim

import (
	"sync"
	"time"

	"k8s.io/utils/clock"
)

var _ clock.Clock = (*AutoClock)(nil)

// AutoClock is a virtual clock on which every wait ends at once by moving time forward, so an
// engine run alone (tests, tools) goes as fast as the CPU allows while its timestamps follow
// the latency model exactly. It allocates nothing per step, which keeps benchmarks clean.
type AutoClock struct {
	mu  sync.Mutex
	now time.Time
}

// NewAutoClock returns an AutoClock reading start.
func NewAutoClock(start time.Time) *AutoClock { return &AutoClock{now: start} }

func (c *AutoClock) advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

// Now, Since, Sleep, After and NewTimer implement clock.Clock; a wait moves time forward.
func (c *AutoClock) Now() time.Time                  { return c.advance(0) }
func (c *AutoClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }
func (c *AutoClock) Sleep(d time.Duration)           { c.advance(d) }
func (c *AutoClock) Tick(time.Duration) <-chan time.Time {
	panic("sim.AutoClock: Tick is not supported")
}

func (c *AutoClock) After(d time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	ch <- c.advance(d)
	return ch
}

func (c *AutoClock) NewTimer(d time.Duration) clock.Timer {
	t := &autoTimer{c: c, ch: make(chan time.Time, 1)}
	t.Reset(d)
	return t
}

type autoTimer struct {
	c  *AutoClock
	ch chan time.Time
}

func (t *autoTimer) C() <-chan time.Time { return t.ch }
func (t *autoTimer) Stop() bool          { return false }
func (t *autoTimer) Reset(d time.Duration) bool {
	now := t.c.advance(d)
	select {
	case t.ch <- now:
	default:
	}
	return false
}
