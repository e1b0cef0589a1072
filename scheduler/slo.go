package scheduler

import (
	"context"
	"fmt"
	"math"
)

// Strategies of the SLO picker for choosing among the replicas predicted to meet a request's
// objectives.
const (
	// StrategyBestFit picks, after the least prompt work (SLOArgs.LeastWork), the feasible
	// replica with the least relative headroom that still leaves the margin and the reserve
	// (SLOArgs.Margin, ReserveMs), and the most headroom when none does: requests with loose
	// objectives fill busy replicas, keeping the others free for tight objectives.
	StrategyBestFit = "best-fit"
	// StrategyMostHeadroom picks the feasible replica with the most relative headroom: the
	// lowest predicted latency for the request, spreading load.
	StrategyMostHeadroom = "most-headroom"
)

// Where the SLO picker sends a request no replica is predicted to serve within its
// objectives (SLOArgs.Infeasible).
const (
	InfeasibleLeastViolation = "least-violation"
	InfeasibleSacrifice      = "sacrifice"
)

// ObjectiveSLO is a configured objective's default latency objectives, for requests that
// name the objective and state no SLO of their own, and the quantiles judging them.
type ObjectiveSLO struct {
	TTFTMs float64 `json:"ttftMs"`
	TPOTMs float64 `json:"tpotMs"`
	// TTFTQuantile and TPOTQuantile override the picker's for this objective.
	TTFTQuantile string `json:"ttftQuantile"`
	TPOTQuantile string `json:"tpotQuantile"`
}

// SLOArgs configure the SLO picker ("slo"), Augur's policy.
type SLOArgs struct {
	// Strategy chooses among the feasible: StrategyBestFit (default, with Margin and
	// ReserveMs) or StrategyMostHeadroom. Best-fit packs only requests whose objectives leave
	// time to spare (batch), onto the replicas already busiest with them, so that the rest
	// stay free for tight objectives; requests with tight objectives go where the headroom
	// is most. In the wind tunnel (docs/benchmarks.md, mixed classes on a heterogeneous pool
	// at capacity) it met 99.5% against most-headroom's 84%.
	Strategy string `json:"strategy"`
	// TTFTQuantile and TPOTQuantile choose the prediction the request's own objectives are
	// judged by: QuantileUpper (default), QuantileMean or QuantileUpperThenMean. The running
	// streams' TPOT bound is judged by the mean whatever they say.
	TTFTQuantile string `json:"ttftQuantile"`
	TPOTQuantile string `json:"tpotQuantile"`
	// TPOTBuffer scales the TPOT limit of a replica (default 1): a new request must keep the
	// predicted TPOT within TPOTBuffer x the tightest TPOT objective of the request and of the
	// requests already running there.
	TPOTBuffer float64 `json:"tpotBuffer"`
	// TTFTWeight and TPOTWeight weigh relative violations when nothing is feasible (default 1).
	TTFTWeight float64 `json:"ttftWeight"`
	TPOTWeight float64 `json:"tpotWeight"`
	// Explore is the share of decisions, 0..1, whose primary is drawn uniformly at random, so
	// that the samples the models learn from cover replicas the policy would not choose.
	Explore float64 `json:"explore"`
	// Default applies to requests that state no SLO and name no configured objective.
	Default *ObjectiveSLO `json:"default"`
	// Objectives are default SLOs by objective name (the x-gateway-inference-objective header).
	Objectives map[string]ObjectiveSLO `json:"objectives"`
	// Margin is best-fit's safety margin, as a share of each objective (default 0.1): it
	// packs requests onto the feasible replica with the least headroom that still leaves
	// Margin, and takes the most headroom when none does, so a prediction's error does not
	// decide whether a packed request meets its objectives.
	Margin float64 `json:"margin"`
	// ReserveMs is the TTFT headroom, in ms, best-fit leaves at the least (default 2000):
	// packing needs slack in time as well as in share, for the arrivals no prediction sees,
	// so requests with tight objectives (a 500 ms TTFT) are never packed, only loose ones.
	ReserveMs float64 `json:"reserveMs"`
	// LeastWork ranks the feasible by the prompt tokens each would have to compute first
	// (in 16-token blocks), then by the strategy (default true): among replicas that meet
	// the objectives, the one that keeps the prompt's cache costs the pool the least. On the
	// shared-prefix workload it kept the hit rate of llm-d's sticky routing where ranking
	// by headroom alone halved it (docs/benchmarks.md).
	LeastWork *bool `json:"leastWork"`
	// Infeasible chooses where a request goes that no replica is predicted to serve within
	// its objectives: InfeasibleSacrifice (default) or InfeasibleLeastViolation, the least
	// weighted violation. Sacrifice still takes the least violation among the replicas whose
	// mean predictions meet the objectives (where only the cautious upper quantile misses),
	// but sends a request that misses even by the mean to the replica it misses by the most:
	// a request that is lost anyway then costs the replica already lost, not the one the next
	// request could still be served on. While a replica is idle the pool has room, and a
	// lost request (a prompt too long for its TTFT objective, say) takes the least violation,
	// where it delays nobody (idle: nothing of this picker's in flight there, and nothing
	// running or waiting at the replica's last scrape). In the wind tunnel (docs/benchmarks.md,
	// the Azure conversation trace at capacity) sacrificing met 74% of objectives where the
	// least violation met 65%.
	Infeasible string `json:"infeasible"`
	// OutputTokens is the output length assumed for a request without max_tokens when
	// ranking by predicted end-to-end latency (requests without objectives); default 128.
	OutputTokens int `json:"outputTokens"`
}

