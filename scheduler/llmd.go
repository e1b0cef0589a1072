package scheduler

// llm-d's routing policies rebuilt from Augur plugins, so that benchmarks compare policies on
// the same pool, scrapes and predictions (see the "llm-d-token", "llm-d-active" and
// "llm-d-predicted" profiles in BuiltinProfiles). Each plugin follows the behaviour of its
// llm-d namesake as published; where Augur's data differs (in-flight accounting, prediction
// quantiles, requests without objectives) the choice made is documented on the plugin.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"
)

// DefaultPeakPrefillThroughput is the peak prefill throughput, in tokens per second, that the
// prefix-affinity filter assumes for a replica class it has no calibration for: llm-d's own
// default, measured for Qwen3-32B on two H100s (TP2) as one 8,192-token chunk divided by its
// cold TTFT. Calibrate per class (sim.PeakPrefillThroughput does it for simulated replicas).
const DefaultPeakPrefillThroughput = 15928

// DefaultPeakClass is the key of PrefixAffinityArgs.PeakPrefillThroughput used for classes
// without an entry of their own.
const DefaultPeakClass = "default"

// TTFT sources of the prefix-affinity filter's saturation release.
const (
	TTFTSourceThroughput = "throughput" // uncached tokens in flight / peak prefill throughput
	TTFTSourcePredictor  = "predictor"  // the predictor's TTFT (ValuePredictedTTFT)
)

// PrefixAffinityArgs are the prefix-affinity filter's arguments.
type PrefixAffinityArgs struct {
	// AffinityThreshold is the prefix match (0..1) from which a replica counts as warm for the
	// request. 0 turns the filter off. Default 0.8.
	AffinityThreshold float64 `json:"affinityThreshold"`
	// MaxTTFTPenaltyMs is how much longer, in milliseconds, the best warm replica's estimated
	// TTFT may be than the best cold replica's before every replica passes (the saturation
	// release). 0 never releases. Default 18,000.
	MaxTTFTPenaltyMs float64 `json:"maxTTFTPenaltyMs"`
	// TTFTSource is where the release's TTFT estimates come from: TTFTSourceThroughput
	// (default) or TTFTSourcePredictor.
	TTFTSource string `json:"ttftSource"`
	// PeakPrefillThroughput is each replica class's peak prefill throughput in tokens per
	// second, with DefaultPeakClass for the classes not listed (DefaultPeakPrefillThroughput
	// unless given). Entries given are merged into the defaults.
	PeakPrefillThroughput map[string]float64 `json:"peakPrefillThroughput"`
	// ExplorationProbability is the share of decisions, 0..1, in which the filter passes every
	// replica. Default 0.
	ExplorationProbability float64 `json:"explorationProbability"`
}

// DefaultPrefixAffinityArgs returns the prefix-affinity filter's defaults.
func DefaultPrefixAffinityArgs() PrefixAffinityArgs {
	return PrefixAffinityArgs{
		AffinityThreshold:     0.8,
		MaxTTFTPenaltyMs:      18000,
		TTFTSource:            TTFTSourceThroughput,
		PeakPrefillThroughput: map[string]float64{DefaultPeakClass: DefaultPeakPrefillThroughput},
	}
}

func (a PrefixAffinityArgs) validate() error {
	if !(a.AffinityThreshold >= 0 && a.AffinityThreshold <= 1) {
		return fmt.Errorf("affinityThreshold %v must be between 0 and 1", a.AffinityThreshold)
	}
	if !(a.MaxTTFTPenaltyMs >= 0) || math.IsInf(a.MaxTTFTPenaltyMs, 1) {
		return fmt.Errorf("maxTTFTPenaltyMs %v must be a non-negative number", a.MaxTTFTPenaltyMs)
	}
	if a.TTFTSource != TTFTSourceThroughput && a.TTFTSource != TTFTSourcePredictor {
		return fmt.Errorf("ttftSource %q must be %q or %q", a.TTFTSource, TTFTSourceThroughput, TTFTSourcePredictor)
	}
	if _, ok := a.PeakPrefillThroughput[DefaultPeakClass]; !ok {
		return fmt.Errorf("peakPrefillThroughput needs a %q entry", DefaultPeakClass)
	}
	for class, v := range a.PeakPrefillThroughput {
		if !(v > 0) || math.IsInf(v, 1) {
			return fmt.Errorf("peakPrefillThroughput[%q] %v must be a positive number of tokens/s", class, v)
		}
	}
	if !(a.ExplorationProbability >= 0 && a.ExplorationProbability <= 1) {
		return fmt.Errorf("explorationProbability %v must be between 0 and 1", a.ExplorationProbability)
	}
	return nil
}

