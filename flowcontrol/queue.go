package flowcontrol

import (
	"context"
	"math"
	"time"

	"github.com/augur-llm/augur/scheduler"
)

// item is one held request.
type item struct {
	ctx      context.Context
	req      *scheduler.Request
	resume   func(error)
	band     *band
	flow     *flow
	arrived  time.Time
	deadline time.Time // arrival + TTFT objective; zero without one
	key      int64     // ordering key inside the flow
	seq      uint64
	bytes    int64
	index    int // in the flow's heap; -1 once it left the queue
	stopTTL  func() bool
	stopCtx  func() bool
	// defers counts the times it was taken back during its dispatch (Controller.Defer);
	// a dispatch that sees it change leaves the report to whoever took it back.
	defers int
}

// flow is one fairness id's queue inside a band.
type flow struct {
	id     string
	weight float64
	// vt is the flow's virtual time: the service it has had, in dispatches / weight. The
	// band serves the backlogged flow with the least, so equal weights take turns.
	vt    float64
	items itemHeap
}

// band is one priority's queue.
type band struct {
	priority int
	label    string
	flows    map[string]*flow
	active   []*flow // flows with items, in the order they became active
	vt       float64 // the virtual time of the latest dispatch
	n        int
	bytes    int64
}

func (b *band) push(it *item) {
	f := it.flow
	if len(f.items) == 0 {
		// A flow that was idle does not bank service: it starts level with the band.
		f.vt = math.Max(f.vt, b.vt)
		b.active = append(b.active, f)
	}
	f.items.push(it)
	b.n++
	b.bytes += it.bytes
}

// head returns the item the band would serve next, without taking it.
func (b *band) head() *item {
	var best *flow
	for _, f := range b.active {
		if best == nil || f.vt < best.vt {
			best = f
		}
	}
	if best == nil {
		return nil
	}
	return best.items[0]
}

// remove takes it out of the band; dispatched says whether it counts as service.
func (b *band) remove(it *item, dispatched bool) {
	f := it.flow
	f.items.remove(it)
	b.n--
	b.bytes -= it.bytes
	if dispatched {
		f.vt += 1 / f.weight
		b.vt = math.Max(b.vt, f.vt-1/f.weight)
	}
	if len(f.items) == 0 {
		for i, a := range b.active {
			if a == f {
				b.active = append(b.active[:i], b.active[i+1:]...)
				break
			}
		}
		// Nothing of an idle flow is kept, so a stream of distinct fairness ids leaves
		// nothing behind.
		delete(b.flows, f.id)
	}
}

// itemHeap orders a flow's items by key, then arrival.
type itemHeap []*item

func (h itemHeap) less(i, j int) bool {
	if h[i].key != h[j].key {
		return h[i].key < h[j].key
	}
	return h[i].seq < h[j].seq
}

func (h itemHeap) swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}

func (h *itemHeap) push(it *item) {
	it.index = len(*h)
	*h = append(*h, it)
	h.up(it.index)
}

func (h *itemHeap) remove(it *item) {
	i, n := it.index, len(*h)-1
	if i != n {
		h.swap(i, n)
	}
	(*h)[n] = nil
	*h = (*h)[:n]
	it.index = -1
	if i != n {
		if !h.down(i) {
			h.up(i)
		}
	}
}

func (h itemHeap) up(j int) {
	for j > 0 {
		i := (j - 1) / 2
		if !h.less(j, i) {
			break
		}
		h.swap(i, j)
		j = i
	}
}

func (h itemHeap) down(i0 int) bool {
	i, n := i0, len(h)
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		j := l
		if r := l + 1; r < n && h.less(r, l) {
			j = r
		}
		if !h.less(j, i) {
			break
		}
		h.swap(i, j)
		i = j
	}
	return i > i0
}
