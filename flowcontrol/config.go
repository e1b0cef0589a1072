package flowcontrol

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/augur-llm/augur/scheduler"
)

// Objective is what a named objective (the x-gateway-inference-objective header) means to
// flow control: its priority band and default latency objectives.
type Objective struct {
	// Priority is the band: higher is served first; negative means sheddable (refused at
	// once while the pool is saturated, never queued behind it).
	Priority int `json:"priority"`
	// TTFTMs and TPOTMs are the objective's default SLOs, applied to requests that state
	// none of their own; 0 = none.
	TTFTMs float64 `json:"ttftMs,omitempty"`
	TPOTMs float64 `json:"tpotMs,omitempty"`
	// FairnessWeight is the weight of the flows whose requests name this objective, under
	// weighted fairness; default 1.
	FairnessWeight float64 `json:"fairnessWeight,omitempty"`
}

// Config configures flow control. Zero fields take the defaults below.
type Config struct {
	// Objectives by name.
	Objectives map[string]Objective `json:"objectives,omitempty"`
	// DefaultObjective names the objective of requests that name none or one not configured;
	// "" means priority 0 with no default SLOs.
	DefaultObjective string `json:"defaultObjective,omitempty"`
	// Fairness between the flows of a band: FairnessRoundRobin (default) or
	// FairnessWeighted (by FlowWeights, else the objective's FairnessWeight).
	Fairness string `json:"fairness,omitempty"`
	// FlowWeights are weights by fairness id, for weighted fairness.
	FlowWeights map[string]float64 `json:"flowWeights,omitempty"`
	// Ordering inside a flow: OrderFCFS (default) or OrderDeadline (arrival + TTFT objective;
	// requests without one after those with one, first come first served).
	Ordering string `json:"ordering,omitempty"`
	// MaxRequestsPerBand and MaxBytesPerBand bound each band's queue; a request that does
	// not fit is refused. Defaults DefaultMaxRequestsPerBand and DefaultMaxBytesPerBand.
	MaxRequestsPerBand int   `json:"maxRequestsPerBand,omitempty"`
	MaxBytesPerBand    int64 `json:"maxBytesPerBand,omitempty"`
	// TTL is how long a request may wait; default DefaultTTL.
	TTL metav1.Duration `json:"ttl,omitzero"`
	// RefuseLate refuses a request at the head of its queue whose TTFT objective has
	// already passed while it waited, or that the scheduler predicts (mean models, on the
	// best replica) to miss it even if dispatched now: it would miss anyway, so no GPU time
	// goes to it (429, ReasonLate).
	RefuseLate bool `json:"refuseLate,omitempty"`
	// Saturation says when the pool is saturated.
	Saturation Saturation `json:"saturation,omitzero"`
	// Mode is ModeEvents (default) or ModeTicker, llm-d's design reproduced for the
	// comparison: a dispatch loop on a TickInterval ticker, one dispatch per tick, and
	// the utilization detector on scraped metrics alone.
	Mode string `json:"mode,omitempty"`
	// TickInterval is ModeTicker's tick; default 1 ms.
	TickInterval metav1.Duration `json:"tickInterval,omitzero"`
}

// Saturation configures the saturation detector.
type Saturation struct {
	// QueuePerReplica is how many requests may wait in each replica's own queue (vLLM's
	// waiting requests, plus the picker's dispatches since the scrape, less the first tokens
	// since): a replica below it has room, and the pool is saturated when none has. The
	// profile gets a room filter (WithRoom), so requests go only where there is room.
	// Default DefaultQueuePerReplica. In ModeTicker it is the utilization detector's
	// threshold (default 5) and nothing is filtered.
	QueuePerReplica float64 `json:"queuePerReplica,omitempty"`
	// StepShare: a replica whose recent steps take more than this share of the tightest TPOT
	// objective among the streams running there has no room (see scheduler.RoomFilter);
	// default DefaultStepShare, negative disables it. Not used in ModeTicker.
	StepShare float64 `json:"stepShare,omitempty"`
	// KVCache is the KV-cache usage (0..1) at which a replica counts as full; the pool is
	// saturated when every replica is. Default DefaultKVCache (0.8 in ModeTicker).
	KVCache float64 `json:"kvCache,omitempty"`
	// Stale is what a replica whose metrics are stale counts as: StaleOwnCounts (default:
	// the picker's own in-flight requests against what the replica ran at once when last
	// seen) or StaleSaturated (no capacity; when every replica is stale nothing is
	// dispatched, and flow control says so in its log and metrics).
	Stale string `json:"stale,omitempty"`
	// StaleAfter is how old metrics may be before they are stale; default: the pool's.
	StaleAfter metav1.Duration `json:"staleAfter,omitzero"`
}

