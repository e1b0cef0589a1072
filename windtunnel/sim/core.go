package sim

import "time"

// This file is the replica's scheduler as a pure state machine: no clock, no locks, no
// goroutines. Engine drives it in real (or injected) time; a virtual-time driver can drive
// the same core directly.

type seqState uint8

const (
	stateWaiting seqState = iota
	stateRunning
	stateFinished
)

// seq is one request inside the engine.
type seq struct {
	id        uint64
	prompt    int // prompt tokens
	maxTokens int
	hashes    []uint64 // chained hashes of the prompt's full blocks
	handle    *Handle  // real-time engine: where progress is published
	tag       int      // virtual-time replica: the caller's name for the request

	state       seqState
	blocks      []int32
	registered  int // blocks[:registered] are findable in the prefix cache
	computed    int // tokens whose KV is in the cache
	generated   int
	cached      int // prefix-cache hit at first admission, reported as cached_tokens
	preemptions int
	hit         []int32 // the last prefix-cache lookup's result, checked again at the next

	arrived, scheduledAt, firstTokenAt, lastTokenAt time.Time
	prevTokenAt                                     time.Time // for inter-token latency
}

// numTokens counts the tokens whose KV a full recompute would need: the prompt plus every
// generated token except the newest, which is only fed in by the next step. Written as
// prompt+generated so that "computed == numTokens" means "a token gets sampled now".
func (s *seq) numTokens() int { return s.prompt + s.generated }

// chunk is one request's share of a step.
type chunk struct {
	s      *seq
	n      int // tokens computed for s in this step
	ctx    int // tokens already computed before this step
	decode bool
}

type counters struct {
	prefixQueries    int64 // prompt tokens looked up in the prefix cache
	prefixHits       int64 // of which found
	preemptions      int64
	promptTokens     int64
	generationTokens int64
	steps            int64
	firstTokens      int64         // requests that produced their first token
	ttftSum          time.Duration // of their times from arrival to first token
}

type core struct {
	prof          Profile
	prefixCaching bool
	pool          *blockPool

	waiting []*seq // FCFS; preempted requests go back to the front
	running []*seq // in admission order, oldest first

	plan     []chunk
	admitted []*seq // first admitted in the planned step, for queue-time metrics
	emitted  []*seq // produced a token in the completed step
	counters counters
}

func newCore(prof Profile, prefixCaching bool) *core {
	return &core{prof: prof, prefixCaching: prefixCaching, pool: newBlockPool(prof.NumGPUBlocks)}
}

func blocksFor(tokens int) int { return (tokens + BlockSize - 1) / BlockSize }

// grow makes s hold enough blocks for its first `tokens` tokens and registers the prompt
// blocks that those tokens fill. Like vLLM, blocks are registered when allocated, before the
// step runs: a later request in the same step may already hit them.
func (c *core) grow(s *seq, tokens int) bool {
	need := blocksFor(tokens) - len(s.blocks)
	if need > c.pool.free {
		return false
	}
	if need > 0 {
		s.blocks = c.pool.allocate(s.blocks, need)
	}
	full := min(tokens/BlockSize, len(s.hashes))
	for ; s.registered < full; s.registered++ {
		c.pool.cacheBlock(s.blocks[s.registered], s.hashes[s.registered])
	}
	return true
}

func (c *core) freeBlocks(s *seq) {
	c.pool.release(s.blocks)
	s.blocks = s.blocks[:0]
	s.registered = 0
	s.computed = 0
}

