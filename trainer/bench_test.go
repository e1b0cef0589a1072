package trainer_test

import (
	"context"
	"testing"

	"github.com/augur-llm/augur/models"
	"github.com/augur-llm/augur/store"
	"github.com/augur-llm/augur/trainer"
	"github.com/augur-llm/augur/trainer/trainertest"
)

// BenchmarkTrainJob1M is the job's work on a million samples already in memory: both
// targets, mean and p90 models, balancing, calibration and holdout evaluation.
func BenchmarkTrainJob1M(b *testing.B) {
	for _, cap := range []int{0, -1} {
		name := "balanced"
		if cap < 0 {
			name = "unbalanced"
		}
		b.Run(name, func(b *testing.B) {
			rows := trainertest.Rows(1_000_000, 1)
			b.ResetTimer()
			for b.Loop() {
				if _, err := trainer.Train(context.Background(), rows, nil, trainer.Options{BucketCap: cap}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRunFromPostgres1M is the whole job as the CronJob runs it, on a million samples
// recorded in Postgres: reading them, training every model, saving them.
func BenchmarkRunFromPostgres1M(b *testing.B) {
	db := openDB(b)
	ctx := context.Background()
	rows := trainertest.Rows(1_000_000, 1)
	batch := make([]store.Sample, 0, 50_000)
	for i, r := range rows {
		batch = append(batch, trainertest.Sample(i, r))
		if len(batch) == cap(batch) || i == len(rows)-1 {
			if err := store.WriteSamples(ctx, db, batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := trainer.Run(ctx, db, trainer.Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFitOneModel1M fits one model (TTFT, mean, the default parameters) on a million
// labelled samples: the prior and the trees, without reading, balancing or evaluating.
func BenchmarkFitOneModel1M(b *testing.B) {
	rows := trainertest.Rows(1_000_000, 1)
	b.ResetTimer()
	for b.Loop() {
		if _, err := trainer.FitModel(context.Background(), models.TTFT, rows, trainer.DefaultParams()); err != nil {
			b.Fatal(err)
		}
	}
}
