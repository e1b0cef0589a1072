package store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/augur-llm/augur/models"
)

// Sample is one request as recorded: for a dispatched request the chosen replica's features
// at decision time, the prediction used, the objectives, and what was observed; for one
// refused before dispatch (Refused) its own features, its objectives and why. Optional values
// are pointers (NULL in the table).
type Sample struct {
	Time           time.Time
	RequestID      string
	Model          string
	Objective      string
	FairnessID     string
	Stream         bool
	Replica        string
	ReplicaAddress string
	ReplicaClass   string
	// ServedByFallback: the primary could not be reached and a fallback served; the
	// features are the primary's as the decision saw them.
	ServedByFallback bool
	// Refused: the request was never dispatched (flow control or the scheduler refused it, or
	// its client left while it waited); Replica is empty and Reason says why, when the
	// refusal had an x-llm-d-request-dropped-reason.
	Refused bool
	Reason  string
	// QueuedMs is the time the request waited for admission (flow control), until dispatch
	// or refusal.
	QueuedMs *float64

	// SchemaVersion is the feature schema Features follow (models.SchemaVersion when
	// written by this build).
	SchemaVersion int
	// Features are the chosen replica's features at decision time, one column each.
	Features models.Vector

	SLOTTFTMs, SLOTPOTMs *float64
	// PredictedTTFTMs and PredictedTPOTMs are the mean predictions the decision had for the
	// chosen replica, the Upper ones its upper-quantile predictions; ModelVersion names the
	// models (or the cold-start estimate) that made them.
	PredictedTTFTMs, PredictedTPOTMs           *float64
	PredictedTTFTUpperMs, PredictedTPOTUpperMs *float64
	ModelVersion                               *string

	DecisionUs           float64
	TTFTMs, TPOTMs       *float64
	E2EMs                float64
	PromptTokensReported *int
	CachedTokensReported *int
	OutputTokens         int
	Outcome              string
	Status               int
}

// maxLatencyMs bounds every latency field: a day is beyond any request a picker routes, so a
// larger value is a clock or measurement error.
const maxLatencyMs = 24 * 60 * 60 * 1000

// maxText bounds every text column: ids and names, never documents.
const maxText = 1024

// ErrInvalid marks samples rejected by Validate.
var ErrInvalid = errors.New("invalid sample")

