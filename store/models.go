package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/augur-llm/augur/models"
)

// publishLock is the advisory-lock key that serialises publishing between trainers
// ("augurpub" in ASCII).
const publishLock = 0x6175677572707562

// ErrChampionChanged means another trainer published between this one's comparison and its
// publishing: the challenger was judged against a model that no longer serves.
var ErrChampionChanged = errors.New("the champion changed since the comparison")

// SaveModels records the artifacts of one trainer run in one transaction. Those whose
// publish flag is set become the champions of their slots (target and kind), replacing the
// current ones; each names in Manifest.Parent the champion it was compared with, and when
// that is no longer the champion nothing is saved and the error wraps ErrChampionChanged.
func SaveModels(ctx context.Context, db *pgxpool.Pool, arts []models.Artifact, publish []bool) error {
	if len(publish) != len(arts) {
		return fmt.Errorf("save models: %d publish flags for %d artifacts", len(publish), len(arts))
	}
	for i := range arts {
		if err := arts[i].Verify(); err != nil {
			return fmt.Errorf("save models: %w", err)
		}
	}
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(publishLock)); err != nil {
			return fmt.Errorf("save models: %w", err)
		}
		now := time.Now()
		for i, a := range arts {
			m := a.Manifest
			if publish[i] {
				var current string
				err := tx.QueryRow(ctx, "SELECT version FROM model_versions WHERE target = $1 AND kind = $2 AND published",
					string(m.Target), string(m.Kind)).Scan(&current)
				if err != nil && !errors.Is(err, pgx.ErrNoRows) {
					return fmt.Errorf("save models: %w", err)
				}
				if current != m.Parent {
					return fmt.Errorf("save models: %s: compared with %q, champion is %q: %w", m.Name(), m.Parent, current, ErrChampionChanged)
				}
				if _, err := tx.Exec(ctx, "UPDATE model_versions SET published = false WHERE target = $1 AND kind = $2 AND published",
					string(m.Target), string(m.Kind)); err != nil {
					return fmt.Errorf("save models: %w", err)
				}
			}
			manifest, err := json.Marshal(m)
			if err != nil {
				return fmt.Errorf("save models: %w", err)
			}
			var q *float64
			if m.Kind == models.Quantile {
				q = &m.Quantile
			}
			var publishedAt *time.Time
			if publish[i] {
				publishedAt = &now
			}
			if _, err := tx.Exec(ctx, `INSERT INTO model_versions
				(version, run, target, kind, quantile, schema_version, created_at, parent, manifest, leaves, xgboost_json, published, published_at)
				VALUES ($1, $2, $3, $4, $5, $6, $7, NULLIF($8, ''), $9, $10, $11, $12, $13)`,
				m.Version, m.Run, string(m.Target), string(m.Kind), q, m.SchemaVersion, m.CreatedAt, m.Parent,
				manifest, a.Leaves, a.XGBoost, publish[i], publishedAt); err != nil {
				return fmt.Errorf("save models: %s: %w", m.Version, err)
			}
		}
		return nil
	})
}

// ChampionVersions returns the published version of each slot ("ttft-mean" -> version): a
// cheap query for pickers to poll.
func ChampionVersions(ctx context.Context, db *pgxpool.Pool) (map[string]string, error) {
	rows, err := db.Query(ctx, "SELECT target, kind, version FROM model_versions WHERE published")
	if err != nil {
		return nil, fmt.Errorf("champion versions: %w", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var target, kind, version string
		if err := rows.Scan(&target, &kind, &version); err != nil {
			return nil, fmt.Errorf("champion versions: %w", err)
		}
		out[target+"-"+kind] = version
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("champion versions: %w", err)
	}
	return out, nil
}

// Champions returns the published artifacts, as stored: the caller verifies them (a picker
// must not trust bytes it did not check). A row whose manifest this build cannot decode (a
// newer trainer's, a damaged one) comes back with only its version, run, target and kind,
// from the table's columns: it fails Verify, and a trainer still knows which champion it
// replaces.
func Champions(ctx context.Context, db *pgxpool.Pool) ([]models.Artifact, error) {
	return queryArtifacts(ctx, db, "WHERE published ORDER BY target, kind")
}

func queryArtifacts(ctx context.Context, db *pgxpool.Pool, where string, args ...any) ([]models.Artifact, error) {
	rows, err := db.Query(ctx, "SELECT version, run, target, kind, manifest, leaves, xgboost_json FROM model_versions "+where, args...)
	if err != nil {
		return nil, fmt.Errorf("read models: %w", err)
	}
	defer rows.Close()
	var out []models.Artifact
	for rows.Next() {
		var manifest []byte
		var version, run, target, kind string
		var a models.Artifact
		if err := rows.Scan(&version, &run, &target, &kind, &manifest, &a.Leaves, &a.XGBoost); err != nil {
			return nil, fmt.Errorf("read models: %w", err)
		}
		if a.Manifest, err = models.DecodeManifest(manifest); err != nil {
			a.Manifest = models.Manifest{Version: version, Run: run, Target: models.Target(target), Kind: models.ModelKind(kind)}
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read models: %w", err)
	}
	return out, nil
}

// ScanSamples calls fn with every sample of feature schema schemaVersion recorded in
// [from, to), oldest first, reading them as a stream: a trainer's window of millions of rows
// is never held as rows. The sample passed to fn is reused; fn copies what it keeps.
func ScanSamples(ctx context.Context, db *pgxpool.Pool, from, to time.Time, schemaVersion int, fn func(*Sample) error) error {
	q := "SELECT " + strings.Join(SampleColumns(), ", ") +
		" FROM request_samples WHERE schema_version = $3 AND time >= $1 AND time < $2 ORDER BY time, request_id"
	rows, err := db.Query(ctx, q, from, to, schemaVersion)
	if err != nil {
		return fmt.Errorf("scan samples: %w", err)
	}
	defer rows.Close()
	var s Sample
	for rows.Next() {
		s = Sample{}
		if err := s.scan(rows); err != nil {
			return fmt.Errorf("scan samples: %w", err)
		}
		if err := fn(&s); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("scan samples: %w", err)
	}
	return nil
}
