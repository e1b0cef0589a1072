package picker

import (
	"reflect"
	"testing"
	"time"

	"github.com/augur-llm/augur/models"
	"github.com/augur-llm/augur/pool"
	"github.com/augur-llm/augur/requestcontrol"
	"github.com/augur-llm/augur/scheduler"
	"github.com/augur-llm/augur/store"
)

// Every field of the sample comes from the right field of the completion: each input value
// is distinct, so a swapped or forgotten mapping fails.
func TestSampleOfMapsEveryField(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	ms := time.Millisecond
	var feats models.Vector
	for i, f := range models.Schema() {
		x := float64(100 + i)
		if f.Max <= 1 {
			x = 1 / x
		}
		feats.Set(i, x)
	}
	pttft, ptpot := 211.0, 33.0
	c := requestcontrol.Completion{
		Request: scheduler.Request{ID: "req-1", Model: "llama", PromptTokens: 900, MaxTokens: 64, Stream: true,
			SLO: scheduler.SLO{TTFT: 500 * ms, TPOT: 40 * ms}, Objective: "chat", FairnessID: "tenant-a", SessionID: "s"},
		Target:           pool.Endpoint{Name: "sim-2", Address: "10.0.0.2:8000", Class: "8b-h100"},
		Features:         feats,
		ServedByFallback: true,
		PredictedTTFTMs:  &pttft, PredictedTPOTMs: &ptpot,
		Received:   t0,
		Admitted:   t0.Add(1 * ms),
		Decided:    t0.Add(2 * ms),
		Dispatched: t0.Add(3 * ms),
		FirstToken: t0.Add(250 * ms),
		End: requestcontrol.End{Outcome: requestcontrol.OutcomeOK, Status: 200, OutputTokens: 17,
			Usage: requestcontrol.Usage{PromptTokens: 901, CompletionTokens: 17, CachedTokens: 640}, HasUsage: true},
		TTFT: 247 * ms, TPOT: 31 * ms, E2E: 743 * ms,
	}
	f := func(v float64) *float64 { return &v }
	i := func(v int) *int { return &v }
	want := store.Sample{
		Time: t0.Add(3 * ms), RequestID: "req-1", Model: "llama", Objective: "chat", FairnessID: "tenant-a", Stream: true,
		Replica: "sim-2", ReplicaAddress: "10.0.0.2:8000", ReplicaClass: "8b-h100", ServedByFallback: true,
		SchemaVersion: models.SchemaVersion, Features: feats, QueuedMs: f(1),
		SLOTTFTMs: f(500), SLOTPOTMs: f(40), PredictedTTFTMs: f(211), PredictedTPOTMs: f(33),
		DecisionUs: 2000, TTFTMs: f(247), TPOTMs: f(31), E2EMs: 743,
		PromptTokensReported: i(901), CachedTokensReported: i(640), OutputTokens: 17, Outcome: "ok", Status: 200,
	}
	if got := SampleOf(c); !reflect.DeepEqual(got, want) {
		t.Errorf("sample\n got %+v\nwant %+v", got, want)
	}

	// What was not set or measured is NULL, never 0.
	c.SLO, c.TTFT, c.TPOT, c.HasUsage, c.PredictedTTFTMs, c.PredictedTPOTMs = scheduler.SLO{}, 0, 0, false, nil, nil
	got := SampleOf(c)
	if got.SLOTTFTMs != nil || got.SLOTPOTMs != nil || got.TTFTMs != nil || got.TPOTMs != nil || got.PromptTokensReported != nil ||
		got.CachedTokensReported != nil || got.PredictedTTFTMs != nil {
		t.Errorf("unset values must be NULL: %+v", got)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("sample of a real completion is invalid: %v", err)
	}
}

// A refused request's sample has no replica, its own size, its objectives, how long it
// waited and why it was refused; it is valid, and a dispatched one without a replica is not.
func TestSampleOfRefusal(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	ms := time.Millisecond
	r := requestcontrol.Refusal{
		Request: scheduler.Request{ID: "req-2", Model: "llama", PromptTokens: 900, MaxTokens: 64, Stream: true,
			SLO: scheduler.SLO{TTFT: 500 * ms}, Objective: "batch", FairnessID: "tenant-b"},
		Received: t0, Refused: t0.Add(250 * ms), Outcome: requestcontrol.OutcomeRejected, Status: 429, Reason: "rejected-saturated",
	}
	var feats models.Vector
	feats.Set(models.Index("input_tokens"), 900)
	feats.Set(models.Index("max_tokens"), 64)
	q, slo := 250.0, 500.0
	want := store.Sample{
		Time: t0.Add(250 * ms), RequestID: "req-2", Model: "llama", Objective: "batch", FairnessID: "tenant-b", Stream: true,
		Refused: true, Reason: "rejected-saturated", QueuedMs: &q, SchemaVersion: models.SchemaVersion, Features: feats,
		SLOTTFTMs: &slo, Outcome: "rejected", Status: 429,
	}
	got := SampleOfRefusal(r)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("sample\n got %+v\nwant %+v", got, want)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("the sample of a refusal is invalid: %v", err)
	}
	got.Refused = false
	if err := got.Validate(); err == nil {
		t.Error("a dispatched request's sample without a replica is valid")
	}
}
