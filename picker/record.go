package picker

import (
	"time"

	"github.com/augur-llm/augur/models"
	"github.com/augur-llm/augur/requestcontrol"
	"github.com/augur-llm/augur/store"
)

// Recording returns the observer that hands every completion to rec as its sample. The
// wind tunnel uses it too, so virtual-time samples are recorded exactly as production's.
func Recording(rec *store.Recorder) requestcontrol.Observer {
	return requestcontrol.ObserverFunc(func(c requestcontrol.Completion) { rec.Add(SampleOf(c)) })
}

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

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// optionalMs is d in milliseconds, or nil (NULL) when d is not positive: not set, not measured.
func optionalMs(d time.Duration) *float64 {
	if d <= 0 {
		return nil
	}
	v := ms(d)
	return &v
}