// SLOPicker is Augur's policy. For every candidate it reads the predicted TTFT and TPOT of the
// request there (set by the scheduler's predictor before the picker runs), computes the
// headroom to the request's objectives, and orders the feasible candidates (both headrooms at
// least 0) by its strategy, then the infeasible as SLOArgs.Infeasible says. Prefix affinity,
// queues and replica speed enter through the predictions, not through weights. A replica's
// TPOT limit is also the tightest TPOT objective among the requests already running there,
// because a new stream slows every stream in the batch; that bound is judged by the mean
// prediction, the request's own objectives by the configured quantile. A request with no
// objective at all goes where its predicted end-to-end latency is lowest. Without predictions
// the picker orders by the profile's scores, as max-score does.
type SLOPicker struct {
	r            lockedRand
	bestFit      bool
	ttftQ, tpotQ quantile
	tpotBuffer   float64
	ttftW, tpotW float64
	explore      float64
	def          *objective
	objectives   map[string]objective
	outputTokens int
	margin       float64
	reserve      float64
	leastWork    bool
	sacrifice    bool
	fallback     *MaxScorePicker
}

// objective is an ObjectiveSLO validated and converted.
type objective struct {
	ttft, tpot   float64 // ms, 0 = none
	ttftQ, tpotQ quantile
}

// quantile is the prediction an objective is judged by.
type quantile uint8

const (
	byUpper quantile = iota
	byMean
	byUpperThenMean
)

func quantileOf(q string, dflt quantile) (quantile, error) {
	switch q {
	case "":
		return dflt, nil
	case QuantileUpper:
		return byUpper, nil
	case QuantileMean:
		return byMean, nil
	case QuantileUpperThenMean:
		return byUpperThenMean, nil
	}
	return 0, fmt.Errorf("quantile %q must be %q, %q or %q", q, QuantileUpper, QuantileMean, QuantileUpperThenMean)
}

// QuantileUpperThenMean judges an objective by the upper-quantile predictions where any
// replica meets it so, and by the mean where none does (SLOArgs.TPOTQuantile).
const QuantileUpperThenMean = "upper-then-mean"

