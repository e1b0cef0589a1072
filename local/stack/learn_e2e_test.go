package stack

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/augur-llm/augur/local/pgserver"
	"github.com/augur-llm/augur/models"
	"github.com/augur-llm/augur/picker"
	"github.com/augur-llm/augur/predictor"
	"github.com/augur-llm/augur/store"
	"github.com/augur-llm/augur/trainer"
)

// TestLearningLoop is the whole loop through real processes' code: the picker routes real
// streaming OpenAI requests and records them, the trainer trains from what it recorded and
// publishes, the running picker loads the new models without a restart, and the samples of
// the next requests carry their version and their predictions.
func TestLearningLoop(t *testing.T) {
	pg := pgserver.StartForTest(t)
	s, obs := startStack(t, Config{Replicas: 3, Picker: picker.Config{DatabaseURL: pg.URL(),
		Models: picker.ModelsConfig{PollInterval: metav1.Duration{Duration: 50 * time.Millisecond}}}})
	ctx := context.Background()
	client := s.NewClient()
	send := func(phase string, n, workers int) []string {
		t.Helper()
		var ids []string
		var mu sync.Mutex
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < n; i += workers {
					id := fmt.Sprintf("%s-%d", phase, i)
					// Prompts of 30 to 3,000 tokens, outputs of 2 to 21: samples that vary.
					prompt := strings.Repeat("word ", 30+(i*97)%3000)
					r := StreamChat(ctx, client, openai.ChatCompletionNewParams{Model: "sim-llama-8b",
						Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)}, MaxTokens: openai.Int(int64(2 + i%20))},
						option.WithHeader("x-request-id", id))
					if r.Err != nil || r.Status != 200 {
						errs <- fmt.Errorf("%s: %v (status %d)", id, r.Err, r.Status)
						return
					}
					mu.Lock()
					ids = append(ids, id)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		for _, id := range ids {
			obs.wait(t, id)
		}
		return ids
	}
	p := s.Picker
	if p.Predictor.Source(models.TTFT) == predictor.SourceModel {
		t.Fatal("a model serves before any was trained")
	}
	first := send("first", 240, 4)
	waitUntil(t, "the first requests' samples written", func() bool { return p.Recorder.Stats().Recorded >= int64(len(first)) })

	db, err := pgxpool.New(ctx, pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rep, err := trainer.Run(ctx, db, trainer.Options{MinSamples: 100})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Published() {
		t.Fatalf("the trainer did not publish: %+v", rep.Targets)
	}
	waitUntil(t, "the picker loads the published models", func() bool { return p.Predictor.Version() == rep.Run })
	if p.Predictor.Source(models.TTFT) != predictor.SourceModel || p.Predictor.Source(models.TPOT) != predictor.SourceModel {
		t.Fatal("the loaded models do not serve")
	}

	next := send("next", 20, 2)
	waitUntil(t, "the next requests' samples written", func() bool { return p.Recorder.Stats().Recorded >= int64(len(first)+len(next)) })
	rows, err := store.ReadSamples(ctx, db, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]store.Sample{}
	for _, r := range rows {
		byID[r.RequestID] = r
	}
	for _, id := range first[:5] {
		s := byID[id]
		if s.ModelVersion == nil || !strings.Contains(*s.ModelVersion, "prior-") || s.PredictedTTFTMs == nil {
			t.Errorf("%s, before training: model version %v, predicted TTFT %v; want the cold start's", id, s.ModelVersion, s.PredictedTTFTMs)
		}
	}
	for _, id := range next {
		s, ok := byID[id]
		if !ok {
			t.Fatalf("%s not recorded", id)
		}
		if s.ModelVersion == nil || *s.ModelVersion != rep.Run {
			t.Errorf("%s: model version %v, want %s", id, s.ModelVersion, rep.Run)
		}
		for name, v := range map[string]*float64{"ttft": s.PredictedTTFTMs, "tpot": s.PredictedTPOTMs,
			"ttft upper": s.PredictedTTFTUpperMs, "tpot upper": s.PredictedTPOTUpperMs} {
			if v == nil || !(*v > 0) {
				t.Errorf("%s: predicted %s %v", id, name, v)
			}
		}
		if s.PredictedTTFTUpperMs != nil && s.PredictedTTFTMs != nil && *s.PredictedTTFTUpperMs < *s.PredictedTTFTMs {
			t.Errorf("%s: p90 %v below the mean %v", id, *s.PredictedTTFTUpperMs, *s.PredictedTTFTMs)
		}
	}
}
