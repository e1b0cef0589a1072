package sim

import (
	"errors"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"time"
)

// machine is what a replica is, whichever way time is driven: its configuration, its
// scheduler core and the random source of its step-time jitter. Engine drives one on a clock
// with goroutines and locks; Replica lets a caller drive one in virtual time.
type machine struct {
	cfg  Config
	seed maphash.Seed
	core *core
	// pcg is rng's source, kept so that a forecast can copy the generator's state and draw
	// the same jitter the replica will (see Forecaster).
	pcg *rand.PCG
	rng *rand.Rand
	// slowdown multiplies step times from now on (0 or 1: as the profile says); the virtual
	// Replica sets it (SetSlowdown) to model a replica that silently slows.
	slowdown float64
}

func newMachine(cfg Config) (*machine, error) {
	if err := cfg.Profile.Validate(); err != nil {
		return nil, fmt.Errorf("sim: %w", err)
	}
	if cfg.TimeScale < 0 {
		return nil, fmt.Errorf("sim: negative time scale %v", cfg.TimeScale)
	}
	if cfg.TimeScale == 0 {
		cfg.TimeScale = 1
	}
	if cfg.Model == "" {
		return nil, errors.New("sim: model name is required")
	}
	pcg := rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)
	return &machine{
		cfg:  cfg,
		seed: maphash.MakeSeed(),
		core: newCore(cfg.Profile, !cfg.DisablePrefixCaching),
		pcg:  pcg,
		rng:  rand.New(pcg),
	}, nil
}

// newSeq validates a request and builds its engine state. It does not touch the core.
func (m *machine) newSeq(req Request, now time.Time) (*seq, error) {
	s := new(seq)
	if err := m.initSeq(s, req, now, nil); err != nil {
		return nil, err
	}
	return s, nil
}

// initSeq validates a request and makes s its fresh engine state, hashing the prompt into
// hashes' memory (nil: new memory), so that a forecast reuses one buffer for every request.
func (m *machine) initSeq(s *seq, req Request, now time.Time, hashes []uint64) error {
	pt := req.Prompt.Tokens()
	switch {
	case pt < 1:
		return errors.New("sim: empty prompt")
	case req.MaxTokens < 1:
		return fmt.Errorf("sim: max tokens %d < 1", req.MaxTokens)
	case pt+req.MaxTokens > m.cfg.Profile.MaxModelLen:
		return fmt.Errorf("%w: %d prompt + %d max tokens > %d", ErrTooLong, pt, req.MaxTokens, m.cfg.Profile.MaxModelLen)
	}
	*s = seq{prompt: pt, maxTokens: req.MaxTokens, hashes: req.Prompt.appendBlockHashes(hashes[:0], m.seed), arrived: now}
	return nil
}

// stepDuration is a planned step's duration: the reference formula with jitter, scaled.
func (m *machine) stepDuration(plan []chunk) time.Duration {
	us := m.core.stepMicros(plan)
	if j := m.cfg.Profile.Jitter; j > 0 {
		us *= 1 + j*(2*m.rng.Float64()-1)
	}
	us *= m.cfg.TimeScale
	if m.slowdown > 0 {
		us *= m.slowdown
	}
	return time.Duration(us * float64(time.Microsecond))
}

func (m *machine) snapshot() Snapshot {
	c := m.core
	return Snapshot{
		Running:            len(c.running),
		Waiting:            len(c.waiting),
		KVCacheUsage:       c.pool.usage(),
		NumGPUBlocks:       c.pool.numBlocks,
		FreeBlocks:         c.pool.free,
		PrefixCacheQueries: c.counters.prefixQueries,
		PrefixCacheHits:    c.counters.prefixHits,
		Preemptions:        c.counters.preemptions,
		PromptTokens:       c.counters.promptTokens,
		GenerationTokens:   c.counters.generationTokens,
		Steps:              c.counters.steps,
		FirstTokens:        c.counters.firstTokens,
		TTFTSum:            c.counters.ttftSum,
	}
}