// Validate rejects samples whose values cannot be true: negative or non-finite latencies and
// counts, usage outside 0..1, missing identity. They would poison a trainer.
func (s *Sample) Validate() error {
	bad := func(field string, v any) error { return fmt.Errorf("%w: %s = %v", ErrInvalid, field, v) }
	if s.Time.IsZero() {
		return bad("time", s.Time)
	}
	if s.RequestID == "" || s.Outcome == "" {
		return fmt.Errorf("%w: request id and outcome are required", ErrInvalid)
	}
	if s.Replica == "" && !s.Refused {
		return fmt.Errorf("%w: a dispatched request's sample names its replica", ErrInvalid)
	}
	// Text comes from clients (model, headers): Postgres refuses NUL and invalid UTF-8, and
	// one refused row would otherwise fail its whole batch.
	for _, f := range []struct{ name, v string }{
		{"request_id", s.RequestID}, {"model", s.Model}, {"objective", s.Objective}, {"fairness_id", s.FairnessID},
		{"replica", s.Replica}, {"replica_address", s.ReplicaAddress}, {"replica_class", s.ReplicaClass}, {"outcome", s.Outcome}, {"reason", s.Reason},
	} {
		if len(f.v) > maxText || !utf8.ValidString(f.v) || strings.IndexByte(f.v, 0) >= 0 {
			return fmt.Errorf("%w: %s is not valid UTF-8 text of at most %d bytes", ErrInvalid, f.name, maxText)
		}
	}
	if s.ModelVersion != nil && (len(*s.ModelVersion) > maxText || !utf8.ValidString(*s.ModelVersion) || strings.IndexByte(*s.ModelVersion, 0) >= 0) {
		return fmt.Errorf("%w: model_version is not valid text", ErrInvalid)
	}
	for _, f := range []struct {
		name string
		v    float64
		max  float64
	}{
		{"e2e_ms", s.E2EMs, maxLatencyMs}, {"decision_us", s.DecisionUs, maxLatencyMs * 1000},
	} {
		if math.IsNaN(f.v) || math.IsInf(f.v, 0) || f.v < 0 || f.v > f.max {
			return bad(f.name, f.v)
		}
	}
	for _, f := range []struct {
		name string
		v    *float64
	}{
		{"ttft_ms", s.TTFTMs}, {"tpot_ms", s.TPOTMs}, {"queued_ms", s.QueuedMs}, {"slo_ttft_ms", s.SLOTTFTMs}, {"slo_tpot_ms", s.SLOTPOTMs},
		{"predicted_ttft_ms", s.PredictedTTFTMs}, {"predicted_tpot_ms", s.PredictedTPOTMs},
		{"predicted_ttft_upper_ms", s.PredictedTTFTUpperMs}, {"predicted_tpot_upper_ms", s.PredictedTPOTUpperMs},
	} {
		if f.v != nil && (math.IsNaN(*f.v) || math.IsInf(*f.v, 0) || *f.v < 0 || *f.v > maxLatencyMs) {
			return bad(f.name, *f.v)
		}
	}
	if s.SchemaVersion <= 0 {
		return bad("schema_version", s.SchemaVersion)
	}
	for i := range models.NumFeatures {
		f := models.At(i)
		v, ok := s.Features.Get(i)
		if ok && (math.IsNaN(v) || math.IsInf(v, 0) || v < 0 || v > f.Max || (f.Kind == models.Int && v != math.Trunc(v))) {
			return bad(f.Name, v)
		}
	}
	// The remaining counts are integer (int4) columns.
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"output_tokens", int64(s.OutputTokens)}, {"status", int64(s.Status)},
	} {
		if f.v < 0 || f.v > math.MaxInt32 {
			return bad(f.name, f.v)
		}
	}
	for _, f := range []struct {
		name string
		v    *int
	}{{"prompt_tokens_reported", s.PromptTokensReported}, {"cached_tokens_reported", s.CachedTokensReported}} {
		if f.v != nil && (*f.v < 0 || *f.v > math.MaxInt32) {
			return bad(f.name, *f.v)
		}
	}
	return nil
}

// Columns around the features, in table order.
var (
	headColumns = []string{"time", "request_id", "model", "objective", "fairness_id", "stream", "replica", "replica_address",
		"replica_class", "served_by_fallback", "schema_version"}
	tailColumns = []string{"slo_ttft_ms", "slo_tpot_ms", "predicted_ttft_ms", "predicted_tpot_ms",
		"predicted_ttft_upper_ms", "predicted_tpot_upper_ms",
		"model_version", "decision_us", "ttft_ms", "tpot_ms", "e2e_ms", "prompt_tokens_reported", "cached_tokens_reported",
		"output_tokens", "outcome", "status", "refused", "reason", "queued_ms"}
)

// SampleColumns is the column order of writes and reads: identity, the features in schema
// order, then objectives, prediction and what was observed.
func SampleColumns() []string {
	return slices.Concat(headColumns, models.Names(), tailColumns)
}

func (s *Sample) values() []any {
	out := make([]any, 0, len(headColumns)+models.NumFeatures+len(tailColumns))
	out = append(out, s.Time, s.RequestID, s.Model, s.Objective, s.FairnessID, s.Stream, s.Replica, s.ReplicaAddress,
		s.ReplicaClass, s.ServedByFallback, s.SchemaVersion)
	for i := range models.NumFeatures {
		f := models.At(i)
		v, ok := s.Features.Get(i)
		switch {
		case !ok:
			out = append(out, nil)
		case f.Kind == models.Int:
			out = append(out, int64(v))
		default:
			out = append(out, v)
		}
	}
	return append(out, s.SLOTTFTMs, s.SLOTPOTMs, s.PredictedTTFTMs, s.PredictedTPOTMs, s.PredictedTTFTUpperMs, s.PredictedTPOTUpperMs,
		s.ModelVersion, s.DecisionUs, s.TTFTMs, s.TPOTMs, s.E2EMs, s.PromptTokensReported, s.CachedTokensReported,
		s.OutputTokens, s.Outcome, s.Status, s.Refused, s.Reason, s.QueuedMs)
}

