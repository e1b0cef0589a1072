package workload

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/augur-llm/augur/tokens"
)

// MultiTurnOptions shape chat conversations. Lengths are in tokens, ranges are inclusive and
// drawn uniformly.
type MultiTurnOptions struct {
	MinTurns, MaxTurns   int           // turns per conversation; default 3-10
	MinUser, MaxUser     int           // a user turn; default 50-300
	MinAnswer, MaxAnswer int           // an answer (max_tokens, ignore_eos); default 100-500
	SystemPrompts        int           // distinct system prompts conversations start from; default 8
	SystemTokens         int           // length of each system prompt; default 200
	ThinkMean            time.Duration // mean of the exponential gap between turns; default 5s
}

func (o MultiTurnOptions) withDefaults() (MultiTurnOptions, error) {
	o.MinTurns, o.MaxTurns = orDefault(o.MinTurns, 3), orDefault(o.MaxTurns, 10)
	o.MinUser, o.MaxUser = orDefault(o.MinUser, 50), orDefault(o.MaxUser, 300)
	o.MinAnswer, o.MaxAnswer = orDefault(o.MinAnswer, 100), orDefault(o.MaxAnswer, 500)
	o.SystemPrompts = orDefault(o.SystemPrompts, 8)
	o.SystemTokens = orDefault(o.SystemTokens, 200)
	o.ThinkMean = orDefault(o.ThinkMean, 5*time.Second)
	if err := checkRange("multi-turn turns", o.MinTurns, o.MaxTurns); err != nil {
		return o, err
	}
	if o.MinTurns < 1 {
		return o, fmt.Errorf("workload: multi-turn conversations need at least one turn")
	}
	if err := checkRange("multi-turn user tokens", o.MinUser, o.MaxUser); err != nil {
		return o, err
	}
	if err := checkRange("multi-turn answer tokens", o.MinAnswer, o.MaxAnswer); err != nil {
		return o, err
	}
	if o.MinAnswer < 1 {
		return o, fmt.Errorf("workload: multi-turn answers need at least one token")
	}
	if o.SystemPrompts < 0 || o.SystemTokens < 0 || o.ThinkMean < 0 {
		return o, fmt.Errorf("workload: multi-turn SystemPrompts, SystemTokens and ThinkMean must not be negative")
	}
	return o, nil
}

// MultiTurn is a stream of chat conversations. Each conversation starts from one of a few
// system prompts and runs MinTurns-MaxTurns turns; every turn resends the whole history (the
// system prompt, earlier user turns and answers) plus a new user turn, so each turn's
// rendered prompt starts with the previous turn's. Conversations start as a Poisson process at
// the ladder's rate divided by the mean number of turns, so that once conversations overlap
// the request rate is close to the ladder's. Turns are streaming chat requests with
// ignore_eos, class DefaultClass, and x-session-id set to the conversation's id.
type MultiTurn struct {
	o      MultiTurnOptions
	ladder Ladder
	rng    *rand.Rand
	system []string
	q      *sessionQueue
	seq    int
}

// NewMultiTurn returns the multi-turn chat stream for seed over ladder.
func NewMultiTurn(seed uint64, ladder Ladder, o MultiTurnOptions) (*MultiTurn, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := ladder.Validate(); err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(seed, streamContent))
	g := &MultiTurn{o: o, ladder: ladder, rng: rng}
	for range o.SystemPrompts {
		g.system = append(g.system, randomText(rng, o.SystemTokens))
	}
	meanTurns := float64(o.MinTurns+o.MaxTurns) / 2
	starts := newPoisson(ladder, 1/meanTurns, rand.New(rand.NewPCG(seed, streamSessions)))
	g.q = newSessionQueue(ladder, starts)
	return g, nil
}

// Next returns the next turn of some conversation.
func (g *MultiTurn) Next() (Request, bool) {
	s, fresh, ok := g.q.next()
	if !ok {
		return Request{}, false
	}
	if fresh {
		s.id = requestID("mt-conv", s.order)
		s.turns = uniformInt(g.rng, g.o.MinTurns, g.o.MaxTurns)
		if len(g.system) > 0 {
			s.history = append(s.history, tokens.Message{Role: "system", Text: g.system[g.rng.IntN(len(g.system))]})
		}
	}
	user := randomText(g.rng, uniformInt(g.rng, g.o.MinUser, g.o.MaxUser))
	answer := uniformInt(g.rng, g.o.MinAnswer, g.o.MaxAnswer)
	s.history = append(s.history, tokens.Message{Role: "user", Text: user})
	r := Request{
		Seq:       g.seq,
		At:        s.due,
		Stage:     g.ladder.StageAt(s.due),
		ID:        requestID("mt", g.seq),
		API:       Chat,
		Messages:  snapshot(s.history),
		MaxTokens: answer,
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
		s.history = append(s.history, tokens.Message{Role: "assistant", Text: tokens.EchoText(user, answer)})
		g.q.requeue(s, expDuration(g.rng, g.o.ThinkMean))
	}
	return r, true
}
