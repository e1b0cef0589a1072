package predictor_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"k8s.io/utils/clock"

	"github.com/augur-llm/augur/models"
	"github.com/augur-llm/augur/picker"
	"github.com/augur-llm/augur/predictor"
	"github.com/augur-llm/augur/requestcontrol"
	"github.com/augur-llm/augur/scheduler"
	"github.com/augur-llm/augur/scheduler/schedulertest"
	"github.com/augur-llm/augur/trainer"
	"github.com/augur-llm/augur/windtunnel/corpus"
)

// windTunnelModels trains the default models on wind-tunnel traffic (the reference mix on
// the heterogeneous pool, every load, 20 s runs): trees as deep and full as real traffic
// makes them, where synthetic samples may stop short. They are trained once per test binary
// (-count N reuses them).
func windTunnelModels(b *testing.B) []models.Artifact {
	b.Helper()
	arts, err := trainWindTunnel()
	if err != nil {
		b.Fatal(err)
	}
	return arts
}

var trainWindTunnel = sync.OnceValues(func() ([]models.Artifact, error) {
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
		return nil, err
	}
	rep, err := trainer.Train(context.Background(), rows, nil, trainer.Options{})
	if err != nil {
		return nil, err
	}
	var arts []models.Artifact
	for _, t := range rep.Targets {
		arts = append(arts, t.Artifacts...)
	}
	return arts, nil
})

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
	p.Predict(context.Background(), &req, cands) // the buffer grows once
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		p.Predict(context.Background(), &req, cands)
	}
}

// windTunnelClasses are the replica classes the wind-tunnel models know.
var windTunnelClasses = []string{"8b-h100", "8b-a100"}

// BenchmarkDecision64Prompt8000Predicted is BenchmarkSchedule64Prompt8000 (package scheduler)
// with the predictor: one whole decision over 64 replicas with warm prefix records and an
// 8,000-token prompt under the llm-d profile, every candidate's TTFT and TPOT predicted
// (mean and calibrated p90) by models trained on wind-tunnel traffic.
func BenchmarkDecision64Prompt8000Predicted(b *testing.B) {
	arts := windTunnelModels(b)
	set, err := predictor.Load(arts)
	if err != nil {
		b.Fatal(err)
	}
	// The request path predicts what the reference predicts with these models too.
	comparePredictions(b, arts, set, 50, 3)
	d := schedulertest.NewDecision(b, schedulertest.DecisionOptions{Classes: windTunnelClasses,
		Predictor: func(clk clock.PassiveClock) scheduler.Predictor {
			p := predictor.New(predictor.Options{Clock: clk})
			p.Swap(set)
			return p
		}})
	res, err := d.Decide(0)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range res.Targets {
		_, ok := c.Value(scheduler.ValuePredictedTPOTUpper)
		if c.ModelVersion != set.Version() || !ok {
			b.Fatalf("the decision was not predicted by the models: version %q, p90 TPOT set %v", c.ModelVersion, ok)
		}
	}
	checkAgainstReference(b, newRefSet(b, arts, set.Version()), set.Version(), d.Request(0), res.Targets, d.Clock.Now())
	d.Run(b)
}
