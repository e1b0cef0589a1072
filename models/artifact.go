package models

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// ModelKind is what statistic of the target a model predicts.
type ModelKind string

// Kinds.
const (
	// Mean models are fitted to the logarithm of the latency by least squares: they estimate
	// its geometric mean, which is what minimises relative error (the MAPE they are judged by).
	Mean ModelKind = "mean"
	// Quantile models estimate an upper quantile (Manifest.Quantile) of the latency.
	Quantile ModelKind = "quantile"
)

// Quantile methods (Manifest.Method).
const (
	// MethodCalibrated: the mean model's trees, with per-regime offsets (Calibration) taken
	// from the quantile of its log residuals on data it was not trained on. Predicting the
	// quantile costs nothing beyond the mean.
	MethodCalibrated = "calibrated"
	// MethodPinball: trees of their own, fitted to the pinball loss of the quantile through a
	// custom objective.
	MethodPinball = "pinball"
)

// ErrInvalidArtifact marks an artifact that must not be loaded: corrupt, truncated, of
// another feature schema, or inconsistent.
var ErrInvalidArtifact = errors.New("invalid model artifact")

// Manifest describes a model artifact: what it predicts, from which features, trained on
// what, and how well it did on data it did not see.
type Manifest struct {
	// Version names the artifact uniquely; Run names the trainer run that made it (the
	// models of one run share it).
	Version string    `json:"version"`
	Run     string    `json:"run"`
	Target  Target    `json:"target"`
	Kind    ModelKind `json:"kind"`
	// Quantile is the quantile a Quantile model estimates (0.9 for p90); Method how.
	Quantile float64 `json:"quantile,omitempty"`
	Method   string  `json:"method,omitempty"`

	// SchemaVersion and Columns are the model's input: Columns must equal
	// Layout{Classes}.Columns() of this build's schema.
	SchemaVersion int      `json:"schema_version"`
	Columns       []string `json:"columns"`
	Classes       []string `json:"classes"`
	// Prior is the analytic model the trees were boosted from: prediction =
	// exp(sum of trees + ln(Prior estimate)) ms.
	Prior Prior `json:"prior"`
	// Calibration holds a calibrated quantile's offsets (MethodCalibrated); on a mean model,
	// optional, the offsets that make its prediction minimise the absolute percentage error.
	Calibration *Calibration `json:"calibration,omitempty"`

	Trees  int               `json:"trees"`
	Params map[string]string `json:"params,omitempty"`

	// What it was trained on: the times of its first and last training samples, and how
	// many there were.
	TrainedFrom time.Time `json:"trained_from"`
	TrainedTo   time.Time `json:"trained_to"`
	Samples     int       `json:"samples"`
	// Holdout is its accuracy on the newest samples of the window, which it did not see.
	Holdout Evaluation `json:"holdout"`
	// Parent is the champion it was compared with ("" when none served).
	Parent    string    `json:"parent,omitempty"`
	CreatedAt time.Time `json:"created_at"`

	// SHA256 of the leaves model and of XGBoost's JSON model, hex.
	LeavesSHA256  string `json:"leaves_sha256"`
	XGBoostSHA256 string `json:"xgboost_sha256"`
}

// Calibration corrects a model's prediction per regime: multiply it by exp(Offsets[regime
// key]) for the request's regime, or by exp(Default) for a regime without enough data. It
// turns a mean model's trees into a quantile's, or their geometric mean into the estimate of
// least relative error.
type Calibration struct {
	Offsets map[string]float64 `json:"offsets"`
	Default float64            `json:"default"`
}

// Offset is the log offset for regime r.
func (c *Calibration) Offset(r Regime) float64 {
	if o, ok := c.Offsets[r.Key()]; ok {
		return o
	}
	return c.Default
}

// Evaluation is a model's accuracy, overall and per regime.
type Evaluation struct {
	Overall Metrics            `json:"overall"`
	Regimes map[string]Metrics `json:"regimes,omitempty"`
}

// Metrics are accuracy figures over Count samples. Errors are of the mean prediction for a
// Mean model; for a Quantile model Coverage is the share of samples at or below the
// prediction and Pinball the mean pinball loss (ms).
type Metrics struct {
	Count    int     `json:"count"`
	MAPE     float64 `json:"mape"`    // mean absolute percentage error, as a fraction
	MAE      float64 `json:"mae_ms"`  // mean absolute error
	P50APE   float64 `json:"p50_ape"` // median absolute percentage error
	P90APE   float64 `json:"p90_ape"`
	Coverage float64 `json:"coverage,omitempty"`
	Pinball  float64 `json:"pinball_ms,omitempty"`
}

// Artifact is a trained model: its manifest, the binary model leaves loads (written by
// models/xgbconv) and XGBoost's own JSON model, kept as the canonical form.
type Artifact struct {
	Manifest Manifest
	Leaves   []byte
	XGBoost  []byte
}

// Name is the artifact's slot: "ttft-mean", "tpot-quantile", ...
func (m *Manifest) Name() string { return string(m.Target) + "-" + string(m.Kind) }

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Seal sets the manifest's checksums from the model bytes.
func (a *Artifact) Seal() {
	a.Manifest.LeavesSHA256 = digest(a.Leaves)
	a.Manifest.XGBoostSHA256 = digest(a.XGBoost)
}

