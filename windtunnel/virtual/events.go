package virtual

import (
	"container/heap"
	"time"
)

type eventKind uint8

const (
	evArrival eventKind = iota
	evStepEnd
	evScrape
	evTimer
)

type event struct {
	at      time.Time
	seq     uint64 // ties broken by insertion order, so runs are deterministic
	kind    eventKind
	replica int
	timer   *vtimer // evTimer's
}

// vtimer is a flow-control timer on the virtual clock.
type vtimer struct {
	f       func()
	stopped bool
}

// timers gives flow control the run's clock: its timers are events.
type timers struct{ r *run }

func (t timers) Now() time.Time { return t.r.clk.now }

func (t timers) AfterFunc(d time.Duration, f func()) func() bool {
	vt := &vtimer{f: f}
	t.r.q.push(event{at: t.r.clk.now.Add(d), kind: evTimer, timer: vt})
	return func() bool {
		was := !vt.stopped
		vt.stopped = true
		return was
	}
}

// events is a min-heap of events by time.
type events []event

func (q events) Len() int { return len(q) }
func (q events) Less(i, j int) bool {
	if !q[i].at.Equal(q[j].at) {
		return q[i].at.Before(q[j].at)
	}
	return q[i].seq < q[j].seq
}
func (q events) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *events) Push(x any)   { *q = append(*q, x.(event)) }
func (q *events) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

type queue struct {
	h   events
	seq uint64
}

func (q *queue) push(e event) {
	q.seq++
	e.seq = q.seq
	heap.Push(&q.h, e)
}

func (q *queue) pop() event { return heap.Pop(&q.h).(event) }
