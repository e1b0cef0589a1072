package trainertest

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/augur-llm/augur/models"
	"github.com/augur-llm/augur/store"
	"github.com/augur-llm/augur/trainer"
)

// Classes are the replica classes of Rows: the second is 1.7 times slower.
var Classes = []string{"fast", "slow"}

// Epoch is when Rows' samples start.
var Epoch = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)

// Latency is the law Rows follow, in ms, without noise: a prefill of the uncached prompt
// behind the work queued ahead, and decode steps that slow with the batch.
func Latency(v *models.Vector, class string) (ttft, tpot float64) {
	get := func(name string) float64 { x, _ := v.Get(models.Index(name)); return x }
	speed := 1.0
	if class == Classes[1] {
		speed = 1.7
	}
	ttft = speed * (8 + 0.02*get("uncached_input_tokens") + 0.015*get("prefill_uncached_tokens_in_flight") + 0.3*get("decode_requests_in_flight"))
	tpot = speed * (7 + 0.05*get("decode_requests_in_flight") + 0.002*get("uncached_token_rate"))
	return ttft, tpot
}

// Rows returns n labelled rows one second apart, following Latency with multiplicative
// noise of about 3%, over a spread of loads and both classes.
func Rows(n int, seed uint64) []trainer.Row {
	rng := rand.New(rand.NewPCG(seed, 7))
	rows := make([]trainer.Row, n)
	for i := range rows {
		var v models.Vector
		set := func(name string, x float64) { v.Set(models.Index(name), x) }
		busy := rng.Float64()
		decoding := math.Floor(busy * 60)
		waiting := 0.0
		if busy > 0.85 {
			waiting = math.Floor((busy - 0.85) * 100)
		}
		input := float64(100 + rng.IntN(4000))
		match := 0.0
		if rng.IntN(2) == 0 {
			match = math.Round(rng.Float64()*10) / 10
		}
		queued := math.Floor(busy * busy * 20000 * rng.Float64())
		set("kv_cache_usage", math.Min(1, busy*0.95))
		set("num_requests_waiting", waiting)
		set("num_requests_running", decoding)
		set("prefix_match", match)
		set("inflight_requests", decoding+waiting)
		set("prefill_tokens_in_flight", queued*1.5)
		set("decode_requests_in_flight", decoding)
		set("inflight_tokens", decoding*1500+queued)
		set("metrics_age_ms", rng.Float64()*50)
		set("num_gpu_blocks", 20000)
		set("block_size", 16)
		set("input_tokens", input)
		set("max_tokens", float64(50+rng.IntN(500)))
		set("uncached_input_tokens", math.Round(input*(1-match)))
		set("prefill_uncached_tokens_in_flight", queued)
		set("decode_tokens_left", decoding*200)
		if decoding > 0 {
			set("last_token_age_ms", rng.Float64()*20)
		}
		set("request_rate", busy*10)
		set("uncached_token_rate", busy*8000*rng.Float64())
		set("dispatched_since_scrape", float64(rng.IntN(3)))
		set("first_tokens_since_scrape", float64(rng.IntN(3)))
		set("finished_since_scrape", float64(rng.IntN(3)))
		step := 7 + 0.05*decoding + rng.Float64()*20*busy
		set("step_ms", step)
		set("step_slow_ms", step*(0.9+0.2*rng.Float64()))
		set("last_step_ms", step*(0.8+0.4*rng.Float64()))
		set("step_wait_ms", step*rng.Float64())
		set("request_rate_fast", busy*12*rng.Float64())
		set("uncached_token_rate_fast", busy*9000*rng.Float64())
		set("step_age_ms", step*rng.Float64())
		set("next_step_requests", float64(rng.IntN(3)))
		set("next_step_uncached_tokens", float64(rng.IntN(3000)))
		set("current_step_uncached_tokens", math.Floor(queued*rng.Float64()))
		set("decode_context_tokens", decoding*(1500+float64(rng.IntN(2000))))
		class := Classes[rng.IntN(len(Classes))]
		ttft, tpot := Latency(&v, class)
		noise := func() float64 { return math.Exp(rng.NormFloat64() * 0.03) }
		rows[i] = trainer.Row{At: Epoch.Add(time.Duration(i) * time.Second), Features: v, Class: class, TTFT: ttft * noise(), TPOT: tpot * noise()}
	}
	return rows
}

// Artifacts trains mean and calibrated p90 models for both targets on 6,000 rows of seed 1
// and returns them (published by Train's judgement, as no champion exists).
func Artifacts(t testing.TB) []models.Artifact {
	t.Helper()
	return Train(t, Rows(6000, 1))
}

// Train trains mean and calibrated p90 models for both targets on rows, with no champion, and
// returns them; a target not published fails t.
func Train(t testing.TB, rows []trainer.Row) []models.Artifact {
	t.Helper()
	rep, err := trainer.Train(context.Background(), rows, nil, trainer.Options{})
	if err != nil {
		t.Fatalf("trainertest: %v", err)
	}
	var out []models.Artifact
	for _, tr := range rep.Targets {
		if !tr.Published() {
			t.Fatalf("trainertest: %s not published: %s", tr.Target, tr.Why)
		}
		out = append(out, tr.Artifacts...)
	}
	return out
}

// Sample is row as the picker would have recorded it: a streamed, completed request to a
// replica of the row's class, its features and observed latencies, with request id "r<i>".
func Sample(i int, r trainer.Row) store.Sample {
	ttft, tpot := r.TTFT, r.TPOT
	return store.Sample{Time: r.At, RequestID: fmt.Sprintf("r%d", i), Model: "m", Stream: true,
		Replica: "sim-" + r.Class, ReplicaAddress: "10.0.0.1:8000", ReplicaClass: r.Class, SchemaVersion: models.SchemaVersion,
		Features: r.Features, TTFTMs: &ttft, TPOTMs: &tpot, E2EMs: ttft + 100*tpot, OutputTokens: 101, Outcome: "ok", Status: 200}
}
