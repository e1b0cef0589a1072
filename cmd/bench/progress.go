package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// progress draws a one-line bar on a terminal: how much of the run's time has passed.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	total time.Duration
	on    bool
	last  time.Time
}

func newProgress(w io.Writer, total time.Duration, on bool) *progress {
	return &progress{w: w, total: total, on: on}
}

func (p *progress) update(elapsed time.Duration, arrived, completed int) {
	if !p.on || p.total <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Since(p.last) < 100*time.Millisecond {
		return // redraw at most ten times a second
	}
	p.last = time.Now()
	p.draw(elapsed, arrived, completed)
}

func (p *progress) draw(elapsed time.Duration, arrived, completed int) {
	frac := min(1, float64(elapsed)/float64(p.total))
	const width = 30
	n := int(frac * width)
	fmt.Fprintf(p.w, "\r[%s%s] %3.0f%%  %s/%s  arrived %d  completed %d ", strings.Repeat("#", n), strings.Repeat(".", width-n),
		100*frac, elapsed.Round(time.Second), p.total.Round(time.Second), arrived, completed)
}

// finish draws the final state, whatever the redraw rate allowed before, and ends the line.
func (p *progress) finish(requests, completed int) {
	if !p.on || p.total <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.draw(p.total, requests, completed)
	fmt.Fprintln(p.w)
}
