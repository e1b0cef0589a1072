package predictor_test

import (
	"context"
	"testing"
	"time"

	"github.com/augur-llm/augur/models"
	"github.com/augur-llm/augur/picker"
	"github.com/augur-llm/augur/predictor"
	"github.com/augur-llm/augur/requestcontrol"
	"github.com/augur-llm/augur/trainer"
	"github.com/augur-llm/augur/windtunnel/corpus"
)

// windTunnelModels trains the default models on wind-tunnel traffic (the reference mix on
// the heterogeneous pool, every load, 20 s runs): trees as deep and full as real traffic
// makes them, where synthetic samples may stop short.
func windTunnelModels(b *testing.B) []models.Artifact {
	b.Helper()
	var rows []trainer.Row
	sc := corpus.DefaultScenarios()[0]
	_, err := corpus.Generate(context.Background(), corpus.Options{
		Scenarios: []corpus.Scenario{sc}, Duration: 20 * time.Second,
		NewObservers: func(corpus.Run) []requestcontrol.Observer {
			return []requestcontrol.Observer{requestcontrol.ObserverFunc(func(c requestcontrol.Completion) {
				s := picker.SampleOf(c)
				if r, ok := trainer.RowOf(&s); ok {
					rows = append(rows, r)
				}
			})}
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	rep, err := trainer.Train(context.Background(), rows, nil, trainer.Options{})
	if err != nil {
		b.Fatal(err)
	}
	var arts []models.Artifact
	for _, t := range rep.Targets {
		arts = append(arts, t.Artifacts...)
	}
	return arts
}

// BenchmarkPredict32WindTunnel is one decision's predictions for 32 candidates with models
// trained on wind-tunnel traffic: both targets, mean and p90, features extracted per candidate.
func BenchmarkPredict32WindTunnel(b *testing.B) {
	set, err := predictor.Load(windTunnelModels(b))
	if err != nil {
		b.Fatal(err)
	}
	p := predictor.New(predictor.Options{})
	p.Swap(set)
	cands := candidates(b, 32, time.Now())
	for i := range cands {
		cands[i].Endpoint.Class = []string{"8b-h100", "8b-a100"}[i%2]
	}
	req := request()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		p.Predict(context.Background(), &req, cands)
	}
}
