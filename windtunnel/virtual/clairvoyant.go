package virtual

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/augur-llm/augur/scheduler"
	"github.com/augur-llm/augur/windtunnel/sim"
)

// ClairvoyantVersion is the ModelVersion of the clairvoyant's predictions.
const ClairvoyantVersion = "clairvoyant"

// clairvoyant is the predictor no real one can beat (Config.Clairvoyant): for each candidate
// it forecasts the request on a copy of that replica's true engine state, with the prompt
// the replica will receive, so queueing, batching and prefix-cache hits are exact. What it
// cannot know is the future: the forecast assumes nothing else arrives on the replica before
// the request has its answer (sim.Forecaster), and with the token bound its TPOT is that of
// the request's first tokens. Being certain, it gives the same numbers as its mean and its
// upper quantile.
type clairvoyant struct {
	r *run
	f *sim.Forecaster
	// oracle, when set, limits the clairvoyant to the predictions it names, over a
	// predictor's: the candidates keep the predictor's model version.
	oracle *Oracle
}

func newClairvoyant(r *run, tokens int) *clairvoyant {
	return &clairvoyant{r: r, f: sim.NewForecaster(tokens)}
}

// Predict implements scheduler.Predictor. A candidate the replica would refuse the request
// on (too long for it) gets no values, as it gets no request: Submit fails the same way.
// Non-streamed requests are forecast as if streamed; the engine does not tell them apart.
func (c *clairvoyant) Predict(_ context.Context, req *scheduler.Request, cands []scheduler.Candidate) {
	if c.oracle != nil && !c.oracle.covers(req) {
		return
	}
	now := c.r.clk.now
	sreq := sim.Request{Prompt: sim.TextPrompt(req.Prompt), MaxTokens: req.MaxTokens}
	for i := range cands {
		cand := &cands[i]
		idx, ok := c.r.byAddr[cand.Replica]
		if !ok {
			continue
		}
		fc, err := c.f.Forecast(c.r.replicas[idx], now, sreq)
		if errors.Is(err, sim.ErrForecastFailed) {
			// The reference would quietly lose its knowledge; a benchmark must not go on.
			panic(fmt.Sprintf("clairvoyant: %s: %v", cand.Endpoint.Name, err))
		}
		if err != nil {
			continue
		}
		ttft, tpot := millis(fc.TTFT), millis(fc.TPOT)
		if c.oracle == nil || c.oracle.TTFT {
			cand.SetValue(scheduler.ValuePredictedTTFT, ttft)
			cand.SetValue(scheduler.ValuePredictedTTFTUpper, ttft)
		}
		if c.oracle == nil || c.oracle.TPOT {
			cand.SetValue(scheduler.ValuePredictedTPOT, tpot)
			cand.SetValue(scheduler.ValuePredictedTPOTUpper, tpot)
		}
		if c.oracle == nil {
			cand.ModelVersion = ClairvoyantVersion
		}
	}
}

// Oracle names the predictions the clairvoyant supplies over a predictor's (Config.Oracle):
// an ablation that measures what the error of each costs a policy, never a way to schedule.
type Oracle struct {
	TTFT, TPOT bool
	// Objectives limits the oracle to requests naming one of these objectives (the
	// x-gateway-inference-objective header; the SLO class in the wind tunnel's workloads);
	// every request when empty.
	Objectives []string
}

// Active reports whether the oracle supplies any prediction.
func (o Oracle) Active() bool { return o.TTFT || o.TPOT }

func (o Oracle) covers(req *scheduler.Request) bool {
	return len(o.Objectives) == 0 || slices.Contains(o.Objectives, req.Objective)
}

// String is the oracle in ParseOracle's form; "" when inactive.
func (o Oracle) String() string {
	var t []string
	if o.TTFT {
		t = append(t, "ttft")
	}
	if o.TPOT {
		t = append(t, "tpot")
	}
	s := strings.Join(t, ",")
	if len(o.Objectives) > 0 {
		s += ":" + strings.Join(o.Objectives, ",")
	}
	return s
}

// ParseOracle reads "TARGETS[:OBJECTIVES]": targets ttft, tpot or both, comma-separated,
// and optionally the objectives the oracle is limited to, e.g. "ttft:batch" or
// "ttft,tpot:interactive,standard".
func ParseOracle(s string) (Oracle, error) {
	var o Oracle
	targets, objectives, limited := strings.Cut(s, ":")
	for _, t := range strings.Split(targets, ",") {
		switch strings.TrimSpace(t) {
		case "ttft":
			o.TTFT = true
		case "tpot":
			o.TPOT = true
		default:
			return Oracle{}, fmt.Errorf("oracle %q: target %q must be ttft or tpot", s, t)
		}
	}
	if limited {
		for _, name := range strings.Split(objectives, ",") {
			name = strings.TrimSpace(name)
			if name == "" {
				return Oracle{}, fmt.Errorf("oracle %q: empty objective name", s)
			}
			o.Objectives = append(o.Objectives, name)
		}
	}
	return o, nil
}

// oracled is a predictor whose predictions an oracle then partly replaces.
type oracled struct {
	pred scheduler.Predictor
	cv   *clairvoyant
}

func (o oracled) Predict(ctx context.Context, req *scheduler.Request, cands []scheduler.Candidate) {
	o.pred.Predict(ctx, req, cands)
	o.cv.Predict(ctx, req, cands)
}

// millis is a duration in the predicted values' unit.
func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
