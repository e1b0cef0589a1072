package report

import (
	"math"
	"sort"
	"time"

	"gonum.org/v1/gonum/stat"
)

// Outcome is what happened to one request.
type Outcome struct {
	Class   string // SLO class; "" counts as DefaultClass
	Stage   int    // index of the ladder stage the request was sent in
	Replica string // the replica that served it; "" when none did

	SLOTTFT, SLOTPOT time.Duration // the request's objectives; 0 = none

	Start, End time.Duration // offsets from the start of the run
	Status     int           // HTTP status; 0 = no response
	ShedReason string        // why a 429 was shed, e.g. "rejected-saturated"
	// Queued is how long the request waited before it was dispatched or refused (flow
	// control); 0 without flow control.
	Queued time.Duration

	TTFT, TPOT, E2E time.Duration

	PromptTokens, CachedTokens, OutputTokens int
}

// DefaultClass names outcomes without a class.
const DefaultClass = "default"

// OverallName is the Name of the summary over all classes.
const OverallName = "all"

// StatusShed is the status of a shed request.
const StatusShed = 429

// Completed reports a 2xx status.
func (o Outcome) Completed() bool { return o.Status >= 200 && o.Status < 300 }

// Shed reports a 429.
func (o Outcome) Shed() bool { return o.Status == StatusShed }

// MetSLO reports whether the request completed within both its objectives (see the package
// documentation for requests without objectives or without a TPOT).
func (o Outcome) MetSLO() bool {
	if !o.Completed() {
		return false
	}
	if o.SLOTTFT > 0 && o.TTFT > o.SLOTTFT {
		return false
	}
	if o.SLOTPOT > 0 && o.OutputTokens > 1 && o.TPOT > o.SLOTPOT {
		return false
	}
	return true
}

// Window is a span of the run, [From, To).
type Window struct {
	From time.Duration `json:"from_ns"`
	To   time.Duration `json:"to_ns"`
}

// Seconds is the window's length.
func (w Window) Seconds() float64 { return (w.To - w.From).Seconds() }

// Options select what a report covers.
type Options struct {
	// Window is the measured window: outcomes that started before From or at or after To
	// are left out (use the ladder's warm-up end as From). A zero To means "to the end":
	// no upper bound on Start, and rates are computed up to the last End.
	Window Window
	// PerStage adds a summary per ladder stage, over every outcome of the stage (warm-up
	// included, whatever Window says).
	PerStage bool
	// StageWindows[i] is stage i's span, the denominator of its rates. Stages without one
	// span from their first Start to their last End.
	StageWindows []Window
	// Replicas lists the pool's replicas, so that one that received nothing still shows,
	// with zero requests. Replicas seen in outcomes are added.
	Replicas []string
}

// Percentiles of a latency, in milliseconds; nil when there are no samples.
type Percentiles struct {
	N    int      `json:"n"`
	Mean *float64 `json:"mean"`
	P50  *float64 `json:"p50"`
	P90  *float64 `json:"p90"`
	P99  *float64 `json:"p99"`
}

// Summary is the figures for one set of requests: a class, all classes, or a stage's.
type Summary struct {
	Name string `json:"name"` // the class, or OverallName

	Requests  int `json:"requests"`
	Completed int `json:"completed"`
	MetSLO    int `json:"met_slo"`
	// WithObjectives is the requests that carry an objective, and ObjectivesMet those of
	// them that met it: attainment is judged on these alone, so a class without objectives
	// has none (n/a) rather than 100%.
	WithObjectives int `json:"with_objectives"`
	ObjectivesMet  int `json:"objectives_met"`
	Shed           int `json:"shed"`
	Errors         int `json:"errors"`
	// ShedReasons counts shed requests by reason ("unknown" when none was given).
	ShedReasons map[string]int `json:"shed_reasons,omitempty"`

	SLOAttainment *float64 `json:"slo_attainment"` // ObjectivesMet / WithObjectives; nil without objectives
	ShedShare     *float64 `json:"shed_share"`     // Shed / Requests
	GoodputRPS    *float64 `json:"goodput_rps"`    // MetSLO per second of window
	CompletedRPS  *float64 `json:"completed_rps"`
	OutputTPS     *float64 `json:"output_tokens_per_s"` // output tokens of completed requests per second

	PromptTokens  int      `json:"prompt_tokens"` // of completed requests
	CachedTokens  int      `json:"cached_tokens"`
	OutputTokens  int      `json:"output_tokens"`
	PrefixHitRate *float64 `json:"prefix_cache_hit_rate"` // CachedTokens / PromptTokens

	TTFT Percentiles `json:"ttft_ms"`
	TPOT Percentiles `json:"tpot_ms"`
	E2E  Percentiles `json:"e2e_ms"`
	// Queued is the time requests waited in flow control before they were dispatched or
	// refused, over every request.
	Queued Percentiles `json:"queued_ms"`
	// MissedTTFT and MissedTPOT count the completed requests that missed their TTFT, or met
	// it and missed their TPOT, objective.
	MissedTTFT int `json:"missed_ttft"`
	MissedTPOT int `json:"missed_tpot"`
}

