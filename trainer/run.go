package trainer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/augur-llm/augur/models"
	"github.com/augur-llm/augur/predictor"
	"github.com/augur-llm/augur/store"
)

// Options configure a training run. Zero values take the defaults noted.
type Options struct {
	// Window: the samples recorded in [From, To). Zero From reads from the oldest; zero To up
	// to now.
	From, To time.Time
	// Holdout is the newest share of each target's samples, kept out of training to evaluate
	// and compare on (default 0.15); Calibration the share before it, kept out of training to
	// calibrate quantiles on (default 0.15).
	Holdout, Calibration float64
	// Quantile is the upper quantile modelled (default 0.9); QuantileMethod how
	// (models.MethodCalibrated, the default, or models.MethodPinball).
	Quantile       float64
	QuantileMethod string
	Params         Params // zero: DefaultParams
	// BucketCap is the most training samples kept per balancing bucket (default 10,000;
	// negative: no balancing).
	BucketCap int
	// MinSamples is the fewest labelled samples a target needs to be trained (default 1,000).
	MinSamples int
	// MinTPOTTokens is the fewest output tokens a sample needs for a TPOT label (default 0:
	// any streamed response with a TPOT). The pace of a handful of tokens is mostly the
	// jitter of where they fell in the replica's steps: traffic of short answers (a code
	// completion trace, half of whose answers are 13 tokens or fewer) made the TPOT models'
	// holdout error noise rather than signal. Run applies it as it reads samples; Train's
	// rows carry no output count and are taken as given.
	MinTPOTTokens int
	// Tolerance: a challenger is "not worse" than the champion when its holdout MAPE (mean
	// models) and pinball loss (quantile models) are at most (1 + Tolerance) times the
	// champion's on the same samples (default 0.01).
	Tolerance float64
	// Seed drives sampling; Now stamps the run (default time.Now).
	Seed     uint64
	Now      func() time.Time
	Progress func(Progress)
	Log      *slog.Logger
}

// Validate reports what a run with o would refuse, before it reads anything.
func (o Options) Validate() error { return o.defaults() }

func (o *Options) defaults() error {
	if o.Holdout == 0 {
		o.Holdout = 0.15
	}
	if o.Calibration == 0 {
		o.Calibration = 0.15
	}
	if o.Quantile == 0 {
		o.Quantile = 0.9
	}
	if o.QuantileMethod == "" {
		o.QuantileMethod = models.MethodCalibrated
	}
	if o.Params == (Params{}) {
		o.Params = DefaultParams()
	}
	if o.BucketCap == 0 {
		o.BucketCap = 10_000
	}
	if o.MinSamples == 0 {
		o.MinSamples = 1000
	}
	if o.Tolerance == 0 {
		o.Tolerance = 0.01
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	switch {
	case !(o.Holdout > 0 && o.Calibration > 0 && o.Holdout+o.Calibration < 0.9):
		return fmt.Errorf("trainer: holdout %v and calibration %v must be positive and leave at least 10%% to train on", o.Holdout, o.Calibration)
	case !(o.Quantile > 0.5 && o.Quantile < 1):
		return fmt.Errorf("trainer: quantile %v must be in (0.5, 1)", o.Quantile)
	case o.QuantileMethod != models.MethodCalibrated && o.QuantileMethod != models.MethodPinball:
		return fmt.Errorf("trainer: quantile method %q: want %s or %s", o.QuantileMethod, models.MethodCalibrated, models.MethodPinball)
	case o.MinTPOTTokens < 0:
		return fmt.Errorf("trainer: MinTPOTTokens %d must not be negative", o.MinTPOTTokens)
	case o.Tolerance < 0:
		return fmt.Errorf("trainer: tolerance %v must not be negative", o.Tolerance)
	}
	if err := o.Params.check(); err != nil {
		return fmt.Errorf("trainer: %w", err)
	}
	return nil
}

func (o *Options) now() time.Time {
	if o.Now != nil {
		return o.Now().UTC()
	}
	return time.Now().UTC()
}

// Decisions, as TargetReport.Decision states them.
const (
	DecisionPublished = "published"
	DecisionKept      = "kept champion"
	DecisionSkipped   = "skipped"
)

// TargetReport is what a run did for one target.
type TargetReport struct {
	Target models.Target
	// Labelled samples, and how they were used.
	Labelled, Train, Balanced, Calibration, Holdout int
	// Mean and Upper are the challenger's accuracy on the holdout; ChampionMean and
	// ChampionUpper the serving models' on the same samples (nil: none served, or they
	// could not be loaded).
	Mean, Upper                 models.Evaluation
	ChampionMean, ChampionUpper *models.Evaluation
	Champion                    string // the champion's run
	Decision                    string
	Why                         string
	Artifacts                   []models.Artifact
	TrainTime                   time.Duration
}

// Published reports whether the run published the target's models.
func (t *TargetReport) Published() bool { return t.Decision == DecisionPublished }

// Report is what a run did.
type Report struct {
	Run      string
	From, To time.Time
	Samples  int // samples read (with a label for some target)
	Targets  []TargetReport
	Duration time.Duration
}

// Published reports whether any target's models were published.
func (r *Report) Published() bool {
	for i := range r.Targets {
		if r.Targets[i].Published() {
			return true
		}
	}
	return false
}

// NewRun names a run: its UTC start and 4 random bytes.
func NewRun(now time.Time) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return now.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}

