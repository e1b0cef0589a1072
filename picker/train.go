package picker

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"k8s.io/utils/clock"

	"github.com/augur-llm/augur/models"
	"github.com/augur-llm/augur/store"
)

// TrainingRequestInterval is the least time between two of a picker's requests for early
// training: one request covers every replica that starts drifting meanwhile (the trainer
// rate-limits its early runs too, see cmd/trainer --early-min-interval).
const TrainingRequestInterval = time.Minute

// trainingRequests asks the trainer for new models when the predictor finds a replica
// drifting (store.RequestTraining): the request path only drops a reason in pending, and
// run sends it through the database.
type trainingRequests struct {
	pending chan string
}

// onDrift is the predictor's OnDrift: it never blocks, and a request already pending covers
// this one.
func (t *trainingRequests) onDrift(replica string, target models.Target, ratio float64) {
	select {
	case t.pending <- fmt.Sprintf("replica %s drifts from the models: %s x%.2f", replica, target, ratio):
	default:
	}
}

// run sends pending requests until ctx ends, at most one per TrainingRequestInterval; those
// made within the interval after one was sent are dropped, covered by it.
func (t *trainingRequests) run(ctx context.Context, db *pgxpool.Pool, clk clock.Clock, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case reason := <-t.pending:
			if err := store.RequestTraining(ctx, db, reason); err != nil {
				if ctx.Err() != nil {
					return
				}
				log.Warn("could not ask the trainer for new models", "reason", reason, "err", err)
			} else {
				log.Info("asked the trainer for new models", "reason", reason)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-clk.After(TrainingRequestInterval):
		}
		select {
		case <-t.pending:
		default:
		}
	}
}
