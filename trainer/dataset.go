package trainer

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/augur-llm/augur/models"
	"github.com/augur-llm/augur/store"
)

// Row is one labelled sample as the trainer uses it.
type Row struct {
	At       time.Time
	Features models.Vector
	Class    string
	// TTFT and TPOT are the observed latencies in ms; 0 means the sample has no such label.
	TTFT, TPOT float64
}

// Label is the row's label for target t (0: none).
func (r *Row) Label(t models.Target) float64 {
	if t == models.TTFT {
		return r.TTFT
	}
	return r.TPOT
}

// RowOf returns the sample's training row and whether it has any label. A TTFT label needs
// a first token the picker saw (a streamed response; the outcome does not matter, the time
// was measured); a TPOT label a streamed response that completed (a cut stream's pace is not
// the replica's). A sample whose request a fallback served is dropped: its features are the
// primary's, and one refused before dispatch has no replica to learn of.
func RowOf(s *store.Sample) (Row, bool) {
	if s.Refused || s.ServedByFallback || s.SchemaVersion != models.SchemaVersion {
		return Row{}, false
	}
	r := Row{At: s.Time, Features: s.Features, Class: s.ReplicaClass}
	if s.Stream && s.TTFTMs != nil && *s.TTFTMs > 0 && !math.IsInf(*s.TTFTMs, 0) {
		r.TTFT = *s.TTFTMs
	}
	if s.Stream && s.Outcome == "ok" && s.TPOTMs != nil && *s.TPOTMs > 0 && !math.IsInf(*s.TPOTMs, 0) {
		r.TPOT = *s.TPOTMs
	}
	return r, r.TTFT > 0 || r.TPOT > 0
}

// labelled returns the rows with a label for t, in their order.
func labelled(rows []Row, t models.Target) []Row {
	var out []Row
	for i := range rows {
		if rows[i].Label(t) > 0 {
			out = append(out, rows[i])
		}
	}
	return out
}

// split divides rows (sorted by time) into the oldest for training, the next for calibrating
// quantiles, and the newest, held out, for evaluating: a time-ordered split, so the models
// are judged on traffic that came after all they learnt from, as they will be in service.
func split(rows []Row, calibration, holdout float64) (train, cal, hold []Row) {
	n := len(rows)
	h := int(math.Round(float64(n) * holdout))
	c := int(math.Round(float64(n) * calibration))
	return rows[:n-h-c], rows[n-h-c : n-h], rows[n-h:]
}

// bucketOf is a row's balancing bucket: requests waiting (0, 1-2, 3-5, 6-10, 11+), KV-cache
// usage in tenths, and prefix match (none or unknown, under half, under 90%, at least 90%),
// as llm-d's training buckets are.
func bucketOf(v *models.Vector) int {
	waiting, _ := v.Get(idxWaiting)
	q := 0
	switch {
	case waiting >= 11:
		q = 4
	case waiting >= 6:
		q = 3
	case waiting >= 3:
		q = 2
	case waiting >= 1:
		q = 1
	}
	kv, _ := v.Get(idxKV)
	k := min(max(int(kv*10), 0), 9)
	p := 0
	if m, ok := v.Get(idxPrefix); ok && m > 0 {
		switch {
		case m >= 0.9:
			p = 3
		case m >= 0.5:
			p = 2
		default:
			p = 1
		}
	}
	return (q*10+k)*4 + p
}

var (
	idxWaiting = models.Index("num_requests_waiting")
	idxKV      = models.Index("kv_cache_usage")
	idxPrefix  = models.Index("prefix_match")
)

// balance keeps at most limit rows of each bucket, drawn at random (seeded) where a bucket
// has more, so that hours of idle traffic do not drown the minutes of overload the models
// most need to get right. The rows keep their time order.
func balance(rows []Row, limit int, seed uint64) []Row {
	if limit <= 0 {
		return rows
	}
	byBucket := map[int][]int{}
	for i := range rows {
		b := bucketOf(&rows[i].Features)
		byBucket[b] = append(byBucket[b], i)
	}
	rng := rand.New(rand.NewPCG(seed, 0xba1a))
	var keep []int
	keys := make([]int, 0, len(byBucket))
	for b := range byBucket {
		keys = append(keys, b)
	}
	slices.Sort(keys) // the draw must not depend on map order
	for _, b := range keys {
		idx := byBucket[b]
		if len(idx) > limit {
			rng.Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
			idx = idx[:limit]
		}
		keep = append(keep, idx...)
	}
	slices.Sort(keep)
	out := make([]Row, len(keep))
	for i, k := range keep {
		out[i] = rows[k]
	}
	return out
}

// sortRows orders rows by time, stably.
func sortRows(rows []Row) {
	slices.SortStableFunc(rows, func(a, b Row) int { return cmp.Compare(a.At.UnixNano(), b.At.UnixNano()) })
}
