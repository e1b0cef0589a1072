package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/augur-llm/augur/models"
	"github.com/augur-llm/augur/store"
)

// artifact is a sealed artifact whose model bytes are placeholders: the store keeps bytes and
// manifests, it does not read models.
func artifact(version string, target models.Target, kind models.ModelKind, parent string) models.Artifact {
	l := models.NewLayout([]string{"8b-h100"})
	a := models.Artifact{
		Manifest: models.Manifest{
			Version: version, Run: "run-" + version, Target: target, Kind: kind, SchemaVersion: models.SchemaVersion,
			Columns: l.Columns(), Classes: l.Classes, Prior: models.DefaultPrior(target), Trees: 3,
			Parent: parent, CreatedAt: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC),
		},
		Leaves: []byte("leaves " + version), XGBoost: []byte(`{"v":"` + version + `"}`),
	}
	if kind == models.Quantile {
		a.Manifest.Quantile, a.Manifest.Method = 0.9, models.MethodCalibrated
		a.Manifest.Calibration = &models.Calibration{Offsets: map[string]float64{"idle/miss/8b-h100": 0.1}, Default: 0.2}
	}
	a.Seal()
	return a
}

func TestModelVersionsPublishChampions(t *testing.T) {
	db := open(t, shared.NewDatabase(t))
	ctx := context.Background()
	if err := store.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	if v, err := store.ChampionVersions(ctx, db); err != nil || len(v) != 0 {
		t.Fatalf("champions of an empty table: %v %v", v, err)
	}
	first := []models.Artifact{artifact("a1", models.TTFT, models.Mean, ""), artifact("a2", models.TTFT, models.Quantile, "")}
	if err := store.SaveModels(ctx, db, first, []bool{true, true}); err != nil {
		t.Fatal(err)
	}
	// A challenger that lost is kept for the record, not published.
	if err := store.SaveModels(ctx, db, []models.Artifact{artifact("b1", models.TTFT, models.Mean, "a1")}, []bool{false}); err != nil {
		t.Fatal(err)
	}
	v, err := store.ChampionVersions(ctx, db)
	if err != nil || v["ttft-mean"] != "a1" || v["ttft-quantile"] != "a2" || len(v) != 2 {
		t.Fatalf("champions %v (%v)", v, err)
	}
	// A winner replaces the champion it was compared with.
	if err := store.SaveModels(ctx, db, []models.Artifact{artifact("c1", models.TTFT, models.Mean, "a1")}, []bool{true}); err != nil {
		t.Fatal(err)
	}
	// One compared with a champion that has since been replaced is refused, and nothing of
	// its run is saved.
	late := []models.Artifact{artifact("d0", models.TPOT, models.Mean, ""), artifact("d1", models.TTFT, models.Mean, "a1")}
	if err := store.SaveModels(ctx, db, late, []bool{true, true}); !errors.Is(err, store.ErrChampionChanged) {
		t.Fatalf("stale comparison: %v, want ErrChampionChanged", err)
	}
	var n int
	if err := db.QueryRow(ctx, "SELECT count(*) FROM model_versions WHERE version = 'd0'").Scan(&n); err != nil || n != 0 {
		t.Fatalf("a refused run left %d models behind (%v)", n, err)
	}
	champs, err := store.Champions(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, a := range champs {
		if err := a.Verify(); err != nil {
			t.Errorf("stored champion does not verify: %v", err)
		}
		got[a.Manifest.Name()] = a.Manifest.Version
	}
	if got["ttft-mean"] != "c1" || got["ttft-quantile"] != "a2" || len(got) != 2 {
		t.Fatalf("champions after replacement %v", got)
	}
	var all, published int
	if err := db.QueryRow(ctx, "SELECT count(*), count(*) FILTER (WHERE published) FROM model_versions").Scan(&all, &published); err != nil {
		t.Fatal(err)
	}
	if all != 4 || published != 2 {
		t.Errorf("%d models kept, %d published; want every model of the saved runs (4), 2 published", all, published)
	}
	// A corrupt artifact never reaches the table.
	bad := artifact("e1", models.TPOT, models.Mean, "")
	bad.Leaves = bad.Leaves[:3]
	if err := store.SaveModels(ctx, db, []models.Artifact{bad}, []bool{true}); !errors.Is(err, models.ErrInvalidArtifact) {
		t.Fatalf("truncated artifact saved: %v", err)
	}
}

func TestScanSamplesReadsOneSchema(t *testing.T) {
	db := open(t, shared.NewDatabase(t))
	ctx := context.Background()
	if err := store.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	var in []store.Sample
	for i := range 50 {
		s := fullSample(i, at.Add(time.Duration(i)*time.Second))
		s.RequestID = "scan-" + time.Duration(i).String()
		if i%5 == 0 {
			s.SchemaVersion = models.SchemaVersion - 1 // an older picker's row
		}
		in = append(in, s)
	}
	if err := store.WriteSamples(ctx, db, in); err != nil {
		t.Fatal(err)
	}
	var ids []string
	err := store.ScanSamples(ctx, db, at.Add(10*time.Second), at.Add(40*time.Second), models.SchemaVersion, func(s *store.Sample) error {
		if s.SchemaVersion != models.SchemaVersion {
			t.Errorf("sample of schema %d", s.SchemaVersion)
		}
		ids = append(ids, s.RequestID)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 24 { // seconds 10..39 less the 6 of the older schema
		t.Fatalf("scanned %d samples, want 24", len(ids))
	}
	stop := errors.New("stop")
	if err := store.ScanSamples(ctx, db, at, at.Add(time.Hour), models.SchemaVersion, func(*store.Sample) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("the callback's error must end the scan: %v", err)
	}
}
