package scheduler

import (
	"context"

	"github.com/augur-llm/augur/pool"
)

// RoomFilter keeps a replica's own queue short: it removes candidates whose waiting requests
// (what the last scrape showed, plus this picker's dispatches since, less the first tokens
// streamed since) have reached QueuePerReplica, unless every candidate has. Flow control adds
// it to the profile, so that requests wait in the picker's queues, where priority and
// fairness order them, rather than in a replica's, where they are first come first served;
// without it a packing policy could fill one replica's queue while flow control sees room in
// the others.
//
// A replica whose recent steps (Load.Steps.Fast) take more than StepShare of the tightest
// TPOT objective among the streams running there has no room either: every stream there
// already decodes near its objective, and a new prompt's prefill would slow them all. 0
// disables this.
type RoomFilter struct {
	QueuePerReplica float64 `json:"queuePerReplica"`
	StepShare       float64 `json:"stepShare,omitempty"`
}

// Name implements Filter.
func (RoomFilter) Name() string { return "room-filter" }

// Waiting is the requests c's replica is estimated to hold waiting now.
func Waiting(c *Candidate) int64 {
	since := c.Load.Counts.Since(c.Metrics.Counts)
	return max(0, int64(c.Metrics.Waiting)+since.Dispatched-since.FirstTokens)
}

// HasRoom reports whether a replica estimated to hold waiting requests waiting, with load,
// has room under a queue limit of queue and a step share of stepShare (see RoomFilter).
func HasRoom(waiting int64, load *pool.Load, queue, stepShare float64) bool {
	if float64(waiting) >= queue {
		return false
	}
	lim := load.TightestTPOTObjective
	return stepShare <= 0 || lim <= 0 || float64(load.Steps.Fast) <= stepShare*float64(lim)
}

func (f RoomFilter) room(c *Candidate) bool {
	return HasRoom(Waiting(c), &c.Load, f.QueuePerReplica, f.StepShare)
}

// Filter implements Filter.
func (f RoomFilter) Filter(_ context.Context, _ *Request, cands []Candidate) []Candidate {
	n := 0
	for i := range cands {
		if f.room(&cands[i]) {
			n++
		}
	}
	if n == 0 || n == len(cands) {
		return cands
	}
	out := cands[:0]
	for i := range cands {
		if f.room(&cands[i]) {
			out = append(out, cands[i])
		}
	}
	return out
}
