package sim_test

import (
	"strings"
	"testing"
	"time"

	"github.com/augur-llm/augur/windtunnel/sim"
)

// The reference's decode sanity point: on the 8B/H100 profile a step decoding 32 requests of
// about 7.5k tokens of context takes about 17 ms.
func TestDecodeStepAtBatch32(t *testing.T) {
	prof, err := sim.LookupProfile("8b-h100")
	if err != nil {
		t.Fatal(err)
	}
	r, err := sim.NewReplica(sim.Config{Model: "m", Profile: prof, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(0, 0)
	for i := range 32 {
		// Distinct prompts of 7,500 tokens (30,000 bytes), so nothing is shared.
		prompt := strings.Repeat(string(rune('A'+i%26))+string(rune('a'+i/26)), 15000)
		if err := r.Submit(now, i, sim.Request{Prompt: sim.TextPrompt([]byte(prompt)), MaxTokens: 64}); err != nil {
			t.Fatal(err)
		}
	}
	decoding := map[int]bool{}
	var decodeSteps []time.Duration
	// Prefill admits about one prompt per 8,192-token step; with 64 tokens each, all 32 are
	// decoding together once the last prefill is done.
	for range 400 {
		d, ok, err := r.Step(now)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		allDecoding := len(decoding) == 32
		now = now.Add(d)
		r.Finish(now, func(tok sim.Token) { decoding[tok.Tag] = true })
		if allDecoding && len(decodeSteps) < 10 {
			decodeSteps = append(decodeSteps, d)
		}
	}
	if len(decodeSteps) == 0 {
		t.Fatal("no step decoded all 32 requests")
	}
	for _, d := range decodeSteps {
		if d < 17*time.Millisecond*3/4 || d > 17*time.Millisecond*5/4 {
			t.Errorf("decode step at batch 32 took %v, want 17 ms +-25%%", d)
		}
	}
	t.Logf("decode steps at batch 32: %v", decodeSteps)
	if s := r.Snapshot(); s.Running != 0 || s.GenerationTokens != 32*64 {
		t.Errorf("end state %+v: every request should have finished with 64 tokens", s)
	}
}
