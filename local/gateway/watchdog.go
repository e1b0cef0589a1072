package gateway

import (
	"sync"
	"time"
)

// watchdog enforces MessageTimeout. Each message the gateway sends that owes
// it a phase-completing answer calls expect before sending; the matching
// answer calls satisfy. While anything is owed, the picker must not stay
// silent for longer than the timeout: any message from it calls progress and
// restarts the clock. Nothing owed means no clock, so a slow upstream between
// two tokens never trips it.
type watchdog struct {
	mu      sync.Mutex
	timeout time.Duration
	pending int
	timer   *time.Timer
}

func newWatchdog(timeout time.Duration, fire func()) *watchdog {
	t := time.AfterFunc(timeout, fire)
	t.Stop()
	return &watchdog{timeout: timeout, timer: t}
}

func (w *watchdog) expect() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pending++
	if w.pending == 1 {
		w.timer.Reset(w.timeout)
	}
}

func (w *watchdog) satisfy() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.pending == 0 {
		return
	}
	w.pending--
	if w.pending == 0 {
		w.timer.Stop()
	} else {
		w.timer.Reset(w.timeout)
	}
}

func (w *watchdog) progress() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.pending > 0 {
		w.timer.Reset(w.timeout)
	}
}

func (w *watchdog) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pending = 0
	w.timer.Stop()
}