// Verify reports why a must not be loaded by this build, wrapping ErrInvalidArtifact: bytes
// that do not match their checksums (corrupt or truncated), another feature schema, input
// columns that are not this schema's, or a manifest that does not make sense.
func (a *Artifact) Verify() error {
	m := &a.Manifest
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w %q: %s", ErrInvalidArtifact, m.Version, fmt.Sprintf(format, args...))
	}
	if m.Version == "" || strings.ContainsAny(m.Version, "/\\\x00") {
		return bad("version %q is empty or not a plain name", m.Version)
	}
	if !m.Target.Valid() {
		return bad("unknown target %q", m.Target)
	}
	switch m.Kind {
	case Mean:
	case Quantile:
		if !(m.Quantile > 0 && m.Quantile < 1) {
			return bad("quantile %v outside (0, 1)", m.Quantile)
		}
		if m.Method != MethodCalibrated && m.Method != MethodPinball {
			return bad("unknown quantile method %q", m.Method)
		}
		if m.Method == MethodCalibrated && m.Calibration == nil {
			return bad("calibrated quantile without calibration")
		}
	default:
		return bad("unknown kind %q", m.Kind)
	}
	if m.SchemaVersion != SchemaVersion {
		return bad("feature schema %d, this build reads %d", m.SchemaVersion, SchemaVersion)
	}
	if want := NewLayout(m.Classes); !slices.Equal(m.Classes, want.Classes) || !slices.Equal(m.Columns, want.Columns()) {
		return bad("input columns %v are not this schema's for classes %v", m.Columns, m.Classes)
	}
	if m.Prior.Target != m.Target {
		return bad("prior for %q in a %q model", m.Prior.Target, m.Target)
	}
	if err := m.Prior.Check(); err != nil {
		return bad("%v", err)
	}
	if c := m.Calibration; c != nil {
		for k, o := range c.Offsets {
			if math.IsNaN(o) || math.IsInf(o, 0) {
				return bad("calibration offset for %s not finite", k)
			}
		}
		if math.IsNaN(c.Default) || math.IsInf(c.Default, 0) {
			return bad("calibration default not finite")
		}
	}
	if len(a.Leaves) == 0 || digest(a.Leaves) != m.LeavesSHA256 {
		return bad("leaves model (%d bytes) does not match its checksum: corrupt or truncated", len(a.Leaves))
	}
	if len(a.XGBoost) == 0 || digest(a.XGBoost) != m.XGBoostSHA256 {
		return bad("XGBoost model (%d bytes) does not match its checksum: corrupt or truncated", len(a.XGBoost))
	}
	return nil
}

// File names in a model directory, per slot (Name): NAME.manifest.json, NAME.leaves,
// NAME.xgboost.json. A directory holds at most one artifact per slot: the models to serve.
const (
	manifestSuffix = ".manifest.json"
	leavesSuffix   = ".leaves"
	xgboostSuffix  = ".xgboost.json"
)

// WriteDir writes a into dir (created if needed) in its slot, replacing what was there. Each
// file is written to a temporary name and renamed; the manifest goes last, so a reader that
// sees it finds its model files (and checks them against it).
func WriteDir(dir string, a Artifact) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("model dir: %w", err)
	}
	m, err := json.MarshalIndent(a.Manifest, "", "  ")
	if err != nil {
		return fmt.Errorf("model dir: %w", err)
	}
	name := a.Manifest.Name()
	for _, f := range []struct {
		suffix string
		b      []byte
	}{{leavesSuffix, a.Leaves}, {xgboostSuffix, a.XGBoost}, {manifestSuffix, append(m, '\n')}} {
		path := filepath.Join(dir, name+f.suffix)
		tmp, err := os.CreateTemp(dir, "."+name+f.suffix+".*")
		if err != nil {
			return fmt.Errorf("model dir: %w", err)
		}
		_, werr := tmp.Write(f.b)
		cerr := tmp.Close()
		if werr == nil {
			werr = cerr
		}
		if werr == nil {
			werr = os.Rename(tmp.Name(), path)
		}
		if werr != nil {
			os.Remove(tmp.Name())
			return fmt.Errorf("model dir: write %s: %w", path, werr)
		}
	}
	return nil
}

// ReadDir reads every artifact in dir: one per *.manifest.json, with its model files. An
// artifact whose files are missing, unreadable or fail Verify is an error naming it; the
// others are still returned.
func ReadDir(dir string) ([]Artifact, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("model dir: %w", err)
	}
	var out []Artifact
	var errs []error
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), manifestSuffix)
		if !ok || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		a, err := readArtifact(dir, name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, a)
	}
	return out, errors.Join(errs...)
}

func readArtifact(dir, name string) (Artifact, error) {
	var a Artifact
	b, err := os.ReadFile(filepath.Join(dir, name+manifestSuffix))
	if err != nil {
		return a, fmt.Errorf("model dir: %w", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a.Manifest); err != nil {
		return a, fmt.Errorf("%w: %s%s: %v", ErrInvalidArtifact, name, manifestSuffix, err)
	}
	if a.Manifest.Name() != name {
		return a, fmt.Errorf("%w: %s%s describes a %s model", ErrInvalidArtifact, name, manifestSuffix, a.Manifest.Name())
	}
	if a.Leaves, err = os.ReadFile(filepath.Join(dir, name+leavesSuffix)); err != nil {
		return a, fmt.Errorf("%w: %v", ErrInvalidArtifact, err)
	}
	if a.XGBoost, err = os.ReadFile(filepath.Join(dir, name+xgboostSuffix)); err != nil {
		return a, fmt.Errorf("%w: %v", ErrInvalidArtifact, err)
	}
	return a, a.Verify()
}

// DecodeManifest reads a manifest stored as JSON (the model table's copy), strictly.
func DecodeManifest(b []byte) (Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return m, fmt.Errorf("%w: manifest: %v", ErrInvalidArtifact, err)
	}
	return m, nil
}
