package trainer_test

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/augur-llm/augur/local/pgserver"
	"github.com/augur-llm/augur/models"
	"github.com/augur-llm/augur/predictor"
	"github.com/augur-llm/augur/store"
	"github.com/augur-llm/augur/trainer"
	"github.com/augur-llm/augur/trainer/trainertest"
	"github.com/augur-llm/augur/trainer/xgb"
)

var shared *pgserver.Server

func TestMain(m *testing.M) { os.Exit(pgserver.RunShared(m, &shared)) }

func openDB(t testing.TB) *pgxpool.Pool {
	t.Helper()
	db, err := pgxpool.New(context.Background(), shared.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	if err := store.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	return db
}

func TestTrainLearnsTheLaw(t *testing.T) {
	rows := trainertest.Rows(8000, 1)
	rep, err := trainer.Train(context.Background(), rows, nil, trainer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Targets) != 2 {
		t.Fatalf("%d targets", len(rep.Targets))
	}
	for _, tr := range rep.Targets {
		if !tr.Published() || !strings.Contains(tr.Why, "no champion") {
			t.Errorf("%s: %s: %s, want published for want of a champion", tr.Target, tr.Decision, tr.Why)
		}
		// The law is smooth with 3% noise: a model must get close, and its p90 must cover.
		if m := tr.Mean.Overall; m.MAPE > 0.06 || m.Count != tr.Holdout {
			t.Errorf("%s: holdout MAPE %.1f%% over %d samples (holdout %d)", tr.Target, 100*m.MAPE, m.Count, tr.Holdout)
		}
		if c := tr.Upper.Overall.Coverage; c < 0.85 || c > 0.95 {
			t.Errorf("%s: p90 coverage %.1f%%", tr.Target, 100*c)
		}
		if tr.Train+tr.Calibration+tr.Holdout != tr.Labelled || tr.Holdout != 1200 {
			t.Errorf("%s: split %d + %d + %d of %d", tr.Target, tr.Train, tr.Calibration, tr.Holdout, tr.Labelled)
		}
		for _, a := range tr.Artifacts {
			if err := a.Verify(); err != nil {
				t.Error(err)
			}
			if a.Manifest.Holdout.Overall.Count == 0 || a.Manifest.Samples == 0 || a.Manifest.TrainedTo.IsZero() {
				t.Errorf("%s: manifest lacks its training facts: %+v", a.Manifest.Version, a.Manifest)
			}
		}
	}
	// The holdout is the newest samples: every training sample is older than every held-out one.
	m := rep.Targets[0].Artifacts[0].Manifest
	if !m.TrainedTo.Before(trainertest.Epoch.Add(time.Duration(8000-1200-1200) * time.Second)) {
		t.Errorf("trained up to %v, into the calibration or holdout period", m.TrainedTo)
	}
}

// A challenger whose training data were degraded (labels scrambled) is judged on the clean
// newest samples against the champion, and not published.
func TestDegradedChallengerIsNotPublished(t *testing.T) {
	good := trainertest.Rows(8000, 2)
	champ, err := trainer.Train(context.Background(), good, nil, trainer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var champions []models.Artifact
	for _, tr := range champ.Targets {
		champions = append(champions, tr.Artifacts...)
	}
	bad := trainertest.Rows(8000, 3)
	rng := rand.New(rand.NewPCG(4, 4))
	cut := len(bad) * 70 / 100 // the training part; calibration and holdout stay true
	for i := range bad[:cut] {
		j := rng.IntN(cut)
		bad[i].TTFT, bad[j].TTFT = bad[j].TTFT, bad[i].TTFT
		bad[i].TPOT, bad[j].TPOT = bad[j].TPOT*math.Exp(rng.NormFloat64()), bad[i].TPOT
	}
	rep, err := trainer.Train(context.Background(), bad, champions, trainer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range rep.Targets {
		if tr.Published() || tr.ChampionMean == nil {
			t.Errorf("%s: %s (%s), want the champion kept", tr.Target, tr.Decision, tr.Why)
		}
		if tr.Mean.Overall.MAPE <= tr.ChampionMean.Overall.MAPE {
			t.Errorf("%s: degraded MAPE %.1f%% not worse than the champion's %.1f%%", tr.Target, 100*tr.Mean.Overall.MAPE, 100*tr.ChampionMean.Overall.MAPE)
		}
		for _, a := range tr.Artifacts {
			if a.Manifest.Parent == "" {
				t.Errorf("%s names no parent though a champion served", a.Manifest.Version)
			}
		}
	}
	if rep.Published() {
		t.Error("the report says published")
	}
	// A healthy challenger on fresh data is not worse, and is published.
	rep, err = trainer.Train(context.Background(), trainertest.Rows(8000, 5), champions, trainer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range rep.Targets {
		if !tr.Published() {
			t.Errorf("%s: a healthy challenger was kept out: %s", tr.Target, tr.Why)
		}
	}
}

func TestTooFewSamplesAreSkipped(t *testing.T) {
	rep, err := trainer.Train(context.Background(), trainertest.Rows(500, 1), nil, trainer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range rep.Targets {
		if tr.Decision != trainer.DecisionSkipped || len(tr.Artifacts) != 0 {
			t.Errorf("%s: %s with %d labelled samples", tr.Target, tr.Decision, tr.Labelled)
		}
	}
}

func TestBadOptionsAreRefused(t *testing.T) {
	for _, o := range []trainer.Options{
		{Quantile: 1.2}, {QuantileMethod: "magic"}, {Holdout: 0.6, Calibration: 0.6}, {Tolerance: -1}, {MinTPOTTokens: -1},
		{Params: trainer.Params{Trees: 0, Depth: 6, Eta: 0.3, Subsample: 1, ColSample: 1}},
	} {
		if _, err := trainer.Train(context.Background(), trainertest.Rows(2000, 1), nil, o); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
}

// The pinball method trains quantile trees of their own. On samples they were not trained on
// they cover less than their quantile (the trees fit the training samples' quantile, noise
// included), which the calibrated method, fitted on samples the trees did not see, does not:
// the reason it is the default.
func TestPinballQuantileAgainstCalibrated(t *testing.T) {
	rows := trainertest.Rows(8000, 6)
	pin, err := trainer.Train(context.Background(), rows, nil, trainer.Options{QuantileMethod: models.MethodPinball})
	if err != nil {
		t.Fatal(err)
	}
	cal, err := trainer.Train(context.Background(), trainertest.Rows(8000, 6), nil, trainer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i, tr := range pin.Targets {
		u := tr.Artifacts[1].Manifest
		if u.Method != models.MethodPinball || u.Calibration != nil || u.LeavesSHA256 == tr.Artifacts[0].Manifest.LeavesSHA256 {
			t.Errorf("%s: quantile model %+v is not a pinball model of its own", tr.Target, u)
		}
		p, c := tr.Upper.Overall.Coverage, cal.Targets[i].Upper.Overall.Coverage
		t.Logf("%s: p90 coverage on the holdout: pinball %.1f%%, calibrated %.1f%%", tr.Target, 100*p, 100*c)
		if p < 0.7 || p > 0.97 {
			t.Errorf("%s: pinball p90 coverage %.1f%%", tr.Target, 100*p)
		}
		if math.Abs(c-0.9) > math.Abs(p-0.9) {
			t.Errorf("%s: calibrated coverage %.1f%% is further from 90%% than pinball's %.1f%%", tr.Target, 100*c, 100*p)
		}
	}
}

// Run reads what pickers recorded, publishes, and a picker's predictor can load the result.
func TestRunPublishesFromPostgres(t *testing.T) {
	db := openDB(t)
	ctx := context.Background()
	var samples []store.Sample
	for i, r := range trainertest.Rows(5000, 7) {
		samples = append(samples, trainertest.Sample(i, r))
	}
	// Rows that carry no label, or another schema's features, are not trained on.
	noLabel := samples[0]
	noLabel.RequestID, noLabel.TTFTMs, noLabel.TPOTMs, noLabel.Outcome = "cancelled", nil, nil, "cancelled"
	old := samples[1]
	old.RequestID, old.SchemaVersion = "old", models.SchemaVersion-1
	if err := store.WriteSamples(ctx, db, append(samples, noLabel, old)); err != nil {
		t.Fatal(err)
	}
	rep, err := trainer.Run(ctx, db, trainer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Samples != 5000 || !rep.Published() {
		t.Fatalf("read %d samples, published %v", rep.Samples, rep.Published())
	}
	v, err := store.ChampionVersions(ctx, db)
	if err != nil || len(v) != 4 {
		t.Fatalf("champions %v (%v)", v, err)
	}
	champs, err := store.Champions(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	set, err := predictor.Load(champs)
	if err != nil {
		t.Fatal(err)
	}
	if set.Version() != rep.Run {
		t.Errorf("loaded version %q, run %q", set.Version(), rep.Run)
	}
	var sb strings.Builder
	if err := rep.WriteTable(&sb); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"TTFT", "TPOT", "MAPE", "p90 coverage", "class fast", "published"} {
		if !strings.Contains(sb.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, sb.String())
		}
	}
	// A second run on the same samples is judged against the first's models.
	rep2, err := trainer.Run(ctx, db, trainer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range rep2.Targets {
		if tr.Champion != rep.Run || tr.ChampionMean == nil {
			t.Errorf("%s: second run compared with %q, want %q", tr.Target, tr.Champion, rep.Run)
		}
	}
}

// MinTPOTTokens keeps the TPOT label of short answers out of training; their TTFT stays.
func TestRunMinTPOTTokens(t *testing.T) {
	db := openDB(t)
	ctx := context.Background()
	var samples []store.Sample
	for i, r := range trainertest.Rows(3000, 8) {
		s := trainertest.Sample(i, r)
		if i%3 == 0 {
			s.OutputTokens = 8
		}
		samples = append(samples, s)
	}
	if err := store.WriteSamples(ctx, db, samples); err != nil {
		t.Fatal(err)
	}
	labelled := func(o trainer.Options) map[models.Target]int {
		rep, err := trainer.Run(ctx, db, o)
		if err != nil {
			t.Fatal(err)
		}
		out := map[models.Target]int{}
		for _, tr := range rep.Targets {
			out[tr.Target] = tr.Labelled
		}
		return out
	}
	if got := labelled(trainer.Options{}); got[models.TTFT] != 3000 || got[models.TPOT] != 3000 {
		t.Fatalf("default: labelled %v, want 3000 of each", got)
	}
	if got := labelled(trainer.Options{MinTPOTTokens: 16}); got[models.TTFT] != 3000 || got[models.TPOT] != 2000 {
		t.Fatalf("MinTPOTTokens 16: labelled %v, want 3000 TTFT and 2000 TPOT", got)
	}
}

// The picker's prediction of a trained model, exp(leaves' sum of trees + ln prior) times its
// regime's correction, is XGBoost's own prediction with the prior as base margin, times the
// same correction, on rows the model never saw.
func TestPredictorAgreesWithXGBoost(t *testing.T) {
	arts := trainertest.Artifacts(t)
	set, err := predictor.Load(arts)
	if err != nil {
		t.Fatal(err)
	}
	rows := trainertest.Rows(3000, 99)
	buf := set.NewBuffer()
	for _, a := range arts {
		if a.Manifest.Kind != models.Mean {
			continue
		}
		m := a.Manifest
		layout := models.NewLayout(m.Classes)
		x := make([]float32, len(rows)*layout.Width())
		margin := make([]float32, len(rows))
		for i := range rows {
			layout.Fill32(x[i*layout.Width():(i+1)*layout.Width()], &rows[i].Features, layout.ClassIndex(rows[i].Class))
			margin[i] = float32(math.Log(m.Prior.Estimate(&rows[i].Features, m.Prior.ClassIndex(rows[i].Class))))
		}
		b, err := xgb.LoadJSON(a.XGBoost)
		if err != nil {
			t.Fatal(err)
		}
		d, err := xgb.NewDMatrix(x, len(rows), layout.Width())
		if err != nil {
			t.Fatal(err)
		}
		if err := d.SetBaseMargin(margin); err != nil {
			t.Fatal(err)
		}
		want, err := b.Predict(d, false, false)
		d.Free()
		b.Free()
		if err != nil {
			t.Fatal(err)
		}
		worst := 0.0
		for i := range rows {
			got := set.Predict(m.Target, &rows[i].Features, rows[i].Class, buf).Mean
			w := math.Exp(float64(want[i]))
			if c := m.Calibration; c != nil { // the point correction, per regime
				w *= math.Exp(c.Offset(models.RegimeOf(&rows[i].Features, rows[i].Class)))
			}
			worst = max(worst, math.Abs(got-w)/w)
		}
		// XGBoost adds in float32, the margin included: relative error about 1e-7 of the log.
		if worst > 1e-4 {
			t.Errorf("%s: predictor and XGBoost differ by up to %.2g relative", m.Name(), worst)
		}
		t.Logf("%s: largest relative difference over %d rows: %.2g", m.Name(), len(rows), worst)
	}
}

// A champion this build cannot load (another feature schema, a manifest it cannot read) is
// judged as no champion, and replaced: the trainer does not stall behind it.
func TestRunReplacesChampionsItCannotLoad(t *testing.T) {
	db := openDB(t)
	ctx := context.Background()
	var samples []store.Sample
	for i, r := range trainertest.Rows(3000, 8) {
		samples = append(samples, trainertest.Sample(i, r))
	}
	if err := store.WriteSamples(ctx, db, samples); err != nil {
		t.Fatal(err)
	}
	for _, damage := range []string{
		// an older build's champions
		`UPDATE model_versions SET manifest = jsonb_set(manifest, '{schema_version}', to_jsonb(schema_version - 1)) WHERE published`,
		// a newer build's manifests, with a field this build does not know
		`UPDATE model_versions SET manifest = manifest || '{"from_the_future": true}' WHERE published`,
	} {
		first, err := trainer.Run(ctx, db, trainer.Options{})
		if err != nil || !first.Published() {
			t.Fatalf("a run on a fresh table: %v, published %v", err, first.Published())
		}
		if _, err := db.Exec(ctx, damage); err != nil {
			t.Fatal(err)
		}
		rep, err := trainer.Run(ctx, db, trainer.Options{})
		if err != nil {
			t.Fatalf("after %q: %v", damage, err)
		}
		for _, tr := range rep.Targets {
			if !tr.Published() || tr.ChampionMean != nil || tr.Artifacts[0].Manifest.Parent != first.Run+"-"+string(tr.Target)+"-mean" {
				t.Errorf("after %q: %s %s (%s), parent %q", damage, tr.Target, tr.Decision, tr.Why, tr.Artifacts[0].Manifest.Parent)
			}
		}
		v, err := store.ChampionVersions(ctx, db)
		if err != nil || v["ttft-mean"] != rep.Run+"-ttft-mean" {
			t.Fatalf("champions %v (%v) after replacing", v, err)
		}
	}
}

// Predictions never fall with the load a target cannot fall with (the queue ahead for TTFT,
// the batch for TPOT), inside the data and far past it: noise makes unconstrained trees
// split the wrong way somewhere, and past the data they keep whatever their last split
// learned, so a packing policy that trusts them would find a deeper queue faster. Requests
// waiting are swept from 1: the first one moves the replica into another load regime, whose
// calibration is its own.
func TestPredictionsRiseWithTheQueue(t *testing.T) {
	// Production's noise, not the law's 3%: 30% more, as where runs interleave at random.
	rows := trainertest.Rows(6000, 1)
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range rows {
		rows[i].TTFT *= math.Exp(0.3 * rng.NormFloat64())
		rows[i].TPOT *= math.Exp(0.3 * rng.NormFloat64())
	}
	set, err := predictor.Load(trainertest.Train(t, rows))
	if err != nil {
		t.Fatal(err)
	}
	buf := set.NewBuffer()
	sweeps := []struct {
		target  models.Target
		feature string
		from    float64
		step    float64 // the training rows reach 20,000 queued tokens, 15 waiting and 60 decoding
	}{{models.TTFT, "prefill_uncached_tokens_in_flight", 0, 500}, {models.TTFT, "num_requests_waiting", 1, 1},
		{models.TPOT, "decode_requests_in_flight", 0, 2}, {models.TPOT, "prefill_uncached_tokens_in_flight", 0, 500}}
	for _, sw := range sweeps {
		falls := 0
		for _, r := range trainertest.Rows(200, 7) {
			v := r.Features
			prevMean, prevUpper := 0.0, 0.0
			for k := range 120 { // past the data's range: 3x the queue, 4x the batch, 8x the waiting
				v.Set(models.Index(sw.feature), sw.from+float64(k)*sw.step)
				e := set.Predict(sw.target, &v, r.Class, buf)
				if e.Mean < prevMean*(1-1e-6) || e.Upper < prevUpper*(1-1e-6) {
					falls++
				}
				prevMean, prevUpper = e.Mean, e.Upper
			}
		}
		if falls > 0 {
			t.Errorf("%s falls %d times as %s rises (200 rows, 120 steps each)", sw.target, falls, sw.feature)
		}
	}
}

// Every feature a target's trees are held monotone in is one of the schema's: a misspelt name
// would otherwise fail only when training starts.
func TestMonotoneFeaturesExist(t *testing.T) {
	for _, tg := range models.Targets() {
		for _, name := range trainer.MonotoneIn(tg) {
			if models.Index(name) < 0 {
				t.Errorf("%s: %q is no feature", tg, name)
			}
		}
	}
	if !strings.Contains(trainer.Form(), "prefill_uncached_tokens_in_flight") {
		t.Errorf("Form() %q names no monotone feature", trainer.Form())
	}
}
