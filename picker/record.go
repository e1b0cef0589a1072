package picker

import (
	"github.com/augur-llm/augur/extproc"
	"github.com/augur-llm/augur/store"
)

// sample turns a finished request into its training sample: the chosen replica's state as
// the decision saw it, and what was observed.
func sample(c extproc.Completion) store.Sample {
	f := c.Features
	ms := func(d interface{ Seconds() float64 }) float64 { return d.Seconds() * 1000 }
	s := store.Sample{
		Time: c.Dispatched, RequestID: c.RequestID, Model: c.Model, Objective: c.Objective, FairnessID: c.FairnessID,
		Stream: c.Stream, Replica: c.Target.Name, ReplicaAddress: c.Target.Address, ReplicaClass: c.Target.Class,
		ServedByFallback: c.ServedByFallback,
		KVCacheUsage:     f.Metrics.KVUsage, NumRequestsWaiting: f.Metrics.Waiting, NumRequestsRunning: f.Metrics.Running,
		PrefixMatch: f.PrefixMatch, InflightRequests: int(f.Load.Requests), PrefillTokensInFlight: f.Load.PrefillTokens,
		DecodeRequestsInFlight: int(f.Load.DecodeRequests), InflightTokens: f.Load.Tokens,
		MetricsAgeMs: max(0, ms(c.Dispatched.Sub(f.Metrics.ScrapedAt))), NumGPUBlocks: f.Metrics.NumGPUBlocks,
		BlockSize: f.Metrics.BlockSize, InputTokens: c.PromptTokens, MaxTokens: c.MaxTokens,
		DecisionUs: c.DecisionLatency.Seconds() * 1e6, E2EMs: ms(c.E2E), OutputTokens: c.OutputTokens,
		Outcome: string(c.Outcome), Status: c.Status,
	}
	if c.SLO.TTFT > 0 {
		v := ms(c.SLO.TTFT)
		s.SLOTTFTMs = &v
	}
	if c.SLO.TPOT > 0 {
		v := ms(c.SLO.TPOT)
		s.SLOTPOTMs = &v
	}
	if c.TTFT > 0 {
		v := ms(c.TTFT)
		s.TTFTMs = &v
	}
	if c.TPOT > 0 {
		v := ms(c.TPOT)
		s.TPOTMs = &v
	}
	if c.HasUsage {
		p, k := c.Usage.PromptTokens, c.Usage.CachedTokens
		s.PromptTokensReported, s.CachedTokensReported = &p, &k
	}
	return s
}