// PrefixAffinityFilter is llm-d's prefix-cache-affinity-filter ("sticky until saturated"):
// it keeps the warm replicas, those whose prefix match (ValuePrefixMatch) reaches the
// threshold, and passes every replica when none is warm. It gives the warm set up when its
// best replica's estimated TTFT exceeds the best cold replica's by more than MaxTTFTPenaltyMs:
// then all pass, and the scorers may move the request off the warm set.
//
// A replica's TTFT estimate is its uncached prompt tokens in flight (Load.PrefillUncachedTokens)
// over its class's peak prefill throughput, or the predictor's TTFT with TTFTSourcePredictor.
// When a release is configured and either side has no estimate (no predictor ran), the
// release cannot be judged and, as in llm-d, every replica passes.
//
// The prefix match comes from the "prefix" plugin, which the profile must list (as a scorer of
// weight 0 when it should not score): the filter reads values, so the scheduler computes them
// before it runs (see ValueReader). Without a prefix match no replica is warm and all pass.
type PrefixAffinityFilter struct {
	threshold, maxPenaltyMs, explore float64
	predictor                        bool
	peaks                            map[string]float64 // tokens/s by class, DefaultPeakClass included
	r                                lockedRand
}

var (
	_ Filter      = (*PrefixAffinityFilter)(nil)
	_ ValueReader = (*PrefixAffinityFilter)(nil)
)

// NewPrefixAffinityFilter returns the filter with args a; seed drives exploration.
func NewPrefixAffinityFilter(a PrefixAffinityArgs, seed uint64) (*PrefixAffinityFilter, error) {
	if err := a.validate(); err != nil {
		return nil, err
	}
	return &PrefixAffinityFilter{
		threshold: a.AffinityThreshold, maxPenaltyMs: a.MaxTTFTPenaltyMs, explore: a.ExplorationProbability,
		predictor: a.TTFTSource == TTFTSourcePredictor, peaks: maps.Clone(a.PeakPrefillThroughput),
		r: newLockedRand(seed, 0x632be59bd9b4e019),
	}, nil
}

// Name implements Filter.
func (*PrefixAffinityFilter) Name() string { return "prefix-affinity" }

// ReadsValues implements ValueReader: the filter reads the prefix match and predictions.
func (*PrefixAffinityFilter) ReadsValues() bool { return true }

// PeakPrefillThroughput is the peak prefill throughput, tokens/s, the filter assumes for class.
func (f *PrefixAffinityFilter) PeakPrefillThroughput(class string) float64 {
	if v, ok := f.peaks[class]; ok {
		return v
	}
	return f.peaks[DefaultPeakClass]
}

// EstimatedTTFTMs is the filter's TTFT estimate for c, in milliseconds; false when it has none.
func (f *PrefixAffinityFilter) EstimatedTTFTMs(c *Candidate) (float64, bool) {
	if f.predictor {
		return c.Value(ValuePredictedTTFT)
	}
	return float64(c.Load.PrefillUncachedTokens) * 1000 / f.PeakPrefillThroughput(c.Endpoint.Class), true
}

func (f *PrefixAffinityFilter) warm(c *Candidate) bool {
	m, _ := c.Value(ValuePrefixMatch)
	return m >= f.threshold
}

