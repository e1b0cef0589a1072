package picker

import (
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/augur-llm/augur/flowcontrol"
)

// flowClock gives flow control the picker's clock, so that its TTL timers and the times it
// measures run on the same time line as everything else the picker does (tests step a fake
// clock and expect flow control to follow).
func flowClock(c clock.WithTicker) flowcontrol.Clock {
	if _, ok := c.(clock.RealClock); ok {
		return flowcontrol.RealClock{}
	}
	return k8sClock{c}
}

// k8sClock adapts a k8s.io/utils clock to flowcontrol.Clock.
type k8sClock struct{ clock.WithTicker }

// AfterFunc runs f after d on c. flowcontrol.Clock wants f on a goroutine of its own, never
// inside the call that fires it: k8s's fake clock runs AfterFunc callbacks while it holds its
// lock (inside Step), where f's first call to Now would deadlock. A clock without AfterFunc
// gets a timer and a goroutine waiting on it.
func (c k8sClock) AfterFunc(d time.Duration, f func()) func() bool {
	if dc, ok := c.WithTicker.(clock.WithDelayedExecution); ok {
		return dc.AfterFunc(d, func() { go f() }).Stop
	}
	t := c.NewTimer(d)
	stopped := make(chan struct{})
	var once sync.Once
	go func() {
		select {
		case <-t.C():
			f()
		case <-stopped:
		}
	}()
	return func() bool {
		pending := t.Stop()
		once.Do(func() { close(stopped) })
		return pending
	}
}