// scan reads one row of SampleColumns.
func (s *Sample) scan(row pgx.Row) error {
	feats := make([]any, models.NumFeatures)
	targets := []any{&s.Time, &s.RequestID, &s.Model, &s.Objective, &s.FairnessID, &s.Stream, &s.Replica, &s.ReplicaAddress,
		&s.ReplicaClass, &s.ServedByFallback, &s.SchemaVersion}
	for i := range feats {
		targets = append(targets, &feats[i])
	}
	targets = append(targets, &s.SLOTTFTMs, &s.SLOTPOTMs, &s.PredictedTTFTMs, &s.PredictedTPOTMs, &s.PredictedTTFTUpperMs, &s.PredictedTPOTUpperMs,
		&s.ModelVersion, &s.DecisionUs, &s.TTFTMs, &s.TPOTMs, &s.E2EMs, &s.PromptTokensReported, &s.CachedTokensReported,
		&s.OutputTokens, &s.Outcome, &s.Status, &s.Refused, &s.Reason, &s.QueuedMs)
	if err := row.Scan(targets...); err != nil {
		return err
	}
	s.Features = models.Vector{}
	for i, v := range feats {
		switch x := v.(type) {
		case nil:
		case float64:
			s.Features.Set(i, x)
		case int64:
			s.Features.Set(i, float64(x))
		case int32:
			s.Features.Set(i, float64(x))
		default:
			return fmt.Errorf("column %s: unexpected %T", models.Names()[i], v)
		}
	}
	return nil
}

// WriteSamples copies samples into the table in one COPY.
func WriteSamples(ctx context.Context, db *pgxpool.Pool, samples []Sample) error {
	n, err := db.CopyFrom(ctx, pgx.Identifier{"request_samples"}, SampleColumns(),
		pgx.CopyFromSlice(len(samples), func(i int) ([]any, error) { return samples[i].values(), nil }))
	if err != nil {
		return fmt.Errorf("write samples: %w", err)
	}
	if int(n) != len(samples) {
		return fmt.Errorf("write samples: copied %d of %d", n, len(samples))
	}
	return nil
}

// ReadSamples returns the samples with from <= time < to, oldest first: the trainer's read.
func ReadSamples(ctx context.Context, db *pgxpool.Pool, from, to time.Time) ([]Sample, error) {
	q := "SELECT " + strings.Join(SampleColumns(), ", ") + " FROM request_samples WHERE time >= $1 AND time < $2 ORDER BY time, request_id"
	rows, err := db.Query(ctx, q, from, to)
	if err != nil {
		return nil, fmt.Errorf("read samples: %w", err)
	}
	defer rows.Close()
	var out []Sample
	for rows.Next() {
		var s Sample
		if err := s.scan(rows); err != nil {
			return nil, fmt.Errorf("read samples: %w", err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read samples: %w", err)
	}
	return out, nil
}

// CountSamples returns how many samples have from <= time < to.
func CountSamples(ctx context.Context, db *pgxpool.Pool, from, to time.Time) (int64, error) {
	var n int64
	if err := db.QueryRow(ctx, "SELECT count(*) FROM request_samples WHERE time >= $1 AND time < $2", from, to).Scan(&n); err != nil {
		return 0, fmt.Errorf("count samples: %w", err)
	}
	return n, nil
}

// DeleteOlderThan removes samples recorded before cutoff and returns how many: retention.
func DeleteOlderThan(ctx context.Context, db *pgxpool.Pool, cutoff time.Time) (int64, error) {
	tag, err := db.Exec(ctx, "DELETE FROM request_samples WHERE time < $1", cutoff)
	if err != nil {
		return 0, fmt.Errorf("retention: %w", err)
	}
	return tag.RowsAffected(), nil
}