// NewSLOPicker validates a and returns the picker; seed drives exploration and tie-breaks.
func NewSLOPicker(a SLOArgs, seed uint64) (*SLOPicker, error) {
	p := &SLOPicker{r: newLockedRand(seed, 0x5107), tpotBuffer: 1, ttftW: 1, tpotW: 1, outputTokens: 128,
		fallback: NewMaxScorePicker(seed)}
	switch a.Strategy {
	case "", StrategyBestFit:
		p.bestFit = true
	case StrategyMostHeadroom:
	default:
		return nil, fmt.Errorf("strategy %q: want %q or %q", a.Strategy, StrategyBestFit, StrategyMostHeadroom)
	}
	switch a.Infeasible {
	case "", InfeasibleSacrifice:
		p.sacrifice = true
	case InfeasibleLeastViolation:
	default:
		return nil, fmt.Errorf("infeasible %q: want %q or %q", a.Infeasible, InfeasibleSacrifice, InfeasibleLeastViolation)
	}
	var err error
	if p.ttftQ, err = quantileOf(a.TTFTQuantile, byUpper); err != nil {
		return nil, fmt.Errorf("ttftQuantile: %w", err)
	}
	if p.tpotQ, err = quantileOf(a.TPOTQuantile, byUpper); err != nil {
		return nil, fmt.Errorf("tpotQuantile: %w", err)
	}
	if a.TPOTBuffer != 0 {
		if !(a.TPOTBuffer > 0 && a.TPOTBuffer <= 10) {
			return nil, fmt.Errorf("tpotBuffer %v must be in (0, 10]", a.TPOTBuffer)
		}
		p.tpotBuffer = a.TPOTBuffer
	}
	for _, w := range []struct {
		v   float64
		dst *float64
		n   string
	}{{a.TTFTWeight, &p.ttftW, "ttftWeight"}, {a.TPOTWeight, &p.tpotW, "tpotWeight"}} {
		if w.v != 0 {
			if !(w.v > 0 && w.v <= 1e6) {
				return nil, fmt.Errorf("%s %v must be in (0, 1e6]", w.n, w.v)
			}
			*w.dst = w.v
		}
	}
	if !(a.Explore >= 0 && a.Explore <= 1) {
		return nil, fmt.Errorf("explore %v must be between 0 and 1", a.Explore)
	}
	p.explore = a.Explore
	p.leastWork = a.LeastWork == nil || *a.LeastWork
	p.reserve = 2000
	if a.ReserveMs != 0 {
		if !(a.ReserveMs > 0 && a.ReserveMs <= 1e7) {
			return nil, fmt.Errorf("reserveMs %v must be in (0, 1e7]", a.ReserveMs)
		}
		p.reserve = a.ReserveMs
	}
	p.margin = 0.1
	if a.Margin != 0 {
		if !(a.Margin > 0 && a.Margin < 1) {
			return nil, fmt.Errorf("margin %v must be in (0, 1)", a.Margin)
		}
		p.margin = a.Margin
	}
	if a.OutputTokens < 0 {
		return nil, fmt.Errorf("outputTokens %d must not be negative", a.OutputTokens)
	}
	if a.OutputTokens > 0 {
		p.outputTokens = a.OutputTokens
	}
	conv := func(name string, o ObjectiveSLO) (objective, error) {
		if !(o.TTFTMs >= 0 && o.TPOTMs >= 0) || o.TTFTMs > 1e7 || o.TPOTMs > 1e7 {
			return objective{}, fmt.Errorf("%s: ttftMs %v and tpotMs %v must be between 0 and 1e7", name, o.TTFTMs, o.TPOTMs)
		}
		ob := objective{ttft: o.TTFTMs, tpot: o.TPOTMs}
		var err error
		if ob.ttftQ, err = quantileOf(o.TTFTQuantile, p.ttftQ); err != nil {
			return objective{}, fmt.Errorf("%s: ttftQuantile: %w", name, err)
		}
		if ob.tpotQ, err = quantileOf(o.TPOTQuantile, p.tpotQ); err != nil {
			return objective{}, fmt.Errorf("%s: tpotQuantile: %w", name, err)
		}
		return ob, nil
	}
	if a.Default != nil {
		d, err := conv("default", *a.Default)
		if err != nil {
			return nil, err
		}
		p.def = &d
	}
	if len(a.Objectives) > 0 {
		p.objectives = make(map[string]objective, len(a.Objectives))
		for name, o := range a.Objectives {
			ob, err := conv("objective "+name, o)
			if err != nil {
				return nil, err
			}
			p.objectives[name] = ob
		}
	}
	return p, nil
}

// Name implements Picker.
func (*SLOPicker) Name() string { return "slo" }

// objectiveOf is what req is judged by: its own SLO header values, completed by its
// objective's (or the default) configured values for what it does not state.
func (p *SLOPicker) objectiveOf(req *Request) objective {
	o := objective{ttft: msOf(req.SLO.TTFT), tpot: msOf(req.SLO.TPOT), ttftQ: p.ttftQ, tpotQ: p.tpotQ}
	conf, ok := p.objectives[req.Objective]
	if !ok {
		if p.def == nil {
			return o
		}
		conf = *p.def
	}
	o.ttftQ, o.tpotQ = conf.ttftQ, conf.tpotQ
	if o.ttft == 0 {
		o.ttft = conf.ttft
	}
	if o.tpot == 0 {
		o.tpot = conf.tpot
	}
	return o
}

