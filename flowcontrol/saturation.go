package flowcontrol

import (
	"time"

	"github.com/augur-llm/augur/pool"
	"github.com/augur-llm/augur/scheduler"
)

// Saturation is the detector's view of the pool at one instant.
type SaturationState struct {
	Saturated bool
	// Waiting is the requests estimated to wait in the replicas' own queues: what each
	// replica's last scrape showed waiting, plus the picker's dispatches to it since, less
	// the first tokens it streamed since (a request that streamed has left the queue).
	Waiting float64
	// Limit is QueuePerReplica for every replica that counts (fresh, or stale and judged by
	// the picker's own counts). The pool is saturated when no replica has room: every one
	// holds QueuePerReplica waiting or its KV cache is full.
	Limit float64
	// Fresh is the replicas with fresh metrics; Stale those without (failing included);
	// KVFull the fresh ones at or past the KV-cache threshold.
	Fresh, Stale, KVFull int
}

// detector decides saturation from the pool's metrics and the picker's own accounting. It
// is used under the controller's lock.
type detector struct {
	pool *pool.Pool
	cfg  *resolved
	// running is, per replica, the most requests a fresh scrape showed it running at once:
	// with StaleOwnCounts, what a replica whose metrics went stale is trusted to run.
	running map[*pool.Replica]int
}

func (d *detector) fresh(r *pool.Replica, m pool.Metrics, now time.Time) bool {
	if d.cfg.staleAfter > 0 {
		return !r.Failing() && !m.ScrapedAt.IsZero() && now.Sub(m.ScrapedAt) <= d.cfg.staleAfter
	}
	return d.pool.FreshAt(r, now)
}

func (d *detector) check(now time.Time) SaturationState {
	if d.cfg.Mode == ModeTicker {
		return d.utilization(now)
	}
	var s SaturationState
	q := d.cfg.Saturation.QueuePerReplica
	room := false
	for _, r := range d.pool.Replicas() {
		m, ok := r.Metrics()
		load := r.Load()
		if ok && d.fresh(r, m, now) {
			s.Fresh++
			since := load.Counts.Since(m.Counts)
			w := float64(max(0, int64(m.Waiting)+since.Dispatched-since.FirstTokens))
			s.Waiting += w
			s.Limit += q
			if m.KVUsage >= d.cfg.Saturation.KVCache {
				s.KVFull++
			} else if scheduler.HasRoom(int64(w), &load, q, d.cfg.Saturation.StepShare) {
				room = true
			}
			if m.Running > d.running[r] {
				d.running[r] = m.Running
			}
			continue
		}
		s.Stale++
		if d.cfg.Saturation.Stale != StaleOwnCounts {
			continue
		}
		// Stale: the picker's own requests in flight there against what it ran at once
		// when last seen; completions, which the picker sees without a scrape, free room.
		if run := d.running[r]; run > 0 && !r.Failing() {
			w := float64(max(0, load.Requests-int64(run)))
			s.Waiting += w
			s.Limit += q
			room = room || w < q
		}
	}
	s.Saturated = !room
	return s
}

// utilization is llm-d's detector: a replica has capacity when its metrics are fresh and
// its scraped waiting queue and KV usage are under their thresholds; the pool is saturated
// when none has. Dispatches since the scrape are not counted.
func (d *detector) utilization(now time.Time) SaturationState {
	var s SaturationState
	for _, r := range d.pool.Replicas() {
		m, ok := r.Metrics()
		if !ok || !d.fresh(r, m, now) {
			s.Stale++
			continue
		}
		s.Fresh++
		s.Waiting += float64(m.Waiting)
		s.Limit += d.cfg.Saturation.QueuePerReplica
		if m.KVUsage >= d.cfg.Saturation.KVCache {
			s.KVFull++
			continue
		}
		if float64(m.Waiting) < d.cfg.Saturation.QueuePerReplica {
			return SaturationState{Waiting: s.Waiting, Limit: s.Limit, Fresh: s.Fresh, Stale: s.Stale, KVFull: s.KVFull}
		}
	}
	s.Saturated = true
	return s
}
