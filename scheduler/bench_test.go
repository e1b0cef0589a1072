package scheduler_test

import (
	"testing"

	"github.com/augur-llm/augur/scheduler/schedulertest"
)

// BenchmarkSchedule64Prompt8000 is one decision with 64 replicas and an 8,000-token prompt
// under the llm-d profile (prefix, queue and KV-usage scorers), every replica's prefix record
// warm, without a predictor. The predictor's package times the same decision with one
// (BenchmarkDecision64Prompt8000Predicted).
func BenchmarkSchedule64Prompt8000(b *testing.B) {
	schedulertest.NewDecision(b, schedulertest.DecisionOptions{}).Run(b)
}