// judge is one candidate's standing: feasible candidates rank by headroom, the rest by
// violation, and requests without any objective by predicted latency.
type judge struct {
	feasible  bool
	headroom  float64 // relative: the smallest (limit - predicted) / limit over the objectives
	slack     float64 // TTFT headroom in ms (+Inf without a TTFT objective)
	uncached  int     // prompt blocks the replica would compute
	violation float64 // weighted relative excess over the limits
	lost      bool    // even the mean predictions miss (judged only when sacrificing)
	latency   float64 // predicted end-to-end ms, for requests without objectives
}

// judgeOf judges candidate c for req; ok is false when c carries no predictions.
func (p *SLOPicker) judgeOf(req *Request, o objective, c *Candidate) (judge, bool) {
	// A model set without quantile models predicts no upper values: the mean stands in.
	ttft, ok1 := sloRule{upper: o.ttftQ != byMean}.prediction(c, ValuePredictedTTFT, ValuePredictedTTFTUpper)
	tpot, ok2 := sloRule{upper: o.tpotQ != byMean}.prediction(c, ValuePredictedTPOT, ValuePredictedTPOTUpper)
	if !ok1 || !ok2 {
		return judge{}, false
	}
	// A prediction that is no number is as bad as any: the replica ranks behind those with one.
	if math.IsNaN(ttft) {
		ttft = math.Inf(1)
	}
	if math.IsNaN(tpot) {
		tpot = math.Inf(1)
	}
	j := judge{headroom: 1, slack: math.Inf(1), uncached: (c.UncachedTokens(req) + PrefixBlockTokens - 1) / PrefixBlockTokens}
	out := req.MaxTokens
	if out <= 0 {
		out = p.outputTokens
	}
	j.latency = ttft + tpot*float64(max(out-1, 0))
	if o.ttft > 0 {
		j.slack = o.ttft - ttft
		j.headroom = min(j.headroom, (o.ttft-ttft)/o.ttft)
		j.violation += p.ttftW * max(0, ttft/o.ttft-1)
	}
	// The replica's TPOT limits: the request's own objective, judged by its quantile, and
	// the tightest running stream's, judged by the mean. Headroom is judged on the request's
	// own objectives; the running streams' bound only decides feasibility, or a request
	// without a TPOT objective would rank replicas by the streams already there rather than
	// by what it asks for. The mean for the running streams: judging their bound by the upper
	// quantile as well turned requests away from every replica past capacity and left them
	// to be ranked by violation alone (azure-conv at capacity: 72% of objectives met against
	// 81%, docs/benchmarks.md).
	tpotExcess := 0.0
	if o.tpot > 0 {
		limit := o.tpot * p.tpotBuffer
		j.headroom = min(j.headroom, (limit-tpot)/limit)
		tpotExcess = max(0, tpot/limit-1)
	}
	if run := msOf(c.Load.TightestTPOTObjective); run > 0 {
		mean, ok := c.Value(ValuePredictedTPOT)
		if !ok || math.IsNaN(mean) {
			mean = tpot
		}
		tpotExcess = max(tpotExcess, mean/(run*p.tpotBuffer)-1)
	}
	j.violation += p.tpotW * tpotExcess
	j.feasible = j.violation == 0
	if p.sacrifice && !j.feasible {
		// Lost: the request misses its own objectives even by the mean. Missing only a
		// running stream's TPOT bound does not make the request itself lost, and a request
		// with no objectives of its own is never lost.
		mt, _ := c.Value(ValuePredictedTTFT)
		mp, _ := c.Value(ValuePredictedTPOT)
		j.lost = (o.ttft > 0 && mt > o.ttft) || (o.tpot > 0 && mp > o.tpot*p.tpotBuffer)
	}
	return j, true
}

// idle reports whether c serves nothing: none of this picker's requests, and none the replica
// reported at its last scrape (requests of other pickers, or from before a restart).
func idle(c *Candidate) bool {
	return c.Load.Requests == 0 && c.Metrics.Running == 0 && c.Metrics.Waiting == 0
}

