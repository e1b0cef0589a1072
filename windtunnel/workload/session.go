package workload

import (
	"container/heap"
	"math/rand/v2"
	"time"

	"github.com/augur-llm/augur/tokens"
)

// session is one conversation or agent run in progress.
type session struct {
	id      string
	order   int // creation order, to break ties between sessions due at the same instant
	history []tokens.Message
	turn    int // the next turn's index
	turns   int // how many turns the session has in all
	due     time.Duration
	think   time.Duration // the gap before the due turn
	block   int           // the agent's tool block
	task    string        // the text the simulator echoes (the last user message)
}

// sessionQueue merges session starts (a Poisson process) with the sessions' later turns into
// one stream in arrival order. The caller opens sessions and takes their turns; the queue only
// decides which comes next.
type sessionQueue struct {
	ladder    Ladder
	end       time.Duration
	starts    *Poisson
	nextStart time.Duration
	hasStart  bool
	pending   sessionHeap
	opened    int
}

func newSessionQueue(ladder Ladder, starts *Poisson) *sessionQueue {
	q := &sessionQueue{ladder: ladder, end: ladder.Duration(), starts: starts}
	q.nextStart, _, q.hasStart = starts.Next()
	return q
}

// next returns the session whose turn comes next: a new one (fresh, with order set and
// due = its start) or one from the queue. A session is due no later than the ladder's end.
func (q *sessionQueue) next() (s *session, fresh bool, ok bool) {
	if len(q.pending) > 0 && (!q.hasStart || q.pending[0].due <= q.nextStart) {
		return heap.Pop(&q.pending).(*session), false, true
	}
	if !q.hasStart {
		return nil, false, false
	}
	s = &session{order: q.opened, due: q.nextStart}
	q.opened++
	q.nextStart, _, q.hasStart = q.starts.Next()
	return s, true, true
}

// requeue schedules the session's next turn after gap, or drops it when that falls beyond the
// ladder's end (the run is over; its later turns are never sent).
func (q *sessionQueue) requeue(s *session, gap time.Duration) {
	if gap < 0 || s.due+gap >= q.end {
		return
	}
	s.due += gap
	s.think = gap
	heap.Push(&q.pending, s)
}

type sessionHeap []*session

func (h sessionHeap) Len() int { return len(h) }
func (h sessionHeap) Less(i, j int) bool {
	if h[i].due != h[j].due {
		return h[i].due < h[j].due
	}
	return h[i].order < h[j].order
}
func (h sessionHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *sessionHeap) Push(x any)   { *h = append(*h, x.(*session)) }
func (h *sessionHeap) Pop() any {
	old := *h
	s := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return s
}

// snapshot is the history as a request carries it: capped, so that a consumer appending to
// the request's messages cannot overwrite the session's later turns.
func snapshot(h []tokens.Message) []tokens.Message { return h[:len(h):len(h)] }

// expDuration draws an exponential duration with the given mean.
func expDuration(r *rand.Rand, mean time.Duration) time.Duration {
	return time.Duration(r.ExpFloat64() * float64(mean))
}