// Settings.
const (
	FairnessRoundRobin = "round-robin"
	FairnessWeighted   = "weighted"
	OrderFCFS          = "fcfs"
	OrderDeadline      = "deadline"
	StaleOwnCounts     = "own-counts"
	StaleSaturated     = "saturated"
	ModeEvents         = "events"
	ModeTicker         = "ticker"
)

// Defaults.
const (
	DefaultMaxRequestsPerBand = 10_000
	DefaultMaxBytesPerBand    = 1 << 30
	DefaultTTL                = 30 * time.Second
	// DefaultQueuePerReplica keeps about two requests waiting in each replica: enough that a
	// replica finishing a request has the next one at hand, few enough that a request of a
	// higher band arriving later waits behind little.
	DefaultQueuePerReplica = 2
	DefaultKVCache         = 0.9
	DefaultStepShare       = 0.9
	DefaultTickInterval    = time.Millisecond
	tickerQueuePerReplica  = 5
	tickerKVCache          = 0.8
	tickerStaleAfter       = 200 * time.Millisecond
)

// resolved is a Config checked and completed.
type resolved struct {
	Config
	ttl, tick, staleAfter time.Duration
	def                   Objective
}

// oneOf returns v, or def when v is empty: any value but def and alt is an error naming the
// setting.
func oneOf[T ~string](setting string, v, def, alt T) (T, error) {
	switch v {
	case "":
		return def, nil
	case def, alt:
		return v, nil
	}
	return v, fmt.Errorf("flowcontrol: %s %q: want %s or %s", setting, v, def, alt)
}

