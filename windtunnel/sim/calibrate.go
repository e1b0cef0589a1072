package sim

import (
	"fmt"
	"slices"
	"time"

	"github.com/augur-llm/augur/tokens"
)

// CalibrationSamples is how many cold prompts PeakPrefillThroughput times: odd, so that the
// median is one of them.
const CalibrationSamples = 31

// PeakPrefillThroughput calibrates a replica of profile p the way llm-d calibrates its
// prefix-affinity filter: the chunk size (MaxNumBatchedTokens, the most prompt tokens one step
// computes) divided by the median TTFT of a cold prompt of exactly one chunk on an idle
// replica, in tokens per second. It runs a virtual-time Replica, one prompt at a time, each
// sharing no block with the others, with the profile's step-time jitter (seeded, so the result
// repeats). The built-in profiles give about 16,950 tokens/s (32b-tp2-h100, within llm-d's
// 15,928-20,480 for Qwen3-32B TP2 on H100), 36,260 (8b-h100) and 23,340 (8b-a100, whose chunk
// is 2,048 tokens).
func PeakPrefillThroughput(p Profile) (float64, error) {
	r, err := NewReplica(Config{Model: "calibration", Profile: p, Seed: 1})
	if err != nil {
		return 0, err
	}
	chunk := p.MaxNumBatchedTokens
	if chunk+1 > p.MaxModelLen {
		chunk = p.MaxModelLen - 1 // the prompt and its one output token must fit
	}
	ttfts := make([]time.Duration, 0, CalibrationSamples)
	now := time.Unix(0, 0)
	for i := range CalibrationSamples {
		// A distinct first block makes every block of the prompt distinct (hashes are chained).
		// A fresh text each time: the engine keeps a reference to it.
		text := make([]byte, chunk*tokens.BytesPerToken)
		copy(text, fmt.Sprintf("calibration prompt %06d ", i))
		for j := 25; j < len(text); j++ {
			text[j] = 'a' + byte((i+j)%26)
		}
		if err := r.Submit(now, i, Request{Prompt: TextPrompt(text), MaxTokens: 1}); err != nil {
			return 0, err
		}
		start, first := now, time.Duration(-1)
		for first < 0 {
			d, ok, err := r.Step(now)
			if err != nil {
				return 0, err
			}
			if !ok {
				return 0, fmt.Errorf("sim: profile %q: the calibration prompt produced no token", p.Name)
			}
			now = now.Add(d)
			r.Finish(now, func(t Token) {
				if t.Tag == i && t.Generated == 1 {
					first = now.Sub(start)
				}
			})
		}
		if s := r.Snapshot(); s.Running+s.Waiting != 0 {
			return 0, fmt.Errorf("sim: profile %q: the calibration prompt is still running after its only token", p.Name)
		}
		ttfts = append(ttfts, first)
	}
	slices.Sort(ttfts)
	median := ttfts[len(ttfts)/2]
	return float64(chunk) / median.Seconds(), nil
}