// Filter implements Filter.
func (f *PrefixAffinityFilter) Filter(_ context.Context, _ *Request, cands []Candidate) []Candidate {
	if len(cands) <= 1 || f.threshold <= 0 {
		return cands
	}
	if f.explore > 0 && f.r.float64() < f.explore {
		return cands
	}
	nWarm := 0
	bestWarm, bestCold := math.Inf(1), math.Inf(1)
	warmEst, coldEst := false, false
	for i := range cands {
		c := &cands[i]
		est, ok := f.EstimatedTTFTMs(c)
		if f.warm(c) {
			nWarm++
			if ok {
				bestWarm, warmEst = min(bestWarm, est), true
			}
		} else if ok {
			bestCold, coldEst = min(bestCold, est), true
		}
	}
	if nWarm == 0 || nWarm == len(cands) {
		return cands
	}
	if f.maxPenaltyMs > 0 && (!warmEst || !coldEst || bestWarm-bestCold > f.maxPenaltyMs) {
		return cands // released, or the release cannot be judged
	}
	out := cands[:0]
	for i := range cands {
		if f.warm(&cands[i]) {
			out = append(out, cands[i])
		}
	}
	return out
}

// TokenLoadScorer is llm-d's token-load-scorer: it prefers the replica with the fewest prompt
// tokens to compute before this request's first token, counting the uncached tokens of the
// requests in flight there (Load.PrefillUncachedTokens; a request leaves that count at its
// first token) plus this request's own uncached tokens on it (the prompt less the prefix
// match). Scores are min-max normalised, the lightest replica scoring 1.
type TokenLoadScorer struct{}

// Name implements Scorer.
func (TokenLoadScorer) Name() string { return "token-load" }

// Score implements Scorer.
func (TokenLoadScorer) Score(_ context.Context, req *Request, cands []Candidate, scores []float64) {
	for i := range cands {
		scores[i] = float64(cands[i].Load.PrefillUncachedTokens) + float64(cands[i].UncachedTokens(req))
	}
	lowerIsBetter(scores)
}

// ActiveRequestsScorer is llm-d's active-request-scorer: it prefers the replica with the
// fewest requests this picker dispatched there and has not seen finish (Load.Requests), for
// decode-bound traffic. Scores are min-max normalised, the least busy replica scoring 1.
type ActiveRequestsScorer struct{}

// Name implements Scorer.
func (ActiveRequestsScorer) Name() string { return "active-requests" }

// Score implements Scorer.
func (ActiveRequestsScorer) Score(_ context.Context, _ *Request, cands []Candidate, scores []float64) {
	for i := range cands {
		scores[i] = float64(cands[i].Load.Requests)
	}
	lowerIsBetter(scores)
}

// Prediction quantiles the SLO plugins judge headroom with.
const (
	QuantileUpper = "upper" // the upper-quantile predictions (p90 by default)
	QuantileMean  = "mean"  // the mean predictions
)

// sloRule computes a request's latency headroom on a candidate: objective less prediction.
type sloRule struct {
	upper      bool    // judge the upper-quantile predictions (the mean ones when a replica has none)
	tpotBuffer float64 // multiplies the TPOT limit
}

func newSLORule(quantile string, tpotBuffer float64) (sloRule, error) {
	if quantile != QuantileUpper && quantile != QuantileMean {
		return sloRule{}, fmt.Errorf("quantile %q must be %q or %q", quantile, QuantileUpper, QuantileMean)
	}
	if !(tpotBuffer > 0) || math.IsInf(tpotBuffer, 1) {
		return sloRule{}, fmt.Errorf("tpotBuffer %v must be a positive number", tpotBuffer)
	}
	return sloRule{upper: quantile == QuantileUpper, tpotBuffer: tpotBuffer}, nil
}

// headroom is a request's latency headroom on one candidate, in milliseconds.
type headroom struct {
	predicted        bool    // the candidate has predictions; nothing else is set otherwise
	ttft, tpot       float64 // objective less prediction; negative: violated
	useTTFT, useTPOT bool    // the dimension has an objective (or the request none at all)
	ttftOK, tpotOK   bool    // the dimension is met; true when it has no objective
}

