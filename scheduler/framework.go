package scheduler

import (
	"context"
	"errors"
	"time"

	"github.com/augur-llm/augur/pool"
)

// SLO is a request's latency objectives; a zero field means no objective.
type SLO struct {
	TTFT time.Duration // time to first token
	TPOT time.Duration // time per output token
}

// Request is what scheduling knows about a request at decision time.
type Request struct {
	ID    string
	Model string
	// Prompt is the rendered prompt text (chat prompts rendered by tokens.RenderChat);
	// empty for requests without a body.
	Prompt       []byte
	PromptTokens int
	// MaxTokens is the requested output limit, 0 when the client gave none.
	MaxTokens  int
	Stream     bool
	SLO        SLO
	Objective  string
	FairnessID string
	SessionID  string

	prefixHashes []uint64 // the prompt's chained block hashes, computed once per decision
}

// Candidate is one replica as seen at decision time: a consistent copy of its state, so every
// plugin in a decision sees the same numbers.
type Candidate struct {
	Replica *pool.Replica
	Metrics pool.Metrics
	Load    pool.Load
	// PrefixMatch is the share of the prompt's blocks the prefix scorer expects the replica
	// to hold, when a prefix scorer ran: scorers may note features they computed here, for
	// the decision's record.
	PrefixMatch float64
}

// Filter removes candidates that must not serve the request. It may reorder or reuse cands
// and returns the survivors.
type Filter interface {
	Name() string
	Filter(ctx context.Context, req *Request, cands []Candidate) []Candidate
}

// Scorer rates each candidate in [0,1], higher is better, writing scores[i] for cands[i].
type Scorer interface {
	Name() string
	Score(ctx context.Context, req *Request, cands []Candidate, scores []float64)
}

// Picker orders candidates by preference given their total scores: it appends to order the
// indices of at most n candidates, best first.
type Picker interface {
	Name() string
	Pick(ctx context.Context, req *Request, cands []Candidate, scores []float64, n int, order []int) []int
}

// DispatchObserver is implemented by plugins that learn from decisions, such as a prefix
// index recording which prompts a replica has been sent. The scheduler calls it with the
// primary target once the decision is made.
type DispatchObserver interface {
	Dispatched(ctx context.Context, req *Request, target Candidate)
}

// WeightedScorer is a scorer and its weight in a profile.
type WeightedScorer struct {
	Scorer
	Weight float64
}

// Profile is one way of scheduling: filters, then weighted scorers, then a picker.
type Profile struct {
	Name    string
	Filters []Filter
	Scorers []WeightedScorer
	Picker  Picker

	observers []DispatchObserver // the plugins above that implement it, found by validate
	instances map[string]any     // plugins by role, name and arguments, for reuse on reload
}

// ErrNoEndpoints means no replica may serve the request: none is ready, or the gateway's
// subset hint matched none.
var ErrNoEndpoints = errors.New("no ready endpoint")
