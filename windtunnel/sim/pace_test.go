package sim

import (
	"context"
	"testing"
	"time"

	"k8s.io/utils/clock"
)

// modelledEnd runs reqs through a virtual-time Replica from epoch and returns when the last
// token is produced: the time the latency model gives for the whole batch.
func modelledEnd(t *testing.T, cfg Config, prompts []Prompt, maxTokens int) time.Duration {
	t.Helper()
	r, err := NewReplica(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range prompts {
		if err := r.Submit(epoch, i, Request{Prompt: p, MaxTokens: maxTokens}); err != nil {
			t.Fatal(err)
		}
	}
	now := epoch
	for {
		d, ok, err := r.Step(now)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return now.Sub(epoch)
		}
		now = now.Add(d)
		r.Finish(now, func(Token) {})
	}
}

// TestRealTimeKeepsModelledPace runs the same requests through a real-clock Engine and a
// virtual-time Replica with the same seed: the engine must finish when the model says, even
// when its timers fire late (a busy machine), because a late step is made up by starting the
// next one at the modelled time rather than at the late wake-up.
func TestRealTimeKeepsModelledPace(t *testing.T) {
	if testing.Short() {
		t.Skip("runs about 2 s of real time")
	}
	cfg := Config{Model: "m", Profile: profile(t, "32b-tp2-h100"), Seed: 3}
	var prompts []Prompt
	for i := range 8 {
		prompts = append(prompts, TextPrompt(text(uint64(100+i), 500)))
	}
	const maxTokens = 100
	want := modelledEnd(t, cfg, prompts, maxTokens)

	// Every request is queued before the engine runs, so both plan the same steps.
	e, err := New(cfg, clock.RealClock{})
	if err != nil {
		t.Fatal(err)
	}
	var hs []*Handle
	for _, p := range prompts {
		hs = append(hs, submit(t, e, p, maxTokens))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- e.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	for _, h := range hs {
		wait(t, h)
	}
	got := time.Since(start)
	t.Logf("modelled %v, real %v (%+.1f%%), %d steps", want, got, 100*(got.Seconds()/want.Seconds()-1), e.Snapshot().Steps)
	if got > want+want/20 || got < want-want/20 {
		t.Errorf("real-time engine took %v for what the model says takes %v", got, want)
	}
}
