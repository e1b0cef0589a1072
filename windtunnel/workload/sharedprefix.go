package workload

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/augur-llm/augur/tokens"
)

// SharedPrefixOptions are the parameters of inference-perf's shared_prefix data, with
// llm-d's benchmark values as defaults. Lengths are in tokens.
type SharedPrefixOptions struct {
	Groups          int // num_groups; default 150
	PromptsPerGroup int // num_prompts_per_group; default 5
	SystemPromptLen int // system_prompt_len, the prefix a group shares; default 6000
	QuestionLen     int // question_len, each prompt's own suffix; default 1200
	OutputLen       int // output_len, sent as max_tokens with ignore_eos; default 1000

	// Optional objectives for every request (the benchmark itself sets none); with them the
	// report's attainment measures an SLO-aware picker on the upstream benchmark.
	SLOTTFT, SLOTPOT time.Duration
}

func (o SharedPrefixOptions) withDefaults() (SharedPrefixOptions, error) {
	o.Groups = orDefault(o.Groups, 150)
	o.PromptsPerGroup = orDefault(o.PromptsPerGroup, 5)
	o.SystemPromptLen = orDefault(o.SystemPromptLen, 6000)
	o.QuestionLen = orDefault(o.QuestionLen, 1200)
	o.OutputLen = orDefault(o.OutputLen, 1000)
	for _, f := range []struct {
		name string
		v    int
	}{{"Groups", o.Groups}, {"PromptsPerGroup", o.PromptsPerGroup}, {"SystemPromptLen", o.SystemPromptLen},
		{"QuestionLen", o.QuestionLen}, {"OutputLen", o.OutputLen}} {
		if f.v < 0 {
			return o, fmt.Errorf("workload: shared-prefix %s %d is negative", f.name, f.v)
		}
	}
	if o.SLOTTFT < 0 || o.SLOTPOT < 0 {
		return o, fmt.Errorf("workload: shared-prefix SLOs must not be negative")
	}
	if o.Groups*o.PromptsPerGroup > 1e6 {
		return o, fmt.Errorf("workload: shared-prefix %d x %d prompts is more than a million", o.Groups, o.PromptsPerGroup)
	}
	return o, nil
}

// SharedPrefix is the stream of llm-d's shared-prefix benchmark, after inference-perf: the
// Groups x PromptsPerGroup prompts (a random system prompt per group followed by a random
// question each) are generated once, shuffled once, and sent in that order cyclically, so
// every exact prompt recurs every Groups x PromptsPerGroup requests. Requests are streaming
// completions of OutputLen tokens with ignore_eos, class DefaultClass, without tenant or
// session. With the defaults a prompt is exactly 7,200 tokens and the 6,000-token prefix is a
// whole number of 16-token cache blocks.
type SharedPrefix struct {
	o       SharedPrefixOptions
	prompts []string // in sending order; each string is shared by all its requests
	arr     *Poisson
	seq     int
}

// NewSharedPrefix returns the shared-prefix stream for seed over ladder.
func NewSharedPrefix(seed uint64, ladder Ladder, o SharedPrefixOptions) (*SharedPrefix, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := ladder.Validate(); err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(seed, streamContent))
	// One buffer per prompt, built by appending the question to a copy of the group's system
	// prompt: the prefix is then byte-identical within a group by construction.
	size := (o.SystemPromptLen + o.QuestionLen) * tokens.BytesPerToken
	prompts := make([]string, 0, o.Groups*o.PromptsPerGroup)
	system := make([]byte, 0, o.SystemPromptLen*tokens.BytesPerToken)
	buf := make([]byte, 0, size)
	for range o.Groups {
		system = appendWords(system[:0], rng, o.SystemPromptLen)
		for range o.PromptsPerGroup {
			buf = appendWords(append(buf[:0], system...), rng, o.QuestionLen)
			prompts = append(prompts, string(buf))
		}
	}
	rng.Shuffle(len(prompts), func(i, j int) { prompts[i], prompts[j] = prompts[j], prompts[i] })
	return &SharedPrefix{
		o:       o,
		prompts: prompts,
		arr:     newPoisson(ladder, 1, rand.New(rand.NewPCG(seed, streamArrivals))),
	}, nil
}

// Next returns the next request.
func (g *SharedPrefix) Next() (Request, bool) {
	if len(g.prompts) == 0 {
		return Request{}, false
	}
	at, stage, ok := g.arr.Next()
	if !ok {
		return Request{}, false
	}
	r := Request{
		Seq:       g.seq,
		At:        at,
		Stage:     stage,
		ID:        requestID("sp", g.seq),
		API:       Completions,
		Prompt:    g.prompts[g.seq%len(g.prompts)],
		MaxTokens: g.o.OutputLen,
		IgnoreEOS: true,
		Stream:    true,
		Class:     DefaultClass,
		SLOTTFT:   g.o.SLOTTFT,
		SLOTPOT:   g.o.SLOTPOT,
	}
	g.seq++
	return r, true
}

// Prompts returns the distinct prompts in sending order (shared with the stream; read-only).
func (g *SharedPrefix) Prompts() []string { return g.prompts }