// Replica is one replica's share of the work.
type Replica struct {
	Name          string   `json:"name"`
	Requests      int      `json:"requests"` // routed to it, whatever the outcome
	Completed     int      `json:"completed"`
	PromptTokens  int      `json:"prompt_tokens"`
	CachedTokens  int      `json:"cached_tokens"`
	PrefixHitRate *float64 `json:"prefix_cache_hit_rate"`
}

// Stage is one ladder stage's summaries.
type Stage struct {
	Stage   int       `json:"stage"`
	Window  Window    `json:"window"`
	Overall Summary   `json:"overall"`
	Classes []Summary `json:"classes"`
}

// Report is the figures of a run.
type Report struct {
	Window  Window    `json:"window"`
	Overall Summary   `json:"overall"`
	Classes []Summary `json:"classes"` // by name
	// Replicas by name, with the ratio of the most to the least requests as a hot-spot
	// measure: nil when there is no replica or one received none.
	Replicas      []Replica `json:"replicas"`
	ReplicaMaxMin *float64  `json:"replica_max_min_ratio"`
	Stages        []Stage   `json:"stages,omitempty"`
}

// Compute builds the report of outcomes.
func Compute(outcomes []Outcome, o Options) *Report {
	var in []Outcome
	for _, oc := range outcomes {
		if oc.Start >= o.Window.From && (o.Window.To == 0 || oc.Start < o.Window.To) {
			in = append(in, oc)
		}
	}
	w := o.Window
	if w.To == 0 {
		w.To = span(in, w.From).To
	}
	r := &Report{Window: w}
	r.Overall, r.Classes = summarise(in, w)
	r.Replicas, r.ReplicaMaxMin = replicas(in, o.Replicas)
	if o.PerStage {
		byStage := map[int][]Outcome{}
		for _, oc := range outcomes {
			byStage[oc.Stage] = append(byStage[oc.Stage], oc)
		}
		for _, i := range sortedKeys(byStage) {
			sw := span(byStage[i], -1)
			if i >= 0 && i < len(o.StageWindows) && o.StageWindows[i] != (Window{}) {
				sw = o.StageWindows[i]
			}
			st := Stage{Stage: i, Window: sw}
			st.Overall, st.Classes = summarise(byStage[i], sw)
			r.Stages = append(r.Stages, st)
		}
	}
	return r
}

// span is the window from the first Start (or from, when from >= 0) to the last End (or
// Start, for outcomes without an End).
func span(outs []Outcome, from time.Duration) Window {
	if len(outs) == 0 {
		return Window{From: max(from, 0), To: max(from, 0)}
	}
	w := Window{From: from, To: math.MinInt64}
	first := time.Duration(math.MaxInt64)
	for _, oc := range outs {
		first = min(first, oc.Start)
		w.To = max(w.To, oc.End, oc.Start)
	}
	if from < 0 {
		w.From = first
	}
	return w
}

// summarise computes the overall summary and one per class, classes sorted by name.
func summarise(outs []Outcome, w Window) (Summary, []Summary) {
	byClass := map[string][]Outcome{}
	for _, oc := range outs {
		c := oc.Class
		if c == "" {
			c = DefaultClass
		}
		byClass[c] = append(byClass[c], oc)
	}
	classes := make([]Summary, 0, len(byClass))
	for _, name := range sortedKeys(byClass) {
		classes = append(classes, summary(name, byClass[name], w))
	}
	return summary(OverallName, outs, w), classes
}

