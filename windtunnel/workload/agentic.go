package workload

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/augur-llm/augur/tokens"
)

// AgenticOptions shape agent runs. Lengths are in tokens, ranges are inclusive and drawn
// uniformly.
type AgenticOptions struct {
	ToolBlocks                   int // distinct tool-description blocks (one per kind of agent); default 4
	MinToolBlock, MaxToolBlock   int // a tool block's length, drawn once per block; default 4000-12000
	MinTask, MaxTask             int // the user's task, the first user message; default 100-400
	MinIterations, MaxIterations int // model calls per run; default 4-16
	MinOutput, MaxOutput         int // a model call's output (a tool call); default 20-200
	MinResult, MaxResult         int // a tool result appended after each call; default 50-600
	// ToolTimeMean is the mean of the exponential gap between iterations (the tool running):
	// short, so that a run is a burst of requests. Default 500ms.
	ToolTimeMean time.Duration
}

func (o AgenticOptions) withDefaults() (AgenticOptions, error) {
	o.ToolBlocks = orDefault(o.ToolBlocks, 4)
	o.MinToolBlock, o.MaxToolBlock = orDefault(o.MinToolBlock, 4000), orDefault(o.MaxToolBlock, 12000)
	o.MinTask, o.MaxTask = orDefault(o.MinTask, 100), orDefault(o.MaxTask, 400)
	o.MinIterations, o.MaxIterations = orDefault(o.MinIterations, 4), orDefault(o.MaxIterations, 16)
	o.MinOutput, o.MaxOutput = orDefault(o.MinOutput, 20), orDefault(o.MaxOutput, 200)
	o.MinResult, o.MaxResult = orDefault(o.MinResult, 50), orDefault(o.MaxResult, 600)
	o.ToolTimeMean = orDefault(o.ToolTimeMean, 500*time.Millisecond)
	for _, c := range []struct {
		what   string
		lo, hi int
	}{{"agentic tool block tokens", o.MinToolBlock, o.MaxToolBlock}, {"agentic task tokens", o.MinTask, o.MaxTask},
		{"agentic iterations", o.MinIterations, o.MaxIterations}, {"agentic output tokens", o.MinOutput, o.MaxOutput},
		{"agentic tool result tokens", o.MinResult, o.MaxResult}} {
		if err := checkRange(c.what, c.lo, c.hi); err != nil {
			return o, err
		}
	}
	if o.ToolBlocks < 0 || o.ToolTimeMean < 0 {
		return o, fmt.Errorf("workload: agentic ToolBlocks and ToolTimeMean must not be negative")
	}
	if o.MinIterations < 1 || o.MinOutput < 1 {
		return o, fmt.Errorf("workload: agentic runs need at least one iteration of at least one token")
	}
	return o, nil
}

// Agentic is a stream of agent runs (tool loops). A run picks one of a few fixed tool blocks
// (the system message, resent unchanged every iteration), states a task, then iterates: each
// iteration sends the whole trajectory so far and gets a short output (a tool call); the call
// and the tool's result are appended for the next iteration. Iterations follow each other
// after a short tool time, so a run is a burst of requests sharing a long, growing prefix.
// Runs start as a Poisson process at the ladder's rate divided by the mean number of
// iterations. Requests are streaming chat with ignore_eos, class DefaultClass, x-session-id
// set to the run's id.
type Agentic struct {
	o      AgenticOptions
	ladder Ladder
	rng    *rand.Rand
	blocks []string
	q      *sessionQueue
	seq    int
}

// NewAgentic returns the agent-loop stream for seed over ladder.
func NewAgentic(seed uint64, ladder Ladder, o AgenticOptions) (*Agentic, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := ladder.Validate(); err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(seed, streamContent))
	g := &Agentic{o: o, ladder: ladder, rng: rng}
	for range o.ToolBlocks {
		g.blocks = append(g.blocks, randomText(rng, uniformInt(rng, o.MinToolBlock, o.MaxToolBlock)))
	}
	meanIterations := float64(o.MinIterations+o.MaxIterations) / 2
	starts := newPoisson(ladder, 1/meanIterations, rand.New(rand.NewPCG(seed, streamSessions)))
	g.q = newSessionQueue(ladder, starts)
	return g, nil
}

// ToolBlocks returns the distinct tool blocks (shared with the stream; read-only).
func (g *Agentic) ToolBlocks() []string { return g.blocks }

// Next returns the next iteration of some agent run.
func (g *Agentic) Next() (Request, bool) {
	s, fresh, ok := g.q.next()
	if !ok {
		return Request{}, false
	}
	if fresh {
		s.id = requestID("ag-run", s.order)
		s.turns = uniformInt(g.rng, g.o.MinIterations, g.o.MaxIterations)
		if len(g.blocks) > 0 {
			s.block = g.rng.IntN(len(g.blocks))
			s.history = append(s.history, tokens.Message{Role: "system", Text: g.blocks[s.block]})
		}
		s.task = randomText(g.rng, uniformInt(g.rng, g.o.MinTask, g.o.MaxTask))
		s.history = append(s.history, tokens.Message{Role: "user", Text: s.task})
	}
	out := uniformInt(g.rng, g.o.MinOutput, g.o.MaxOutput)
	r := Request{
		Seq:       g.seq,
		At:        s.due,
		Stage:     g.ladder.StageAt(s.due),
		ID:        requestID("ag", g.seq),
		API:       Chat,
		Messages:  snapshot(s.history),
		MaxTokens: out,
		IgnoreEOS: true,
		Stream:    true,
		Class:     DefaultClass,
		SessionID: s.id,
		Turn:      s.turn,
		Think:     s.think,
	}
	g.seq++
	s.turn++
	if s.turn < s.turns {
		// The task stays the last user message (tool results have their own role), so it is
		// what the simulator echoes for every call.
		s.history = append(s.history,
			tokens.Message{Role: "assistant", Text: tokens.EchoText(s.task, out)},
			tokens.Message{Role: "tool", Text: randomText(g.rng, uniformInt(g.rng, g.o.MinResult, g.o.MaxResult))})
		g.q.requeue(s, expDuration(g.rng, g.o.ToolTimeMean))
	}
	return r, true
}
