package workload

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/augur-llm/augur/tokens"
)

// Class is one SLO class of a mixed stream: its objectives, its share of the requests, its
// tenants and the shape of its requests. Lengths are in tokens, ranges inclusive and uniform.
type Class struct {
	Name      string  // the report's class name; also the objective's name unless Objective is set
	Share     float64 // relative weight among the classes; must be positive
	SLOTTFT   time.Duration
	SLOTPOT   time.Duration
	Objective string // x-gateway-inference-objective; default Name
	Priority  int    // the objective's priority; negative = sheddable

	// Tenants are the class's fairness ids; default 4. The first is noisy: it sends
	// NoisyFactor times the share of each other tenant (default 5; 1 = no noisy tenant).
	// Ids are "<name>-noisy", "<name>-t1", "<name>-t2", ...
	Tenants     int
	NoisyFactor float64

	API          API // Chat or Completions
	SystemTokens int // a per-tenant system prompt (a prefix shared within the tenant); 0 = none
	MinInput     int // the request's own text
	MaxInput     int
	MinOutput    int // max_tokens, with ignore_eos
	MaxOutput    int
}

// DefaultClasses are the three classes of the reference mix:
//
//	interactive  50%  chat, TTFT 500 ms, TPOT 50 ms, priority 10, 1000-token system prompt,
//	                  50-500 in, 50-300 out
//	standard     30%  chat, TTFT 2 s, TPOT 100 ms, priority 0, 2000-token system prompt,
//	                  200-2000 in, 100-500 out
//	batch        20%  completions, TTFT 30 s, no TPOT, priority -1 (sheddable), 500-token
//	                  instructions, 1000-4000 in, 200-800 out
//
// each with 4 tenants of which one is noisy (5x).
func DefaultClasses() []Class {
	return []Class{
		{Name: "interactive", Share: 0.5, SLOTTFT: 500 * time.Millisecond, SLOTPOT: 50 * time.Millisecond,
			Priority: 10, API: Chat, SystemTokens: 1000, MinInput: 50, MaxInput: 500, MinOutput: 50, MaxOutput: 300},
		{Name: "standard", Share: 0.3, SLOTTFT: 2 * time.Second, SLOTPOT: 100 * time.Millisecond,
			Priority: 0, API: Chat, SystemTokens: 2000, MinInput: 200, MaxInput: 2000, MinOutput: 100, MaxOutput: 500},
		{Name: "batch", Share: 0.2, SLOTTFT: 30 * time.Second,
			Priority: -1, API: Completions, SystemTokens: 500, MinInput: 1000, MaxInput: 4000, MinOutput: 200, MaxOutput: 800},
	}
}

// MixedSLOOptions configure the mixed-slo and heterogeneous streams.
type MixedSLOOptions struct {
	// Classes replaces DefaultClasses when non-nil.
	Classes []Class
	// Shares overrides the shares of classes by name, e.g. from ParseShares; a name that is
	// not a class is an error.
	Shares map[string]float64
}

// ParseShares reads a class mix from a command-line flag: "interactive=0.6,batch=0.4". The
// shares are relative weights; they need not sum to one.
func ParseShares(s string) (map[string]float64, error) {
	out := map[string]float64{}
	for _, part := range strings.Split(s, ",") {
		name, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("workload: class share %q: want NAME=WEIGHT", part)
		}
		w, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || !(w >= 0) || math.IsInf(w, 0) {
			return nil, fmt.Errorf("workload: class share %q: bad weight %q", part, v)
		}
		out[name] = w
	}
	return out, nil
}