// schedule plans one step at time now, following vLLM V1: running requests first (prefill
// chunks or one decode token each, preempting the newest running request when blocks run
// out), then waiting requests in FCFS order while budget and seats remain. It returns the
// plan, empty when there is nothing to do.
func (c *core) schedule(now time.Time) []chunk {
	c.plan = c.plan[:0]
	c.admitted = c.admitted[:0]
	budget := c.prof.MaxNumBatchedTokens
	preempted := false

	for i := 0; i < len(c.running) && budget > 0; i++ {
		s := c.running[i]
		n := min(s.numTokens()-s.computed, budget)
		ctx := s.computed
		ok := true
		for !c.grow(s, s.computed+n) {
			victim := c.running[len(c.running)-1]
			c.running = c.running[:len(c.running)-1]
			c.preempt(victim)
			preempted = true
			if victim == s {
				ok = false
				break
			}
		}
		if !ok {
			break
		}
		c.plan = append(c.plan, chunk{s: s, n: n, ctx: ctx, decode: s.generated > 0 && n == 1 && ctx == s.numTokens()-1})
		budget -= n
	}

	// vLLM admits nobody in a step that had to preempt: memory is short.
	for !preempted && len(c.waiting) > 0 && budget > 0 && len(c.running) < c.prof.MaxNumSeqs {
		s := c.waiting[0]
		if s.arrived.After(now) {
			// A real-time engine catching up plans a step that started, in the model, before
			// this request arrived: it joins the next one.
			break
		}
		var hit []int32
		if c.prefixCaching {
			// The last token is always recomputed so that there is something to sample from.
			s.hit = c.pool.lookup(s.hashes, (s.numTokens()-1)/BlockSize, s.hit)
			hit = s.hit
		}
		hitTokens := len(hit) * BlockSize
		n := min(s.numTokens()-hitTokens, budget)
		if blocksFor(hitTokens+n)-len(hit) > c.pool.free-c.pool.evictable(hit) {
			break // head-of-line blocking, as in vLLM
		}
		c.pool.touch(hit)
		s.blocks = append(s.blocks[:0], hit...)
		s.registered = len(hit)
		s.computed = hitTokens
		c.grow(s, hitTokens+n)
		if s.preemptions == 0 {
			c.counters.prefixQueries += int64(s.prompt)
			c.counters.prefixHits += int64(hitTokens)
			s.cached = hitTokens
		}
		if s.scheduledAt.IsZero() {
			s.scheduledAt = now
			c.admitted = append(c.admitted, s)
		}
		c.waiting = c.waiting[1:]
		s.state = stateRunning
		c.running = append(c.running, s)
		c.plan = append(c.plan, chunk{s: s, n: n, ctx: hitTokens})
		budget -= n
	}
	return c.plan
}

func (c *core) preempt(s *seq) {
	c.freeBlocks(s)
	s.preemptions++
	s.state = stateWaiting
	c.waiting = append(c.waiting, nil)
	copy(c.waiting[1:], c.waiting)
	c.waiting[0] = s
	c.counters.preemptions++
}

// stepMicros is the reference step-time formula for a plan, before jitter.
func (c *core) stepMicros(plan []chunk) float64 {
	var n, decodeCtx, prefillPairs float64
	for _, ch := range plan {
		cn := float64(ch.n)
		n += cn
		if ch.decode {
			decodeCtx += float64(ch.ctx)
		} else {
			prefillPairs += cn * (float64(ch.ctx) + cn/2)
		}
	}
	p := c.prof
	return p.T0Micros + max(p.TwMicros, p.KLinMicros*n) + p.KKVMicros*decodeCtx + p.KAttMicros*prefillPairs
}

// complete applies the planned step as finished at time now: advances computed tokens,
// samples a token for every request whose known tokens are all computed, and retires the
// requests that reached max tokens. The requests that produced a token are left in emitted.
func (c *core) complete(now time.Time) {
	c.emitted = c.emitted[:0]
	finished := false
	for _, ch := range c.plan {
		s := ch.s
		if s.state != stateRunning {
			continue // defensive: aborts and preemptions happen only while planning
		}
		s.computed += ch.n
		if s.computed < s.numTokens() {
			continue // a prefill chunk that did not reach the end of the prompt
		}
		s.generated++
		c.counters.generationTokens++
		if s.generated == 1 {
			s.firstTokenAt = now
			c.counters.promptTokens += int64(s.prompt)
			c.counters.firstTokens++
			c.counters.ttftSum += now.Sub(s.arrived)
		}
		s.prevTokenAt, s.lastTokenAt = s.lastTokenAt, now
		if s.generated >= s.maxTokens {
			c.freeBlocks(s)
			s.state = stateFinished
			finished = true
		}
		c.emitted = append(c.emitted, s)
	}
	c.counters.steps++
	c.plan = c.plan[:0]
	if finished {
		c.running = removeFinished(c.running)
	}
}

func removeFinished(list []*seq) []*seq {
	out := list[:0]
	for _, s := range list {
		if s.state != stateFinished {
			out = append(out, s)
		}
	}
	clear(list[len(out):])
	return out
}

// abort drops a request wherever it is and frees its blocks. It reports whether the request
// was still live.
func (c *core) abort(s *seq) bool {
	switch s.state {
	case stateFinished:
		return false
	case stateRunning:
		c.freeBlocks(s)
		s.state = stateFinished
		c.running = removeFinished(c.running)
	case stateWaiting:
		c.freeBlocks(s)
		s.state = stateFinished
		c.waiting = removeFinished(c.waiting)
	}
	return true
}
