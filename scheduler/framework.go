package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"

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

	prefixHashes []uint64 // the prompt's chained block hashes, computed once per request
}

// Value names a per-candidate quantity a PreScorer computes during a decision. Scorers read
// it, and the decision's targets carry it to the request's sample (see package models).
type Value uint8

// The per-candidate values. Adding one is a constant here and a feature in package models.
const (
	// ValuePrefixMatch is the share of the prompt's blocks the prefix record expects the
	// replica to hold (0..1).
	ValuePrefixMatch Value = iota
	// ValuePredictedTTFT and ValuePredictedTPOT are a predictor's estimates (mean models) for
	// the request on the replica, in milliseconds; the Upper values its upper-quantile
	// estimates (p90 by default).
	ValuePredictedTTFT
	ValuePredictedTPOT
	ValuePredictedTTFTUpper
	ValuePredictedTPOTUpper
	// ValueSLOViolation is set by the SLO picker on every candidate it ranked: the request's
	// weighted relative violation of its objectives there, 0 when the candidate is predicted
	// to meet them all. A decision whose primary carries a positive value knew it would miss.
	ValueSLOViolation
	numValues
)

// Candidate is one replica as seen at decision time: a consistent copy of its state, so every
// plugin in a decision sees the same numbers.
type Candidate struct {
	Replica  *pool.Replica
	Endpoint pool.Endpoint
	Metrics  pool.Metrics
	Load     pool.Load

	// ModelVersion names the models that made the predicted values (the predictor's cold
	// start has a name too); "" when no predictor ran.
	ModelVersion string

	values [numValues]float64
	set    uint32 // bit v: values[v] was computed in this decision
}

// CandidateOf returns r's current state as a candidate.
func CandidateOf(r *pool.Replica) Candidate {
	var c Candidate
	c.of(r)
	return c
}

// of sets the zero candidate c to r's current state.
func (c *Candidate) of(r *pool.Replica) {
	c.Replica = r
	c.Endpoint = r.Endpoint()
	c.Metrics, _ = r.Metrics()
	c.Load = r.Load()
}

// SetValue records v for the candidate in this decision.
func (c *Candidate) SetValue(v Value, x float64) {
	c.values[v] = x
	c.set |= 1 << v
}

// Value returns v and whether a plugin computed it in this decision.
func (c *Candidate) Value(v Value) (float64, bool) {
	return c.values[v], c.set&(1<<v) != 0
}

// UncachedTokens is the part of req's prompt the replica would compute: the prompt less the
// share the prefix record expects it to hold (the whole prompt when no prefix plugin ran).
func (c *Candidate) UncachedTokens(req *Request) int {
	m, ok := c.Value(ValuePrefixMatch)
	if !ok {
		return req.PromptTokens
	}
	return int(math.Round(float64(req.PromptTokens) * (1 - min(max(m, 0), 1))))
}

// Filter removes candidates that must not serve the request. It may reorder or reuse cands
// and returns the survivors.
type Filter interface {
	Name() string
	Filter(ctx context.Context, req *Request, cands []Candidate) []Candidate
}

// PreScorer computes per-candidate values once per decision, before any scorer runs (with
// Candidate.SetValue). Plugins in any role that implement it are called in profile order.
type PreScorer interface {
	Name() string
	PreScore(ctx context.Context, req *Request, cands []Candidate)
}

// ValueReader is implemented by filters that read per-candidate values (the prefix match,
// the predictions) and so need them before they run. The scheduler computes the values (the
// pre-scorers, then the predictor) once per decision: just before the first filter of the
// profile whose ReadsValues is true, over the candidates the filters before it kept, or,
// when no filter reads values, after the last filter. Filters that follow see the same values,
// carried by the candidates they keep.
type ValueReader interface {
	ReadsValues() bool
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

// DispatchObserver is implemented by plugins that learn from where requests go, such as the
// prefix record. The request lifecycle calls Dispatched once the request is sent to target,
// and Moved when the gateway reports that another replica served it, so what was credited to
// the primary moves to the replica doing the work. Calls for one request are never concurrent.
type DispatchObserver interface {
	Dispatched(ctx context.Context, req *Request, target Candidate)
	Moved(ctx context.Context, req *Request, from, to Candidate)
}

// Predictor estimates, for each candidate, the request's latency there: it sets the
// ValuePredicted values and ModelVersion. The scheduler calls it once per decision, after the
// pre-score plugins (its features include their values, such as the prefix match) and before
// the scorers, so that every scorer and picker can read the predictions. It must not block.
type Predictor interface {
	Predict(ctx context.Context, req *Request, cands []Candidate)
}

// Handle is what a plugin may use from its environment, given to its factory.
type Handle struct {
	// Pool is the pool the profile schedules over, for plugins that follow its membership.
	Pool  *pool.Pool
	Clock clock.PassiveClock
	Log   *slog.Logger
	// Metrics registers the plugin's metrics; nil means none are exported.
	Metrics prometheus.Registerer
	// Seed makes randomised plugins repeatable.
	Seed uint64
	// Predictor is the scheduler's latency predictor, nil when it has none. Plugins read its
	// predictions from the candidates; they need not call it.
	Predictor Predictor
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

	preScorers []PreScorer        // the plugins above that implement it, found by validate
	valuesAt   int                // index of the filter the values are computed before (len(Filters): after all)
	observers  []DispatchObserver // likewise
	instances  map[string]any     // plugins by role, name and arguments, for reuse on reload
}

// Dispatched tells the profile's observers that req was sent to target.
func (p *Profile) Dispatched(ctx context.Context, req *Request, target Candidate) {
	for _, ob := range p.observers {
		ob.Dispatched(ctx, req, target)
	}
}

// Moved tells the profile's observers that another replica than the one credited served req.
func (p *Profile) Moved(ctx context.Context, req *Request, from, to Candidate) {
	for _, ob := range p.observers {
		ob.Moved(ctx, req, from, to)
	}
}

// Rejection is a decision not to serve a request, with the HTTP status and the
// x-llm-d-request-dropped-reason the gateway answers it with. Plugins, the scheduler and flow
// control return one (possibly wrapped) to refuse a request; any other error is a 500.
type Rejection struct {
	Status int
	Reason string // empty: no dropped-reason header
	Msg    string
}

func (r *Rejection) Error() string { return r.Msg }

// Reject returns a rejection with a formatted message.
func Reject(status int, reason, format string, args ...any) *Rejection {
	return &Rejection{Status: status, Reason: reason, Msg: fmt.Sprintf(format, args...)}
}

// RejectionOf returns the rejection err carries, if any.
func RejectionOf(err error) (*Rejection, bool) {
	var r *Rejection
	ok := errors.As(err, &r)
	return r, ok
}

// ErrNoEndpoints means no replica may serve the request: none is ready, or the gateway's
// subset hint matched none.
var ErrNoEndpoints = Reject(503, "rejected-no-endpoints", "no ready endpoint")

// ErrModelNotFound means every replica lists the models it serves and none lists the
// requested one: a replica would answer 404, so the picker does without routing.
var ErrModelNotFound = Reject(404, "model-not-found", "model not found")