func (o MixedSLOOptions) classes() ([]Class, error) {
	classes := o.Classes
	if classes == nil {
		classes = DefaultClasses()
	} else {
		classes = append([]Class(nil), classes...)
	}
	if len(classes) == 0 {
		return nil, fmt.Errorf("workload: mixed-slo needs at least one class")
	}
	names := map[string]int{}
	for i, c := range classes {
		if c.Name == "" {
			return nil, fmt.Errorf("workload: mixed-slo class %d has no name", i)
		}
		if _, dup := names[c.Name]; dup {
			return nil, fmt.Errorf("workload: mixed-slo class %q appears twice", c.Name)
		}
		names[c.Name] = i
	}
	keys := make([]string, 0, len(o.Shares))
	for k := range o.Shares {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		i, ok := names[k]
		if !ok {
			known := make([]string, len(classes))
			for j, c := range classes {
				known[j] = c.Name
			}
			return nil, fmt.Errorf("workload: mixed-slo share for unknown class %q (classes: %s)", k, strings.Join(known, ", "))
		}
		classes[i].Share = o.Shares[k]
	}
	total := 0.0
	for i := range classes {
		c := &classes[i]
		c.Objective = orDefault(c.Objective, c.Name)
		c.Tenants = orDefault(c.Tenants, 4)
		c.NoisyFactor = orDefault(c.NoisyFactor, 5)
		c.MinOutput, c.MaxOutput = orDefault(c.MinOutput, 100), orDefault(c.MaxOutput, 300)
		c.MinInput, c.MaxInput = orDefault(c.MinInput, 100), orDefault(c.MaxInput, 1000)
		switch {
		case !(c.Share >= 0) || math.IsInf(c.Share, 0):
			return nil, fmt.Errorf("workload: mixed-slo class %q: share %v is not a finite non-negative number", c.Name, c.Share)
		case c.Tenants < 1:
			return nil, fmt.Errorf("workload: mixed-slo class %q: %d tenants", c.Name, c.Tenants)
		case !(c.NoisyFactor > 0) || math.IsInf(c.NoisyFactor, 0):
			return nil, fmt.Errorf("workload: mixed-slo class %q: noisy factor %v is not positive", c.Name, c.NoisyFactor)
		case c.SLOTTFT < 0 || c.SLOTPOT < 0 || c.SystemTokens < 0:
			return nil, fmt.Errorf("workload: mixed-slo class %q: negative SLO or system prompt", c.Name)
		case c.API != Chat && c.API != Completions:
			return nil, fmt.Errorf("workload: mixed-slo class %q: unknown API %v", c.Name, c.API)
		case c.MinOutput < 1:
			return nil, fmt.Errorf("workload: mixed-slo class %q: output must be at least one token", c.Name)
		}
		if err := checkRange("mixed-slo class "+c.Name+" input tokens", c.MinInput, c.MaxInput); err != nil {
			return nil, err
		}
		if err := checkRange("mixed-slo class "+c.Name+" output tokens", c.MinOutput, c.MaxOutput); err != nil {
			return nil, err
		}
		total += c.Share
	}
	if !(total > 0) {
		return nil, fmt.Errorf("workload: mixed-slo class shares sum to %v; at least one must be positive", total)
	}
	return classes, nil
}

// tenant is one fairness id with its system prompt.
type tenant struct {
	id     string
	system string
}

type classState struct {
	Class
	tenants []tenant
	cum     []float64 // cumulative tenant weights, for drawing a tenant
}

// MixedSLO is a stream of independent single requests from several SLO classes sharing one
// pool: each arrival (Poisson over the ladder) draws a class by share, then a tenant of the
// class by weight (the noisy tenant weighing NoisyFactor, the others 1). A request is the
// tenant's system prompt followed by fresh random text, so prefixes are shared within a tenant
// and nowhere else. It carries the class's objectives and priority, and the tenant as its
// fairness id. Requests stream, with ignore_eos.
type MixedSLO struct {
	ladder  Ladder
	prefix  string
	rng     *rand.Rand
	arr     *Poisson
	classes []classState
	cum     []float64 // cumulative class shares
	seq     int
}

// NewMixedSLO returns the mixed-SLO stream for seed over ladder.
func NewMixedSLO(seed uint64, ladder Ladder, o MixedSLOOptions) (*MixedSLO, error) {
	return newMixed("ms", seed, ladder, o)
}

