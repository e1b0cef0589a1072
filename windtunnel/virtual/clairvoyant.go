package virtual

import (
	"context"
	"errors"
	"fmt"
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
}

func newClairvoyant(r *run, tokens int) *clairvoyant {
	return &clairvoyant{r: r, f: sim.NewForecaster(tokens)}
}

// Predict implements scheduler.Predictor. A candidate the replica would refuse the request
// on (too long for it) gets no values, as it gets no request: Submit fails the same way.
// Non-streamed requests are forecast as if streamed; the engine does not tell them apart.
func (c *clairvoyant) Predict(_ context.Context, req *scheduler.Request, cands []scheduler.Candidate) {
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
		cand.SetValue(scheduler.ValuePredictedTTFT, ttft)
		cand.SetValue(scheduler.ValuePredictedTTFTUpper, ttft)
		cand.SetValue(scheduler.ValuePredictedTPOT, tpot)
		cand.SetValue(scheduler.ValuePredictedTPOTUpper, tpot)
		cand.ModelVersion = ClairvoyantVersion
	}
}

// millis is a duration in the predicted values' unit.
func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