// Train fits, evaluates and judges models for both targets from rows (any order), against
// champions (the serving artifacts; none, or ones this build cannot load, count as no
// champion). It decides what to publish and returns every artifact it made; it writes
// nothing.
func Train(ctx context.Context, rows []Row, champions []models.Artifact, o Options) (Report, error) {
	if err := o.defaults(); err != nil {
		return Report{}, err
	}
	start := time.Now()
	rep := Report{Run: NewRun(o.now()), From: o.From, To: o.To, Samples: len(rows)}
	sortRows(rows)
	for _, t := range models.Targets() {
		tr, err := trainTarget(ctx, t, labelled(rows, t), champions, &o, rep.Run)
		if err != nil {
			return rep, err
		}
		rep.Targets = append(rep.Targets, tr)
	}
	rep.Duration = time.Since(start)
	return rep, nil
}

func trainTarget(ctx context.Context, t models.Target, rows []Row, champions []models.Artifact, o *Options, run string) (TargetReport, error) {
	tr := TargetReport{Target: t, Labelled: len(rows)}
	if len(rows) < o.MinSamples {
		tr.Decision, tr.Why = DecisionSkipped, fmt.Sprintf("%d labelled samples, fewer than %d", len(rows), o.MinSamples)
		return tr, nil
	}
	train, cal, hold := split(rows, o.Calibration, o.Holdout)
	balanced := balance(train, o.BucketCap, o.Seed)
	tr.Train, tr.Balanced, tr.Calibration, tr.Holdout = len(train), len(balanced), len(cal), len(hold)
	if len(balanced) < models.MinPriorSamples || len(hold) == 0 || len(cal) == 0 {
		tr.Decision, tr.Why = DecisionSkipped, fmt.Sprintf("%d training, %d calibration and %d holdout samples: too few to fit and judge", len(balanced), len(cal), len(hold))
		return tr, nil
	}
	start := time.Now()
	mean, upper, err := fitTarget(ctx, t, balanced, cal, o, run)
	if err != nil {
		return tr, err
	}
	tr.TrainTime = time.Since(start)
	if len(balanced) > 0 {
		mean.Manifest.TrainedFrom, mean.Manifest.TrainedTo = balanced[0].At, balanced[len(balanced)-1].At
		upper.Manifest.TrainedFrom, upper.Manifest.TrainedTo = mean.Manifest.TrainedFrom, mean.Manifest.TrainedTo
	}
	set, err := predictor.Load([]models.Artifact{mean, upper})
	if err != nil {
		return tr, fmt.Errorf("%s: the trained models do not load: %w", t, err)
	}
	tr.Mean, tr.Upper = Evaluate(set, t, hold, o.Quantile)
	mean.Manifest.Holdout, upper.Manifest.Holdout = tr.Mean, tr.Upper

	// The champion, judged on the same samples.
	var champ []models.Artifact
	for _, a := range champions {
		if a.Manifest.Target == t {
			champ = append(champ, a)
		}
	}
	// The parents are the champions being replaced, whether or not this build can load them
	// (another feature schema, a damaged row): publishing swaps exactly those.
	for _, a := range champ {
		if a.Manifest.Kind == models.Mean {
			mean.Manifest.Parent = a.Manifest.Version
		} else {
			upper.Manifest.Parent = a.Manifest.Version
		}
	}
	var champSet *predictor.Set
	if len(champ) > 0 {
		if s, err := predictor.Load(champ); err != nil {
			o.Log.Warn("the serving models cannot be evaluated; judging as if none served", "target", t, "err", err)
		} else if s.Has(t) {
			champSet = s
			for _, a := range champ {
				if a.Manifest.Kind == models.Mean {
					tr.Champion = a.Manifest.Run
				}
			}
		}
	}
	tr.Decision, tr.Why = DecisionPublished, "no champion served"
	if champSet != nil {
		cm, cu := Evaluate(champSet, t, hold, o.Quantile)
		tr.ChampionMean = &cm
		if cu.Overall.Count > 0 {
			tr.ChampionUpper = &cu
		}
		tr.Decision, tr.Why = judge(compare(set, champSet, t, hold, o.Quantile), o.Tolerance)
	}
	mean.Seal()
	upper.Seal()
	tr.Artifacts = []models.Artifact{mean, upper}
	return tr, nil
}