// packable reports whether best-fit may pack a request onto a replica judged j: it leaves
// both the margin and the reserve.
func (p *SLOPicker) packable(j judge) bool { return j.headroom >= p.margin && j.slack >= p.reserve }

// better reports whether a ranks before b.
func (p *SLOPicker) better(a, b judge, constrained bool) bool {
	if a.feasible != b.feasible {
		return a.feasible
	}
	if !a.feasible {
		if a.lost != b.lost {
			return !a.lost
		}
		if a.lost {
			return a.violation > b.violation
		}
		return a.violation < b.violation
	}
	if !constrained {
		return a.latency < b.latency
	}
	if p.leastWork && a.uncached != b.uncached {
		// Among replicas that meet the objectives, the one that computes the least of the
		// prompt: a cache miss costs every request queued behind it, which no single
		// request's predicted latency counts.
		return a.uncached < b.uncached
	}
	if a.headroom != b.headroom {
		if p.bestFit {
			ina, inb := p.packable(a), p.packable(b)
			if ina != inb {
				return ina
			}
			if ina {
				return a.headroom < b.headroom
			}
		}
		return a.headroom > b.headroom
	}
	return a.latency < b.latency
}

// Pick implements Picker.
func (p *SLOPicker) Pick(ctx context.Context, req *Request, cands []Candidate, scores []float64, n int, order []int) []int {
	o := p.objectiveOf(req)
	// Judging needs one judge per candidate; a decision has at most a few hundred, so they
	// live on the stack for the common sizes.
	var buf [64]judge
	js := buf[:0]
	if len(cands) > len(buf) {
		js = make([]judge, 0, len(cands))
	}
	constrained := o.ttft > 0 || o.tpot > 0
	spare := false // a replica is idle
	for i := range cands {
		spare = spare || idle(&cands[i])
		j, ok := p.judgeOf(req, o, &cands[i])
		if !ok {
			return p.fallback.Pick(ctx, req, cands, scores, n, order)
		}
		cands[i].SetValue(ValueSLOViolation, j.violation)
		js = append(js, j)
	}
	if o.ttftQ == byUpperThenMean || o.tpotQ == byUpperThenMean {
		js = p.rejudgeByMean(req, o, cands, js)
	}
	if spare {
		for i := range js {
			js[i].lost = false
		}
	}
	// Random order first, so that ties among equals are broken at random; then selection of
	// the best n, which is all a decision needs.
	start := len(order)
	order, idx := p.r.shuffledIndices(order, len(cands))
	m := min(n, len(idx))
	for a := range m {
		best := a
		for b := a + 1; b < len(idx); b++ {
			if p.better(js[idx[b]], js[idx[best]], constrained) {
				best = b
			}
		}
		idx[a], idx[best] = idx[best], idx[a]
	}
	if p.explore > 0 && len(idx) > 1 && p.r.float64() < p.explore {
		// The drawn candidate becomes the primary; the ranking's choices follow it in order.
		k := p.r.intN(len(idx))
		v := idx[k]
		copy(idx[1:k+1], idx[:k])
		idx[0] = v
	}
	return order[:start+m]
}

// rejudgeByMean judges the candidates again by the mean predictions for the objectives
// judged upper-then-mean, when none was feasible by the upper ones: the cautious quantile
// spares streams the interference of arrivals no prediction sees while there is room, and
// past that, turning every replica away by it would rank all by violation alone.
func (p *SLOPicker) rejudgeByMean(req *Request, o objective, cands []Candidate, js []judge) []judge {
	for _, j := range js {
		if j.feasible {
			return js
		}
	}
	if o.ttftQ == byUpperThenMean {
		o.ttftQ = byMean
	}
	if o.tpotQ == byUpperThenMean {
		o.tpotQ = byMean
	}
	for i := range cands {
		js[i], _ = p.judgeOf(req, o, &cands[i]) // every candidate was judged once: each has predictions
		cands[i].SetValue(ValueSLOViolation, js[i].violation)
	}
	return js
}

// Infeasible reports whether the decision's primary was predicted to miss the request's
// objectives (known only when the SLO picker decided).
func (r Result) Infeasible() bool {
	if len(r.Targets) == 0 {
		return false
	}
	v, ok := r.Targets[0].Value(ValueSLOViolation)
	return ok && v > 0
}
