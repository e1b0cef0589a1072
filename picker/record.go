package picker

import (
	"time"

	"github.com/augur-llm/augur/models"
	"github.com/augur-llm/augur/requestcontrol"
	"github.com/augur-llm/augur/store"
)

// Recording returns the observer that hands every request to rec as its sample: each
// completion and each refusal. The wind tunnel uses it too, so virtual-time samples are
// recorded exactly as production's.
func Recording(rec *store.Recorder) requestcontrol.RefusalObserver {
	return SampleFunc(rec.Add)
}

// SampleFunc is a refusal observer that turns every completion and refusal into its sample
// and hands it to the function.
type SampleFunc func(store.Sample)

// Observe implements requestcontrol.Observer.
func (f SampleFunc) Observe(c requestcontrol.Completion) { f(SampleOf(c)) }

// Refused implements requestcontrol.RefusalObserver.
func (f SampleFunc) Refused(r requestcontrol.Refusal) { f(SampleOfRefusal(r)) }

// SampleOf turns a finished request into its training sample: the primary's features as the
// decision saw them, the prediction used, and what was observed.
func SampleOf(c requestcontrol.Completion) store.Sample {
	s := store.Sample{
		Time: c.Dispatched, RequestID: c.ID, Model: c.Model, Objective: c.Objective, FairnessID: c.FairnessID,
		Stream: c.Stream, Replica: c.Target.Name, ReplicaAddress: c.Target.Address, ReplicaClass: c.Target.Class,
		ServedByFallback: c.ServedByFallback, SchemaVersion: models.SchemaVersion, Features: c.Features,
		PredictedTTFTMs: c.PredictedTTFTMs, PredictedTPOTMs: c.PredictedTPOTMs,
		PredictedTTFTUpperMs: c.PredictedTTFTUpperMs, PredictedTPOTUpperMs: c.PredictedTPOTUpperMs,
		SLOTTFTMs: optionalMs(c.SLO.TTFT), SLOTPOTMs: optionalMs(c.SLO.TPOT), TTFTMs: optionalMs(c.TTFT), TPOTMs: optionalMs(c.TPOT),
		DecisionUs: float64(c.DecisionLatency()) / float64(time.Microsecond), E2EMs: ms(c.E2E),
		OutputTokens: c.OutputTokens, Outcome: string(c.Outcome), Status: c.Status,
	}
	if !c.Admitted.IsZero() {
		q := ms(c.Admitted.Sub(c.Received))
		s.QueuedMs = &q
	}
	if c.ModelVersion != "" {
		v := c.ModelVersion
		s.ModelVersion = &v
	}
	if c.HasUsage {
		p, k := c.Usage.PromptTokens, c.Usage.CachedTokens
		s.PromptTokensReported, s.CachedTokensReported = &p, &k
	}
	return s
}

// Request features a refused request's sample keeps: what it asked for, with no replica.
var (
	idxInputTokens = models.Index("input_tokens")
	idxMaxTokens   = models.Index("max_tokens")
)

// SampleOfRefusal turns a request refused before dispatch into its sample: no replica, the
// request's own features (its size), its objectives, how long it waited and why it was
// refused.
func SampleOfRefusal(r requestcontrol.Refusal) store.Sample {
	s := store.Sample{
		Time: r.Refused, RequestID: r.ID, Model: r.Model, Objective: r.Objective, FairnessID: r.FairnessID, Stream: r.Stream,
		Refused: true, Reason: r.Reason, SchemaVersion: models.SchemaVersion,
		SLOTTFTMs: optionalMs(r.SLO.TTFT), SLOTPOTMs: optionalMs(r.SLO.TPOT),
		Outcome: string(r.Outcome), Status: r.Status,
	}
	s.Features.Set(idxInputTokens, float64(r.PromptTokens))
	if r.MaxTokens > 0 {
		s.Features.Set(idxMaxTokens, float64(r.MaxTokens))
	}
	q := max(0, ms(r.Refused.Sub(r.Received)))
	s.QueuedMs = &q
	return s
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// optionalMs is d in milliseconds, or nil (NULL) when d is not positive: not set, not measured.
func optionalMs(d time.Duration) *float64 {
	if d <= 0 {
		return nil
	}
	v := ms(d)
	return &v
}