// judge decides from a paired comparison on the same holdout. A challenger is worse when
// its mean error exceeds the champion's both by more than the tolerance (relative) and by
// more than two standard errors of the paired differences: a difference the holdout cannot
// tell from noise does not keep a fresher model out. Mean models are compared on absolute
// percentage error, quantile models on pinball loss.
func judge(c comparison, tol float64) (string, string) {
	if c.mean.worse(tol) {
		return DecisionKept, fmt.Sprintf("mean model MAPE %.2f%% against the champion's %.2f%% (paired difference %.2f +- %.2f points)",
			100*c.mean.challenger, 100*c.mean.champion, 100*c.mean.diff, 100*c.mean.se)
	}
	if c.upper.n > 0 && c.upper.worse(tol) {
		return DecisionKept, fmt.Sprintf("quantile model pinball loss %.3g ms against the champion's %.3g ms (paired difference %.3g +- %.3g)",
			c.upper.challenger, c.upper.champion, c.upper.diff, c.upper.se)
	}
	return DecisionPublished, fmt.Sprintf("not worse than the champion: MAPE %.2f%% against %.2f%%", 100*c.mean.challenger, 100*c.mean.champion)
}

// paired is a comparison of one error measure over the same samples.
type paired struct {
	n                          int
	challenger, champion       float64 // mean errors
	diff, se                   float64 // mean of challenger - champion, and its standard error
	sum, sumChamp, sumD, sumDD float64
}

func (p *paired) add(challenger, champion float64) {
	d := challenger - champion
	p.n++
	p.sum += challenger
	p.sumChamp += champion
	p.sumD += d
	p.sumDD += d * d
}

func (p *paired) finish() {
	if p.n == 0 {
		return
	}
	n := float64(p.n)
	p.challenger, p.champion, p.diff = p.sum/n, p.sumChamp/n, p.sumD/n
	if p.n > 1 {
		p.se = math.Sqrt(max(0, (p.sumDD-n*p.diff*p.diff)/(n-1)) / n)
	}
}

func (p *paired) worse(tol float64) bool {
	return p.diff > tol*p.champion && p.diff > 2*p.se
}

type comparison struct{ mean, upper paired }

// compare scores challenger and champion sample by sample on rows.
func compare(challenger, champion *predictor.Set, t models.Target, rows []Row, q float64) comparison {
	var c comparison
	b1, b2 := challenger.NewBuffer(), champion.NewBuffer()
	pin := func(pred, y float64) float64 {
		if y <= pred {
			return (1 - q) * (pred - y)
		}
		return q * (y - pred)
	}
	for i := range rows {
		r := &rows[i]
		y := r.Label(t)
		if y <= 0 {
			continue
		}
		e1 := challenger.Predict(t, &r.Features, r.Class, b1)
		e2 := champion.Predict(t, &r.Features, r.Class, b2)
		c.mean.add(math.Abs(e1.Mean-y)/y, math.Abs(e2.Mean-y)/y)
		if !math.IsNaN(e1.Upper) && !math.IsNaN(e2.Upper) {
			c.upper.add(pin(e1.Upper, y), pin(e2.Upper, y))
		}
	}
	c.mean.finish()
	c.upper.finish()
	return c
}

// Run reads the window's samples from db, trains, and saves every model it made, publishing
// the winners. A run whose comparison went stale (another trainer published meanwhile)
// publishes nothing and returns an error wrapping store.ErrChampionChanged.
func Run(ctx context.Context, db *pgxpool.Pool, o Options) (Report, error) {
	if o.To.IsZero() {
		o.To = o.now()
	}
	var rows []Row
	err := store.ScanSamples(ctx, db, o.From, o.To, models.SchemaVersion, func(s *store.Sample) error {
		if r, ok := RowOf(s); ok {
			if s.OutputTokens < o.MinTPOTTokens {
				r.TPOT = 0
			}
			if r.TTFT > 0 || r.TPOT > 0 {
				rows = append(rows, r)
			}
		}
		return nil
	})
	if err != nil {
		return Report{}, fmt.Errorf("trainer: %w", err)
	}
	champions, err := store.Champions(ctx, db)
	if err != nil {
		return Report{}, fmt.Errorf("trainer: %w", err)
	}
	rep, err := Train(ctx, rows, champions, o)
	if err != nil {
		return rep, fmt.Errorf("trainer: %w", err)
	}
	var arts []models.Artifact
	var publish []bool
	for _, tr := range rep.Targets {
		for _, a := range tr.Artifacts {
			arts, publish = append(arts, a), append(publish, tr.Published())
		}
	}
	if len(arts) == 0 {
		return rep, nil
	}
	if err := store.SaveModels(ctx, db, arts, publish); err != nil {
		if errors.Is(err, store.ErrChampionChanged) {
			for i := range rep.Targets {
				if rep.Targets[i].Published() {
					rep.Targets[i].Decision, rep.Targets[i].Why = DecisionKept, "another trainer published first"
				}
			}
		}
		return rep, fmt.Errorf("trainer: %w", err)
	}
	return rep, nil
}

func pct(x float64) string {
	if math.IsNaN(x) {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*x)
}