func (h headroom) feasible() bool { return h.predicted && h.ttftOK && h.tpotOK }

func (r sloRule) prediction(c *Candidate, mean, upper Value) (float64, bool) {
	if r.upper {
		if v, ok := c.Value(upper); ok {
			return v, true
		}
	}
	return c.Value(mean)
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// noSLO reports whether req has no latency objective at all.
func noSLO(req *Request) bool { return req.SLO.TTFT <= 0 && req.SLO.TPOT <= 0 }

// of is req's headroom on c. A dimension without an objective is no constraint. The TPOT
// limit is the request's TPOT objective, tightened to the tightest TPOT objective of the
// requests in flight on the replica (Load.TightestTPOTObjective), times the buffer: a new
// request must not slow the streams already running there beyond their objectives. As in
// llm-d, the requests in flight tighten an objective the request has but do not give one to
// a request without.
//
// A request without any objective gets llm-d's convention, objectives of 0: both headrooms
// are minus the predictions and every replica violates both, so that the latency scorer
// prefers idle replicas, then the lowest predicted latency.
func (r sloRule) of(req *Request, c *Candidate) headroom {
	pTTFT, ok1 := r.prediction(c, ValuePredictedTTFT, ValuePredictedTTFTUpper)
	pTPOT, ok2 := r.prediction(c, ValuePredictedTPOT, ValuePredictedTPOTUpper)
	if !ok1 || !ok2 {
		return headroom{}
	}
	h := headroom{predicted: true, ttftOK: true, tpotOK: true}
	if noSLO(req) {
		return headroom{predicted: true, ttft: -pTTFT, tpot: -pTPOT, useTTFT: true, useTPOT: true}
	}
	if req.SLO.TTFT > 0 {
		h.useTTFT, h.ttft = true, msOf(req.SLO.TTFT)-pTTFT
		h.ttftOK = h.ttft >= 0
	}
	if req.SLO.TPOT > 0 {
		limit := req.SLO.TPOT
		if t := c.Load.TightestTPOTObjective; t > 0 && t < limit {
			limit = t
		}
		h.useTPOT, h.tpot = true, msOf(limit)*r.tpotBuffer-pTPOT
		h.tpotOK = h.tpot >= 0
	}
	return h
}

// SLOTierArgs are the slo-tier filter's arguments.
type SLOTierArgs struct {
	// ViolatingTierProbability is the share of decisions, 0..1, that keep the violating tier
	// instead of the feasible one. Default 0.01.
	ViolatingTierProbability float64 `json:"violatingTierProbability"`
	// Quantile is which predictions headroom is judged with: QuantileUpper (default; the
	// mean prediction where a replica has no upper one) or QuantileMean.
	Quantile string `json:"quantile"`
	// TPOTBuffer multiplies the TPOT limit. Default 1.
	TPOTBuffer float64 `json:"tpotBuffer"`
}

// DefaultSLOTierArgs returns the slo-tier filter's defaults.
func DefaultSLOTierArgs() SLOTierArgs {
	return SLOTierArgs{ViolatingTierProbability: 0.01, Quantile: QuantileUpper, TPOTBuffer: 1}
}

// SLOTierFilter is llm-d's slo-headroom-tier-filter: it splits the replicas into a feasible
// tier, where the request's predicted TTFT and TPOT both meet their limits (headroom >= 0;
// see sloRule.of for the limits), and a violating tier (replicas without predictions
// included), and keeps the feasible tier, or with probability ViolatingTierProbability the
// violating one, so that replicas recovering from overload keep receiving some traffic. When
// the chosen tier is empty, when no replica has predictions, or when the request has no
// objective, every replica passes.
type SLOTierFilter struct {
	rule    sloRule
	violate float64
	r       lockedRand
}

var (
	_ Filter      = (*SLOTierFilter)(nil)
	_ ValueReader = (*SLOTierFilter)(nil)
)

// NewSLOTierFilter returns the filter with args a; seed drives the tier draws.
func NewSLOTierFilter(a SLOTierArgs, seed uint64) (*SLOTierFilter, error) {
	rule, err := newSLORule(a.Quantile, a.TPOTBuffer)
	if err != nil {
		return nil, err
	}
	if !(a.ViolatingTierProbability >= 0 && a.ViolatingTierProbability <= 1) {
		return nil, fmt.Errorf("violatingTierProbability %v must be between 0 and 1", a.ViolatingTierProbability)
	}
	return &SLOTierFilter{rule: rule, violate: a.ViolatingTierProbability, r: newLockedRand(seed, 0x8ebc6af09c88c6e3)}, nil
}

// Name implements Filter.
func (*SLOTierFilter) Name() string { return "slo-tier" }

// ReadsValues implements ValueReader: the filter reads the predictions.
func (*SLOTierFilter) ReadsValues() bool { return true }

// Filter implements Filter.
func (f *SLOTierFilter) Filter(_ context.Context, req *Request, cands []Candidate) []Candidate {
	if len(cands) <= 1 || noSLO(req) {
		return cands
	}
	var feasible [64]bool // a decision's candidates, without allocating for pools up to 64
	var ok []bool
	if len(cands) <= len(feasible) {
		ok = feasible[:len(cands)]
	} else {
		ok = make([]bool, len(cands))
	}
	nFeasible, predicted := 0, false
	for i := range cands {
		h := f.rule.of(req, &cands[i])
		predicted = predicted || h.predicted
		if ok[i] = h.feasible(); ok[i] {
			nFeasible++
		}
	}
	if !predicted || nFeasible == 0 || nFeasible == len(cands) {
		return cands // no predictions, or the chosen tier would be all or nothing
	}
	keep := true // keep the feasible tier
	if f.violate > 0 && f.r.float64() < f.violate {
		keep = false
	}
	out := cands[:0]
	for i := range cands {
		if ok[i] == keep {
			out = append(out, cands[i])
		}
	}
	return out
}

// Latency scorer strategies for the feasible replicas.
const (
	StrategyLeast = "least" // pack: the replica closest to its limits scores highest
	StrategyMost  = "most"  // spread: the replica furthest from its limits scores highest
)

// LatencyArgs are the latency scorer's arguments.
type LatencyArgs struct {
	// TTFTWeight and TPOTWeight blend the two headrooms. Defaults 0.8 and 0.2.
	TTFTWeight float64 `json:"ttftWeight"`
	TPOTWeight float64 `json:"tpotWeight"`
	// Strategy orders the feasible replicas: StrategyLeast (default) or StrategyMost.
	Strategy string `json:"strategy"`
	// Quantile and TPOTBuffer as in SLOTierArgs.
	Quantile   string  `json:"quantile"`
	TPOTBuffer float64 `json:"tpotBuffer"`
	// Weights of the fallback used without predictions: free KV cache, relative queue length,
	// prefix match. Defaults 1 each.
	CompositeKVWeight     float64 `json:"compositeKVWeight"`
	CompositeQueueWeight  float64 `json:"compositeQueueWeight"`
	CompositePrefixWeight float64 `json:"compositePrefixWeight"`
}

// DefaultLatencyArgs returns the latency scorer's defaults.
func DefaultLatencyArgs() LatencyArgs {
	return LatencyArgs{TTFTWeight: 0.8, TPOTWeight: 0.2, Strategy: StrategyLeast, Quantile: QuantileUpper, TPOTBuffer: 1,
		CompositeKVWeight: 1, CompositeQueueWeight: 1, CompositePrefixWeight: 1}
}

// LatencyScorer is llm-d's latency-scorer. Among the feasible replicas (see SLOTierFilter) it
// scores a blend of the normalised absolute headrooms, TTFTWeight x TTFT + TPOTWeight x TPOT
// (a dimension without an objective left out, and one whose headroom is the same on every
// replica giving its weight to the other): with StrategyLeast the replica closest to its
// limits scores highest (packing), with StrategyMost the furthest. Other replicas score 0.
//
// When no replica is feasible: the idle replicas (nothing in flight from this picker) alone
// are scored if there are any; otherwise the first non-empty group of those violating TPOT
// only, those violating TTFT only, and those violating both, always by least deficit.
// A request without any objective takes this path on every replica (see sloRule.of): idle
// replicas first, then the lowest blended predicted latency, as in llm-d, whose benchmarks set
// no objectives. Scores of a group lie in [0.01, 1], so a weighted random picker can draw any
// replica of it and none outside it.
//
// Without predictions on any replica it falls back to a composite of free KV cache
// (1 - KV usage), relative queue length ((longest - own) / longest) and prefix match.
type LatencyScorer struct {
	rule                 sloRule
	ttftW, tpotW         float64
	most                 bool
	kvW, queueW, prefixW float64
}

var _ Scorer = (*LatencyScorer)(nil)

// NewLatencyScorer returns the scorer with args a.
func NewLatencyScorer(a LatencyArgs) (*LatencyScorer, error) {
	rule, err := newSLORule(a.Quantile, a.TPOTBuffer)
	if err != nil {
		return nil, err
	}
	if a.Strategy != StrategyLeast && a.Strategy != StrategyMost {
		return nil, fmt.Errorf("strategy %q must be %q or %q", a.Strategy, StrategyLeast, StrategyMost)
	}
	if err := nonNegativeWeights(map[string]float64{"ttftWeight": a.TTFTWeight, "tpotWeight": a.TPOTWeight}); err != nil {
		return nil, err
	}
	if err := nonNegativeWeights(map[string]float64{"compositeKVWeight": a.CompositeKVWeight,
		"compositeQueueWeight": a.CompositeQueueWeight, "compositePrefixWeight": a.CompositePrefixWeight}); err != nil {
		return nil, err
	}
	s := &LatencyScorer{rule: rule, ttftW: a.TTFTWeight, tpotW: a.TPOTWeight, most: a.Strategy == StrategyMost}
	sum := a.CompositeKVWeight + a.CompositeQueueWeight + a.CompositePrefixWeight
	s.kvW, s.queueW, s.prefixW = a.CompositeKVWeight/sum, a.CompositeQueueWeight/sum, a.CompositePrefixWeight/sum
	return s, nil
}

// nonNegativeWeights checks that every weight is a finite non-negative number and one is positive.
func nonNegativeWeights(ws map[string]float64) error {
	sum := 0.0
	for name, w := range ws {
		if !(w >= 0) || math.IsInf(w, 1) {
			return fmt.Errorf("%s %v must be a non-negative number", name, w)
		}
		sum += w
	}
	if !(sum > 0) {
		return fmt.Errorf("one of %s must be positive", strings.Join(slices.Sorted(maps.Keys(ws)), ", "))
	}
	return nil
}

// Name implements Scorer.
func (*LatencyScorer) Name() string { return "latency" }

// minGroupScore is the score of the worst replica of the scored group: above 0, so that a
// weighted random picker can still draw it.
const minGroupScore = 0.01

// Score implements Scorer.
func (s *LatencyScorer) Score(_ context.Context, req *Request, cands []Candidate, scores []float64) {
	// Decisions have tens of candidates: their headrooms and a group live on the stack.
	var hbuf [64]headroom
	var mbuf [64]int
	hs, members := hbuf[:0], mbuf[:0]
	if len(cands) > len(hbuf) {
		hs, members = make([]headroom, 0, len(cands)), make([]int, 0, len(cands))
	}
	predicted := false
	for i := range cands {
		hs = append(hs, s.rule.of(req, &cands[i]))
		predicted = predicted || hs[i].predicted
	}
	if !predicted {
		s.composite(cands, scores)
		return
	}
	// The first non-empty group of replicas with predictions is scored, the others score 0:
	// the feasible by the configured strategy; when none is, by least deficit, the idle,
	// then those violating TPOT only, TTFT only, both.
	for g := range 5 {
		members = members[:0]
		for i := range hs {
			h := &hs[i]
			var in bool
			switch g {
			case 0:
				in = h.feasible()
			case 1:
				in = cands[i].Load.Requests == 0
			case 2:
				in = h.ttftOK && !h.tpotOK
			case 3:
				in = !h.ttftOK && h.tpotOK
			default:
				in = true
			}
			if h.predicted && in {
				members = append(members, i)
			}
		}
		if len(members) > 0 {
			s.scoreGroup(hs, members, g == 0 && s.most, scores)
			return
		}
	}
}

// scoreGroup scores the candidates in group by blended absolute headroom, normalised within
// the group: the smallest scores highest (least), or the largest (most).
func (s *LatencyScorer) scoreGroup(hs []headroom, group []int, most bool, scores []float64) {
	loT, hiT, loP, hiP := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	useT, useP := false, false
	for _, i := range group {
		t, p := math.Abs(hs[i].ttft), math.Abs(hs[i].tpot)
		loT, hiT, loP, hiP = min(loT, t), max(hiT, t), min(loP, p), max(hiP, p)
		useT, useP = useT || hs[i].useTTFT, useP || hs[i].useTPOT
	}
	wT, wP := s.ttftW, s.tpotW
	if !useT {
		wT = 0
	}
	if !useP {
		wP = 0
	}
	const eps = 1e-9
	rangeT, rangeP := hiT-loT, hiP-loP
	switch {
	case wT > 0 && wP > 0 && rangeT <= eps && rangeP > eps:
		wT, wP = 0, 1 // one dimension the same everywhere: the other decides
	case wT > 0 && wP > 0 && rangeP <= eps && rangeT > eps:
		wT, wP = 1, 0
	}
	norm := func(v, lo, r float64) float64 {
		if r <= eps {
			return 0.5
		}
		return (math.Abs(v) - lo) / r
	}
	for _, i := range group {
		blend := 0.5
		if sum := wT + wP; sum > 0 {
			blend = (wT*norm(hs[i].ttft, loT, rangeT) + wP*norm(hs[i].tpot, loP, rangeP)) / sum
		}
		if !most {
			blend = 1 - blend
		}
		scores[i] = minGroupScore + (1-minGroupScore)*blend
	}
}

// composite scores without predictions.
func (s *LatencyScorer) composite(cands []Candidate, scores []float64) {
	longest := 0
	for i := range cands {
		longest = max(longest, cands[i].Metrics.Waiting)
	}
	for i := range cands {
		c := &cands[i]
		queue := 1.0
		if longest > 0 {
			queue = float64(longest-c.Metrics.Waiting) / float64(longest)
		}
		prefix, _ := c.Value(ValuePrefixMatch)
		scores[i] = s.kvW*(1-c.Metrics.KVUsage) + s.queueW*queue + s.prefixW*prefix
	}
}

// withDefaults returns a factory decoding its arguments strictly over defaults() (so that
// arguments not given keep their defaults) before build runs.
func withDefaults[A any](defaults func() A, build func(a A, h Handle) (any, error)) Factory {
	return func(raw json.RawMessage, h Handle) (any, error) {
		a := defaults()
		if err := decodeArgs(raw, &a); err != nil {
			return nil, err
		}
		p, err := build(a, h)
		if err != nil {
			return nil, fmt.Errorf("args: %w", err)
		}
		return p, nil
	}
}

// llmdPlugins are the factories of the llm-d plugins, registered by DefaultRegistry.
func llmdPlugins() Registry {
	return Registry{
		"prefix-affinity": withDefaults(DefaultPrefixAffinityArgs, func(a PrefixAffinityArgs, h Handle) (any, error) {
			return NewPrefixAffinityFilter(a, h.Seed)
		}),
		"token-load":      noArgs(func(Handle) any { return TokenLoadScorer{} }),
		"active-requests": noArgs(func(Handle) any { return ActiveRequestsScorer{} }),
		"slo-tier": withDefaults(DefaultSLOTierArgs, func(a SLOTierArgs, h Handle) (any, error) {
			return NewSLOTierFilter(a, h.Seed)
		}),
		"latency": withDefaults(DefaultLatencyArgs, func(a LatencyArgs, _ Handle) (any, error) {
			return NewLatencyScorer(a)
		}),
	}
}

// llmdProfiles are llm-d's policies as profiles, listed by BuiltinProfiles. Every one lists
// the prefix plugin as a scorer of weight 0: it scores nothing, but computes the prefix match
// the filters and scorers read and learns where prompts went.
func llmdProfiles() map[string]ProfileConfig {
	zero, one := 0.0, 1.0
	prefix := PluginConfig{Name: "prefix", Weight: &zero}
	return map[string]ProfileConfig{
		"llm-d-token": {Name: "llm-d-token", Filters: []PluginConfig{{Name: "prefix-affinity"}},
			Scorers: []PluginConfig{prefix, {Name: "token-load", Weight: &one}}, Picker: PluginConfig{Name: "max-score"}},
		"llm-d-active": {Name: "llm-d-active", Filters: []PluginConfig{{Name: "prefix-affinity"}},
			Scorers: []PluginConfig{prefix, {Name: "active-requests", Weight: &one}}, Picker: PluginConfig{Name: "max-score"}},
		"llm-d-predicted": {Name: "llm-d-predicted",
			Filters: []PluginConfig{
				{Name: "prefix-affinity", Args: json.RawMessage(`{"ttftSource":"predictor","maxTTFTPenaltyMs":5000}`)},
				{Name: "slo-tier"},
			},
			Scorers: []PluginConfig{prefix, {Name: "latency", Weight: &one, Args: json.RawMessage(`{"strategy":"least"}`)}},
			Picker:  PluginConfig{Name: "weighted-random"}},
	}
}

// WithPeakPrefillThroughput returns pc with peaks (tokens/s by replica class, DefaultPeakClass
// for the rest) set in the arguments of its prefix-affinity filters, over the entries they
// had: how a benchmark gives the filters a calibration per class (see
// sim.PeakPrefillThroughput). pc itself is not modified.
func WithPeakPrefillThroughput(pc ProfileConfig, peaks map[string]float64) (ProfileConfig, error) {
	out := pc
	out.Filters = append([]PluginConfig(nil), pc.Filters...)
	for i, fc := range out.Filters {
		if fc.Name != "prefix-affinity" {
			continue
		}
		args := map[string]json.RawMessage{}
		if len(bytes.TrimSpace(fc.Args)) > 0 && string(bytes.TrimSpace(fc.Args)) != "null" {
			if err := json.Unmarshal(fc.Args, &args); err != nil {
				return ProfileConfig{}, fmt.Errorf("profile %q: filter %q: args: %w", pc.Name, fc.Name, err)
			}
		}
		merged := map[string]float64{}
		if raw, ok := args["peakPrefillThroughput"]; ok {
			if err := json.Unmarshal(raw, &merged); err != nil {
				return ProfileConfig{}, fmt.Errorf("profile %q: filter %q: peakPrefillThroughput: %w", pc.Name, fc.Name, err)
			}
		}
		maps.Copy(merged, peaks)
		raw, err := json.Marshal(merged)
		if err != nil {
			return ProfileConfig{}, fmt.Errorf("profile %q: filter %q: peakPrefillThroughput: %w", pc.Name, fc.Name, err)
		}
		args["peakPrefillThroughput"] = raw
		if out.Filters[i].Args, err = json.Marshal(args); err != nil {
			return ProfileConfig{}, fmt.Errorf("profile %q: filter %q: args: %w", pc.Name, fc.Name, err)
		}
	}
	return out, nil
}
