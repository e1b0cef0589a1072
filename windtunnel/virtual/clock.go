package virtual

import "time"

// Clock is a run's virtual time, read by the pool for metric staleness. Run moves it as
// events happen; pass one in Config.Clock to what is built before the run and must read the
// run's time, such as a latency predictor (it satisfies k8s.io/utils/clock.PassiveClock).
type Clock struct{ now time.Time }

// Now is the virtual instant of the event being handled.
func (c *Clock) Now() time.Time { return c.now }

// Since is Now less t.
func (c *Clock) Since(t time.Time) time.Duration { return c.now.Sub(t) }
