package models

import (
	"fmt"
	"strings"
)

// LoadRegime is how busy a replica was when a request was routed to it. Accuracy is
// reported per regime, the trainer balances its sample across regimes, and a quantile
// model's calibration is kept per regime, so each must be computable from the features alone.
type LoadRegime uint8

// Load regimes.
const (
	// Idle: nothing in flight on the replica, by this picker's count and by its metrics.
	Idle LoadRegime = iota
	// Loaded: serving, without a queue.
	Loaded
	// Overloaded: the replica reported requests waiting for a seat, or a KV cache at least
	// OverloadKVUsage full (admission is about to stall).
	Overloaded
)

// OverloadKVUsage is the KV-cache usage from which a replica counts as overloaded.
const OverloadKVUsage = 0.9

// PrefixHitShare is the expected cached share of the prompt from which a request counts as a
// prefix hit.
const PrefixHitShare = 0.5

func (r LoadRegime) String() string {
	switch r {
	case Idle:
		return "idle"
	case Loaded:
		return "loaded"
	default:
		return "overloaded"
	}
}

// Feature positions the regimes read.
var (
	idxWaiting     = Index("num_requests_waiting")
	idxRunning     = Index("num_requests_running")
	idxInflight    = Index("inflight_requests")
	idxKV          = Index("kv_cache_usage")
	idxPrefixMatch = Index("prefix_match")
)

// Load returns the load regime of the replica whose features v are.
func (v *Vector) Load() LoadRegime {
	waiting, _ := v.Get(idxWaiting)
	kv, _ := v.Get(idxKV)
	if waiting > 0 || kv >= OverloadKVUsage {
		return Overloaded
	}
	running, _ := v.Get(idxRunning)
	inflight, _ := v.Get(idxInflight)
	if running == 0 && inflight == 0 {
		return Idle
	}
	return Loaded
}

// PrefixHit reports whether most of the prompt was expected in the replica's prefix cache
// (NULL prefix_match: no).
func (v *Vector) PrefixHit() bool {
	m, ok := v.Get(idxPrefixMatch)
	return ok && m >= PrefixHitShare
}

// Regime is a sample's cell in the accuracy tables and calibration: load, prefix and class.
type Regime struct {
	Load      LoadRegime
	PrefixHit bool
	Class     string
}

// RegimeOf returns the regime of features v on a replica of class.
func RegimeOf(v *Vector, class string) Regime {
	return Regime{Load: v.Load(), PrefixHit: v.PrefixHit(), Class: class}
}

// Key names the regime, e.g. "loaded/hit/8b-h100".
func (r Regime) Key() string {
	p := "miss"
	if r.PrefixHit {
		p = "hit"
	}
	return r.Load.String() + "/" + p + "/" + r.Class
}

// ParseRegime reads a regime's Key.
func ParseRegime(key string) (Regime, error) {
	parts := strings.SplitN(key, "/", 3)
	if len(parts) != 3 {
		return Regime{}, fmt.Errorf("regime %q: want LOAD/hit|miss/CLASS", key)
	}
	var r Regime
	switch parts[0] {
	case "idle":
		r.Load = Idle
	case "loaded":
		r.Load = Loaded
	case "overloaded":
		r.Load = Overloaded
	default:
		return Regime{}, fmt.Errorf("regime %q: unknown load %q", key, parts[0])
	}
	switch parts[1] {
	case "hit":
		r.PrefixHit = true
	case "miss":
	default:
		return Regime{}, fmt.Errorf("regime %q: want hit or miss, not %q", key, parts[1])
	}
	r.Class = parts[2]
	return r, nil
}