// NewHeterogeneous returns the stream of the heterogeneous-pool workload: mixed-SLO traffic
// (the same options and defaults as NewMixedSLO, request ids "hp-...", an independent stream
// for the same seed). What makes the workload heterogeneous is the pool, which is the
// runner's to build: the reference setup is replicas of two speed classes, e.g. 6 fast and 2
// slow, where a picker that sees only queue lengths and cache use treats them alike and one
// that predicts latency per replica class need not. SLO classes make the difference visible:
// interactive requests routed to a slow replica miss their objectives first.
func NewHeterogeneous(seed uint64, ladder Ladder, o MixedSLOOptions) (*MixedSLO, error) {
	return newMixed("hp", seed, ladder, o)
}

func newMixed(prefix string, seed uint64, ladder Ladder, o MixedSLOOptions) (*MixedSLO, error) {
	classes, err := o.classes()
	if err != nil {
		return nil, err
	}
	if err := ladder.Validate(); err != nil {
		return nil, err
	}
	// The prefix keys the content stream so that heterogeneous and mixed-slo differ for one
	// seed rather than being the same requests under two names.
	key := streamContent
	for _, c := range prefix {
		key = key*31 + uint64(c)
	}
	rng := rand.New(rand.NewPCG(seed, key))
	g := &MixedSLO{ladder: ladder, prefix: prefix, rng: rng,
		arr: newPoisson(ladder, 1, rand.New(rand.NewPCG(seed, streamArrivals^key)))}
	total := 0.0
	for _, c := range classes {
		cs := classState{Class: c}
		w := 0.0
		for t := range c.Tenants {
			id := fmt.Sprintf("%s-t%d", c.Name, t)
			weight := 1.0
			if t == 0 {
				id, weight = c.Name+"-noisy", c.NoisyFactor
			}
			var system string
			if c.SystemTokens > 0 {
				system = randomText(rng, c.SystemTokens)
			}
			cs.tenants = append(cs.tenants, tenant{id: id, system: system})
			w += weight
			cs.cum = append(cs.cum, w)
		}
		g.classes = append(g.classes, cs)
		total += c.Share
		g.cum = append(g.cum, total)
	}
	return g, nil
}

// draw picks an index from cumulative weights.
func draw(r *rand.Rand, cum []float64) int {
	x := r.Float64() * cum[len(cum)-1]
	i := sort.SearchFloat64s(cum, x)
	// SearchFloat64s finds the first cum >= x; x == cum[i] exactly belongs to the next bucket,
	// and zero-weight buckets (equal neighbours) must never be chosen.
	for i < len(cum)-1 && cum[i] <= x {
		i++
	}
	return i
}

// Next returns the next request.
func (g *MixedSLO) Next() (Request, bool) {
	at, stage, ok := g.arr.Next()
	if !ok {
		return Request{}, false
	}
	c := &g.classes[draw(g.rng, g.cum)]
	t := c.tenants[draw(g.rng, c.cum)]
	input := uniformInt(g.rng, c.MinInput, c.MaxInput)
	r := Request{
		Seq:        g.seq,
		At:         at,
		Stage:      stage,
		ID:         requestID(g.prefix, g.seq),
		API:        c.API,
		MaxTokens:  uniformInt(g.rng, c.MinOutput, c.MaxOutput),
		IgnoreEOS:  true,
		Stream:     true,
		Class:      c.Name,
		SLOTTFT:    c.SLOTTFT,
		SLOTPOT:    c.SLOTPOT,
		Objective:  c.Objective,
		Priority:   c.Priority,
		FairnessID: t.id,
	}
	if c.API == Chat {
		if t.system != "" {
			r.Messages = []tokens.Message{{Role: "system", Text: t.system}, {Role: "user", Text: randomText(g.rng, input)}}
		} else {
			r.Messages = []tokens.Message{{Role: "user", Text: randomText(g.rng, input)}}
		}
	} else {
		buf := make([]byte, 0, len(t.system)+input*tokens.BytesPerToken)
		r.Prompt = string(appendWords(append(buf, t.system...), g.rng, input))
	}
	g.seq++
	return r, true
}