func summary(name string, outs []Outcome, w Window) Summary {
	s := Summary{Name: name, Requests: len(outs)}
	var ttft, tpot, e2e, queued []float64
	for _, oc := range outs {
		queued = append(queued, ms(oc.Queued))
		if oc.Completed() && !oc.MetSLO() {
			if oc.SLOTTFT > 0 && oc.TTFT > oc.SLOTTFT {
				s.MissedTTFT++
			} else {
				s.MissedTPOT++
			}
		}
		switch {
		case oc.Completed():
			s.Completed++
			s.PromptTokens += oc.PromptTokens
			s.CachedTokens += oc.CachedTokens
			s.OutputTokens += oc.OutputTokens
			e2e = append(e2e, ms(oc.E2E))
			if oc.OutputTokens >= 1 {
				ttft = append(ttft, ms(oc.TTFT))
			}
			if oc.OutputTokens >= 2 {
				tpot = append(tpot, ms(oc.TPOT))
			}
		case oc.Shed():
			s.Shed++
			reason := oc.ShedReason
			if reason == "" {
				reason = "unknown"
			}
			if s.ShedReasons == nil {
				s.ShedReasons = map[string]int{}
			}
			s.ShedReasons[reason]++
		default:
			s.Errors++
		}
		if oc.MetSLO() {
			s.MetSLO++
		}
		if oc.SLOTTFT > 0 || oc.SLOTPOT > 0 {
			s.WithObjectives++
			if oc.MetSLO() {
				s.ObjectivesMet++
			}
		}
	}
	s.SLOAttainment = ratio(float64(s.ObjectivesMet), float64(s.WithObjectives))
	s.ShedShare = ratio(float64(s.Shed), float64(s.Requests))
	s.PrefixHitRate = ratio(float64(s.CachedTokens), float64(s.PromptTokens))
	if secs := w.Seconds(); secs > 0 {
		s.GoodputRPS = ptr(float64(s.MetSLO) / secs)
		s.CompletedRPS = ptr(float64(s.Completed) / secs)
		s.OutputTPS = ptr(float64(s.OutputTokens) / secs)
	}
	s.TTFT = percentiles(ttft)
	s.TPOT = percentiles(tpot)
	s.E2E = percentiles(e2e)
	s.Queued = percentiles(queued)
	return s
}

// percentiles sorts xs in place.
func percentiles(xs []float64) Percentiles {
	p := Percentiles{N: len(xs)}
	if len(xs) == 0 {
		return p
	}
	sort.Float64s(xs)
	p.Mean = ptr(stat.Mean(xs, nil))
	p.P50 = ptr(stat.Quantile(0.50, stat.Empirical, xs, nil))
	p.P90 = ptr(stat.Quantile(0.90, stat.Empirical, xs, nil))
	p.P99 = ptr(stat.Quantile(0.99, stat.Empirical, xs, nil))
	return p
}

func replicas(outs []Outcome, pool []string) ([]Replica, *float64) {
	by := map[string]*Replica{}
	for _, name := range pool {
		by[name] = &Replica{Name: name}
	}
	for _, oc := range outs {
		if oc.Replica == "" {
			continue
		}
		rp := by[oc.Replica]
		if rp == nil {
			rp = &Replica{Name: oc.Replica}
			by[oc.Replica] = rp
		}
		rp.Requests++
		if oc.Completed() {
			rp.Completed++
			rp.PromptTokens += oc.PromptTokens
			rp.CachedTokens += oc.CachedTokens
		}
	}
	if len(by) == 0 {
		return nil, nil
	}
	out := make([]Replica, 0, len(by))
	most, least := 0, math.MaxInt
	for _, name := range sortedKeys(by) {
		rp := *by[name]
		rp.PrefixHitRate = ratio(float64(rp.CachedTokens), float64(rp.PromptTokens))
		most, least = max(most, rp.Requests), min(least, rp.Requests)
		out = append(out, rp)
	}
	return out, ratio(float64(most), float64(least))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func ptr(v float64) *float64 { return &v }

// ratio is a/b, or nil when b is 0: a share of nothing is undefined, not zero.
func ratio(a, b float64) *float64 {
	if b == 0 {
		return nil
	}
	return ptr(a / b)
}

func sortedKeys[K int | string, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	return keys
}
