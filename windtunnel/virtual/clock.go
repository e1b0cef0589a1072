package virtual

import "time"

// vclock is the run's virtual time, read by the pool for metric staleness.
type vclock struct{ now time.Time }

func (c *vclock) Now() time.Time                  { return c.now }
func (c *vclock) Since(t time.Time) time.Duration { return c.now.Sub(t) }
