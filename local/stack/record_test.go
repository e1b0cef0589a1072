package stack

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/augur-llm/augur/local/pgserver"
	"github.com/augur-llm/augur/picker"
	"github.com/augur-llm/augur/store"
)

// TestRecordingSurvivesPostgresOutage stops Postgres in the middle of an end-to-end run and
// starts it again: every request is answered, samples from after the restart are recorded,
// and recorded + dropped = routed.
func TestRecordingSurvivesPostgresOutage(t *testing.T) {
	pg := pgserver.StartForTest(t)
	s, obs := startStack(t, Config{Replicas: 2, Picker: picker.Config{DatabaseURL: pg.URL()}})
	client := s.NewClient()
	ctx := context.Background()
	send := func(phase string, n int) {
		t.Helper()
		for i := range n {
			id := fmt.Sprintf("%s-%d", phase, i)
			r := Chat(ctx, client, openai.ChatCompletionNewParams{Model: "sim-llama-8b",
				Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello " + id)}, MaxTokens: openai.Int(3)},
				option.WithHeader("x-request-id", id), option.WithHeader("x-slo-ttft-ms", "1000"))
			if r.Err != nil || r.Status != 200 {
				t.Fatalf("%s: %v (status %d)", id, r.Err, r.Status)
			}
			obs.wait(t, id)
		}
	}
	rec := s.Picker.Recorder
	send("before", 20)
	waitUntil(t, "samples before the outage written", func() bool { return rec.Stats().Recorded >= 20 })
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	send("during", 20)
	if err := pg.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	send("after", 20)
	waitUntil(t, "every buffered sample written", func() bool { return rec.Stats().Buffered == 0 })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	st := rec.Stats()
	obs.mu.Lock()
	routed := len(obs.m)
	obs.mu.Unlock()
	if routed != 60 || st.Added != int64(routed) || st.Recorded+st.DroppedFull+st.DroppedShutdown+st.Invalid != int64(routed) {
		t.Fatalf("routed %d, recorder %+v", routed, st)
	}
	db, err := pgxpool.New(ctx, pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := store.ReadSamples(ctx, db, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(rows)) != st.Recorded {
		t.Fatalf("%d rows in the table, recorder says %d recorded", len(rows), st.Recorded)
	}
	byID := map[string]store.Sample{}
	for _, r := range rows {
		byID[r.RequestID] = r
	}
	for i := range 20 {
		r, ok := byID[fmt.Sprintf("after-%d", i)]
		if !ok {
			t.Fatalf("sample after-%d, sent after the restart, was not recorded", i)
		}
		if r.Outcome != "ok" || r.Status != 200 || r.OutputTokens != 3 || r.SLOTTFTMs == nil || *r.SLOTTFTMs != 1000 || r.E2EMs <= 0 {
			t.Errorf("sample %+v", r)
		}
	}
	t.Logf("routed %d; recorded %d, dropped %d; write errors during the outage %d", routed, st.Recorded, st.DroppedFull+st.DroppedShutdown, st.WriteErrors)
}
