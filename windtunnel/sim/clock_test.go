package sim

import (
	"sync"
	"testing"
	"time"

	"k8s.io/utils/clock"
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func newAutoClock() *AutoClock { return NewAutoClock(epoch) }

// manualClock lets a test run an engine one step at a time: a timer fires only when the test
// calls step, and time moves by exactly the timer's duration. While a timer is armed the
// engine has planned the step and released its lock, so Snapshot shows that step's state.
type manualClock struct {
	mu      sync.Mutex
	now     time.Time
	pending *manualTimer
	d       time.Duration
}

var _ clock.Clock = (*manualClock)(nil)

func newManualClock() *manualClock { return &manualClock{now: epoch} }

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}
func (c *manualClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }
func (c *manualClock) Sleep(time.Duration)             { panic("manualClock: Sleep is not supported") }
func (c *manualClock) After(time.Duration) <-chan time.Time {
	panic("manualClock: After is not supported")
}
func (c *manualClock) Tick(time.Duration) <-chan time.Time {
	panic("manualClock: Tick is not supported")
}

func (c *manualClock) NewTimer(d time.Duration) clock.Timer {
	t := &manualTimer{c: c, ch: make(chan time.Time, 1)}
	t.Reset(d)
	return t
}

// step waits until the engine arms a timer, fires it and reports true; it reports false if
// idle() becomes true first.
func (c *manualClock) step(t testing.TB, idle func() bool) bool {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		if p := c.pending; p != nil {
			c.pending = nil
			c.now = c.now.Add(c.d)
			p.ch <- c.now
			c.mu.Unlock()
			return true
		}
		c.mu.Unlock()
		if idle() {
			return false
		}
		time.Sleep(50 * time.Microsecond)
	}
	t.Fatal("manualClock: no timer armed within 10s")
	return false
}

// armed waits until the engine has armed its next timer.
func (c *manualClock) armed(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		p := c.pending
		c.mu.Unlock()
		if p != nil {
			return
		}
		time.Sleep(50 * time.Microsecond)
	}
	t.Fatal("manualClock: no timer armed within 10s")
}

type manualTimer struct {
	c  *manualClock
	ch chan time.Time
}

func (t *manualTimer) C() <-chan time.Time { return t.ch }
func (t *manualTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	if t.c.pending == t {
		t.c.pending = nil
		return true
	}
	return false
}
func (t *manualTimer) Reset(d time.Duration) bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	t.c.pending, t.c.d = t, d
	return false
}
