package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
)

// TrainChannel is the Postgres notification channel on which pickers ask a trainer to run
// before its next scheduled run: a replica's latency departs from the models' predictions
// (it drifts), and models trained on the newest samples would know it.
const TrainChannel = "augur_train"

// RequestTraining asks the trainers listening on TrainChannel (ListenTraining) to train
// early; reason, the notification's payload, says why. Nobody listening is not an error:
// a trainer run as a CronJob keeps its schedule.
func RequestTraining(ctx context.Context, db *pgxpool.Pool, reason string) error {
	if _, err := db.Exec(ctx, "SELECT pg_notify($1, $2)", TrainChannel, reason); err != nil {
		return fmt.Errorf("request training: %w", err)
	}
	return nil
}

// ListenTraining calls fn with the reason of every training request (RequestTraining) made
// while it listens. It holds a connection of its own, taken from db, until ctx ends or the
// connection fails, and returns the error; requests made while nobody listens are lost.
// ready, when not nil, is called once the connection listens.
func ListenTraining(ctx context.Context, db *pgxpool.Pool, ready func(), fn func(reason string)) error {
	c, err := db.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("listen for training requests: %w", err)
	}
	// A listening connection must not go back to the pool: it is the caller's until closed.
	conn := c.Hijack()
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+TrainChannel); err != nil {
		return fmt.Errorf("listen for training requests: %w", err)
	}
	if ready != nil {
		ready()
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return fmt.Errorf("listen for training requests: %w", err)
		}
		fn(n.Payload)
	}
}
