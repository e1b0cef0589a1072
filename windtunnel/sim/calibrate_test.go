package sim_test

import (
	"testing"

	"github.com/augur-llm/augur/windtunnel/sim"
)

// The calibration of every built-in profile is its chunk over the cold TTFT of one chunk: one
// step of the reference formula (jitter averages out in the median), so it can be checked by
// hand, and it repeats.
func TestPeakPrefillThroughput(t *testing.T) {
	for _, name := range sim.ProfileNames() {
		p, err := sim.LookupProfile(name)
		if err != nil {
			t.Fatal(err)
		}
		got, err := sim.PeakPrefillThroughput(p)
		if err != nil {
			t.Fatal(err)
		}
		c := float64(p.MaxNumBatchedTokens)
		stepMicros := p.T0Micros + max(p.TwMicros, p.KLinMicros*c) + p.KAttMicros*c*c/2
		want := c / (stepMicros / 1e6)
		if got < want*(1-p.Jitter/2) || got > want*(1+p.Jitter/2) {
			t.Errorf("%s: %.0f tokens/s, want %.0f (one step of %.1f ms) within half the jitter", name, got, want, stepMicros/1e3)
		}
		again, _ := sim.PeakPrefillThroughput(p)
		if again != got {
			t.Errorf("%s: %.3f then %.3f: the calibration must repeat", name, got, again)
		}
		t.Logf("%s: peak prefill throughput %.0f tokens/s (chunk %d, nominal %.0f)", name, got, p.MaxNumBatchedTokens, want)
	}
}

func TestPeakPrefillThroughputRefusesAnInvalidProfile(t *testing.T) {
	if _, err := sim.PeakPrefillThroughput(sim.Profile{Name: "broken"}); err == nil {
		t.Fatal("an invalid profile was calibrated")
	}
}
