package sim

import (
	"fmt"
	"sort"
)

// BlockSize is the KV-cache block size in tokens. It is fixed rather than configurable because
// the picker predicts cache hits with the same 16-token (64-byte) blocks under the token rule.
const BlockSize = 16

// Profile describes one kind of replica: its step-time coefficients and its vLLM limits.
// Coefficients are in microseconds so that the sub-nanosecond attention term stays exact.
type Profile struct {
	Name string

	// Step time, see the package documentation:
	// T0 + max(Tw, KLin*N) + KKV*sum_decode(ctx) + KAtt*sum_prefill(c*(ctx+c/2)).
	T0Micros   float64 // per-step overhead (sampler, scheduling)
	TwMicros   float64 // weight-read floor of any forward pass
	KLinMicros float64 // per token in the step
	KKVMicros  float64 // per context token of each decoding request
	KAttMicros float64 // per query-key pair of each prefill chunk

	// Jitter is the half-width of the uniform random factor applied to every step, as a
	// fraction (0.05 means each step lasts between 95% and 105% of the formula).
	Jitter float64

	NumGPUBlocks        int // KV capacity in blocks, including vLLM's reserved null block
	MaxNumSeqs          int // most requests running at once
	MaxNumBatchedTokens int // token budget of one step
	MaxModelLen         int // prompt plus max_tokens may not exceed this
}

// builtinProfiles returns fresh copies so that callers can never alter a shared table.
func builtinProfiles() map[string]Profile {
	return map[string]Profile{
		// Coefficients from the reference model (Vidur H100 profiles); KV capacity ~400k tokens.
		"8b-h100": {
			Name: "8b-h100", T0Micros: 1500, TwMicros: 6000, KLinMicros: 22, KKVMicros: 0.045,
			KAttMicros: 1.3e-3, Jitter: 0.05, NumGPUBlocks: 25000, MaxNumSeqs: 1024,
			MaxNumBatchedTokens: 8192, MaxModelLen: 131072,
		},
		// 307,328 tokens of KV as measured by llm-d for Qwen3-32B on two H100s.
		"32b-tp2-h100": {
			Name: "32b-tp2-h100", T0Micros: 1500, TwMicros: 14000, KLinMicros: 48, KKVMicros: 0.045,
			KAttMicros: 2.6e-3, Jitter: 0.05, NumGPUBlocks: 19208, MaxNumSeqs: 1024,
			MaxNumBatchedTokens: 8192, MaxModelLen: 32768,
		},
		// A slower GPU class for heterogeneous pools: compute terms x1.8, memory-bound terms
		// x1.7, less KV, and vLLM's non-H100 defaults for the step limits.
		"8b-a100": {
			Name: "8b-a100", T0Micros: 1500, TwMicros: 10800, KLinMicros: 39.6, KKVMicros: 0.0765,
			KAttMicros: 2.34e-3, Jitter: 0.05, NumGPUBlocks: 15000, MaxNumSeqs: 256,
			MaxNumBatchedTokens: 2048, MaxModelLen: 131072,
		},
	}
}

// ProfileNames lists the built-in profiles in sorted order.
func ProfileNames() []string {
	var names []string
	for n := range builtinProfiles() {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// LookupProfile returns a copy of the named built-in profile. A custom profile is any Profile
// value, typically a built-in one with fields overridden.
func LookupProfile(name string) (Profile, error) {
	p, ok := builtinProfiles()[name]
	if !ok {
		return Profile{}, fmt.Errorf("unknown profile %q (known: %v)", name, ProfileNames())
	}
	return p, nil
}

// Validate reports the first field that would make the engine misbehave.
func (p Profile) Validate() error {
	switch {
	case p.T0Micros < 0 || p.TwMicros < 0 || p.KLinMicros < 0 || p.KKVMicros < 0 || p.KAttMicros < 0:
		return fmt.Errorf("profile %q: step-time coefficients must not be negative", p.Name)
	case p.Jitter < 0 || p.Jitter >= 1:
		return fmt.Errorf("profile %q: jitter %v outside [0, 1)", p.Name, p.Jitter)
	case p.NumGPUBlocks < 2:
		return fmt.Errorf("profile %q: num_gpu_blocks %d < 2", p.Name, p.NumGPUBlocks)
	case p.MaxNumSeqs < 1:
		return fmt.Errorf("profile %q: max_num_seqs %d < 1", p.Name, p.MaxNumSeqs)
	case p.MaxNumBatchedTokens < 1:
		return fmt.Errorf("profile %q: max_num_batched_tokens %d < 1", p.Name, p.MaxNumBatchedTokens)
	case p.MaxModelLen < 2:
		return fmt.Errorf("profile %q: max_model_len %d < 2", p.Name, p.MaxModelLen)
	case p.MaxModelLen > (p.NumGPUBlocks-1)*BlockSize:
		// A request longer than the whole cache could never be scheduled and would stall the
		// queue behind it forever.
		return fmt.Errorf("profile %q: max_model_len %d exceeds KV capacity of %d tokens",
			p.Name, p.MaxModelLen, (p.NumGPUBlocks-1)*BlockSize)
	}
	return nil
}