func (c Config) resolve() (resolved, error) {
	r := resolved{Config: c}
	var err error
	if r.Mode, err = oneOf("mode", c.Mode, ModeEvents, ModeTicker); err != nil {
		return r, err
	}
	if r.Fairness, err = oneOf("fairness", c.Fairness, FairnessRoundRobin, FairnessWeighted); err != nil {
		return r, err
	}
	if r.Ordering, err = oneOf("ordering", c.Ordering, OrderFCFS, OrderDeadline); err != nil {
		return r, err
	}
	s := &r.Saturation
	if s.Stale, err = oneOf("saturation.stale", s.Stale, StaleOwnCounts, StaleSaturated); err != nil {
		return r, err
	}
	if s.QueuePerReplica < 0 || math.IsNaN(s.QueuePerReplica) || math.IsInf(s.QueuePerReplica, 0) {
		return r, fmt.Errorf("flowcontrol: saturation.queuePerReplica %v: want a number >= 0", s.QueuePerReplica)
	}
	if s.KVCache < 0 || s.KVCache > 1 || math.IsNaN(s.KVCache) {
		return r, fmt.Errorf("flowcontrol: saturation.kvCache %v: want 0..1", s.KVCache)
	}
	if s.QueuePerReplica == 0 {
		s.QueuePerReplica = DefaultQueuePerReplica
		if r.Mode == ModeTicker {
			s.QueuePerReplica = tickerQueuePerReplica
		}
	}
	if math.IsNaN(s.StepShare) || s.StepShare > 10 {
		return r, fmt.Errorf("flowcontrol: saturation.stepShare %v: want at most 10 (negative disables it)", s.StepShare)
	}
	switch {
	case r.Mode == ModeTicker || s.StepShare < 0:
		s.StepShare = 0
	case s.StepShare == 0:
		s.StepShare = DefaultStepShare
	}
	if s.KVCache == 0 {
		s.KVCache = DefaultKVCache
		if r.Mode == ModeTicker {
			s.KVCache = tickerKVCache
		}
	}
	r.staleAfter = s.StaleAfter.Duration
	if r.staleAfter <= 0 && r.Mode == ModeTicker {
		r.staleAfter = tickerStaleAfter
	}
	if c.MaxRequestsPerBand < 0 || c.MaxBytesPerBand < 0 {
		return r, fmt.Errorf("flowcontrol: maxRequestsPerBand %d and maxBytesPerBand %d must not be negative", c.MaxRequestsPerBand, c.MaxBytesPerBand)
	}
	if r.MaxRequestsPerBand == 0 {
		r.MaxRequestsPerBand = DefaultMaxRequestsPerBand
	}
	if r.MaxBytesPerBand == 0 {
		r.MaxBytesPerBand = DefaultMaxBytesPerBand
	}
	r.ttl = c.TTL.Duration
	if r.ttl < 0 {
		return r, fmt.Errorf("flowcontrol: ttl %v must not be negative", r.ttl)
	}
	if r.ttl == 0 {
		r.ttl = DefaultTTL
	}
	r.tick = c.TickInterval.Duration
	if r.tick < 0 {
		return r, fmt.Errorf("flowcontrol: tickInterval %v must not be negative", r.tick)
	}
	if r.tick == 0 {
		r.tick = DefaultTickInterval
	}
	names := make([]string, 0, len(c.Objectives))
	for name := range c.Objectives {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		o := c.Objectives[name]
		if o.TTFTMs < 0 || o.TPOTMs < 0 || o.TTFTMs > 1e7 || o.TPOTMs > 1e7 || math.IsNaN(o.TTFTMs) || math.IsNaN(o.TPOTMs) {
			return r, fmt.Errorf("flowcontrol: objective %q: ttftMs %v and tpotMs %v must be between 0 and 1e7", name, o.TTFTMs, o.TPOTMs)
		}
		if o.FairnessWeight < 0 || math.IsNaN(o.FairnessWeight) || math.IsInf(o.FairnessWeight, 0) {
			return r, fmt.Errorf("flowcontrol: objective %q: fairnessWeight %v must be a number >= 0", name, o.FairnessWeight)
		}
	}
	for id, w := range c.FlowWeights {
		if !(w > 0) || math.IsInf(w, 0) {
			return r, fmt.Errorf("flowcontrol: flowWeights[%q] %v: want a positive number", id, w)
		}
	}
	if c.DefaultObjective != "" {
		o, ok := c.Objectives[c.DefaultObjective]
		if !ok {
			return r, fmt.Errorf("flowcontrol: defaultObjective %q is not among the objectives %v", c.DefaultObjective, names)
		}
		r.def = o
	}
	return r, nil
}

// objective returns the objective a request naming name is under, and whether the name was
// configured.
func (r *resolved) objective(name string) (Objective, bool) {
	if o, ok := r.Objectives[name]; ok {
		return o, true
	}
	return r.def, false
}

// weight is the fairness weight of flow id under objective o.
func (r *resolved) weight(id string, o Objective) float64 {
	if r.Fairness != FairnessWeighted {
		return 1
	}
	if w, ok := r.FlowWeights[id]; ok {
		return w
	}
	if o.FairnessWeight > 0 {
		return o.FairnessWeight
	}
	return 1
}

// WithRoom returns pc with the room filter flow control relies on in front of its filters:
// requests go only to replicas with room in their own queues. In ModeTicker (llm-d's design)
// pc is returned as it is.
func WithRoom(pc scheduler.ProfileConfig, c Config) (scheduler.ProfileConfig, error) {
	r, err := c.resolve()
	if err != nil {
		return pc, err
	}
	if r.Mode == ModeTicker {
		return pc, nil
	}
	args, err := json.Marshal(scheduler.RoomFilter{QueuePerReplica: r.Saturation.QueuePerReplica, StepShare: r.Saturation.StepShare})
	if err != nil {
		return pc, err
	}
	pc.Filters = append([]scheduler.PluginConfig{{Name: "room-filter", Args: args}}, pc.Filters...)
	return pc, nil
}
