// Command trainer fits Augur's latency models from the samples the pickers recorded and
// publishes them when they are not worse than the models serving. In production it runs as
// a Kubernetes CronJob (--once); it can also stay up and train every interval (--every).
//
// Staying up, it also trains early when a picker asks: a picker whose predictions for a
// replica stay off (the replica drifts, see package predictor) sends NOTIFY augur_train
// through the database, and the trainer runs --early-min-interval after its previous run
// (at once if that is past) instead of waiting for the next interval.
//
// Usage:
//
//	trainer --database-url postgres://... --once
//	trainer --database-url postgres://... --every 1h --window 24h --early-min-interval 10m
//
// Exit status: 0 when models were published, 3 when nothing was (the champions are no
// worse, or too few samples; --unpublished-status changes it, e.g. to 0 for a CronJob, where
// any other status is a failure to retry), 1 on an error, 2 on bad flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/augur-llm/augur/models"
	"github.com/augur-llm/augur/store"
	"github.com/augur-llm/augur/trainer"
)

// Exit statuses.
const (
	exitPublished    = 0
	exitError        = 1
	exitUsage        = 2
	exitNotPublished = 3
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

type options struct {
	dbURL     string
	once      bool
	every     time.Duration
	window    time.Duration
	modelsOut string
	quiet     bool
	// earlyGap is the least time between runs when a picker asks for an early one; 0
	// ignores such requests.
	earlyGap time.Duration
	// unpublished is the exit status when nothing was published.
	unpublished int
	train       trainer.Options
}

func parse(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("trainer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.dbURL, "database-url", os.Getenv("AUGUR_DATABASE_URL"), "Postgres the pickers record to (default $AUGUR_DATABASE_URL)")
	fs.BoolVar(&o.once, "once", false, "train once and exit (the CronJob)")
	fs.DurationVar(&o.every, "every", 0, "train every interval until stopped")
	fs.DurationVar(&o.window, "window", 0, "train on the samples of this long before now (0: all)")
	fs.DurationVar(&o.earlyGap, "early-min-interval", 5*time.Minute, "with --every, train early when a picker asks (NOTIFY "+store.TrainChannel+", sent when a replica drifts from the models), but no sooner than this after the previous run (0: ignore such requests)")
	fs.StringVar(&o.modelsOut, "models-out", "", "also write the serving models to this directory after each run (for ConfigMap or volume installs)")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress on stderr")
	fs.IntVar(&o.unpublished, "unpublished-status", exitNotPublished, "exit status when nothing was published (0 for a CronJob: not publishing is a normal outcome)")
	p := trainer.DefaultParams()
	fs.IntVar(&p.Trees, "trees", p.Trees, "boosting rounds per model")
	fs.IntVar(&p.Depth, "depth", p.Depth, "tree depth")
	fs.Float64Var(&p.Eta, "eta", p.Eta, "learning rate")
	fs.IntVar(&p.Threads, "threads", 0, "XGBoost threads (0: all cores)")
	fs.Float64Var(&o.train.Quantile, "quantile", 0.9, "the upper quantile modelled")
	fs.StringVar(&o.train.QuantileMethod, "quantile-method", models.MethodCalibrated, "calibrated or pinball")
	fs.Float64Var(&o.train.Holdout, "holdout", 0.15, "newest share of samples held out to evaluate")
	fs.IntVar(&o.train.BucketCap, "bucket-cap", 10_000, "training samples kept per load bucket (-1: all)")
	fs.IntVar(&o.train.MinSamples, "min-samples", 1000, "fewest labelled samples a target needs")
	fs.IntVar(&o.train.MinTPOTTokens, "min-tpot-tokens", 0, "fewest output tokens a sample needs for a TPOT label (0: any streamed answer)")
	fs.Float64Var(&o.train.Tolerance, "tolerance", 0.01, "a challenger is not worse when its error is at most (1+tolerance) times the champion's")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	o.train.Params = p
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected arguments %v", fs.Args())
	case o.dbURL == "":
		return o, errors.New("--database-url (or AUGUR_DATABASE_URL) is required")
	case o.once == (o.every > 0):
		return o, errors.New("set --once or --every, one of them")
	case o.every < 0 || o.window < 0 || o.earlyGap < 0:
		return o, errors.New("--every, --window and --early-min-interval must not be negative")
	case o.unpublished < 0 || o.unpublished > 125 || o.unpublished == exitError || o.unpublished == exitUsage:
		return o, fmt.Errorf("--unpublished-status %d: want 0 or 3..125 (1 and 2 mean errors)", o.unpublished)
	}
	// The training options are refused here, before the database is opened, not after a
	// window of samples was read.
	if err := o.train.Validate(); err != nil {
		return o, err
	}
	return o, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parse(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitPublished
		}
		fmt.Fprintln(stderr, "trainer:", err)
		return exitUsage
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	o.train.Log = log
	if !o.quiet {
		o.train.Progress = func(p trainer.Progress) {
			fmt.Fprintf(stderr, "\rtraining %s %s model: round %d/%d ", p.Target, p.Model, p.Round, p.Rounds)
			if p.Round == p.Rounds {
				fmt.Fprintln(stderr)
			}
		}
	}
	db, err := pgxpool.New(ctx, o.dbURL)
	if err != nil {
		fmt.Fprintln(stderr, "trainer: --database-url:", err)
		return exitUsage
	}
	defer db.Close()
	if err := store.Migrate(ctx, db); err != nil {
		fmt.Fprintln(stderr, "trainer:", err)
		return exitError
	}
	if o.once {
		return once(ctx, db, o, stdout, stderr)
	}
	early := make(chan string, 1)
	if o.earlyGap > 0 {
		go listen(ctx, db, log, early)
	}
	for {
		once(ctx, db, o, stdout, stderr)
		done := time.Now()
		next := time.NewTimer(o.every)
	wait:
		for {
			select {
			case <-ctx.Done():
				next.Stop()
				return exitPublished
			case <-next.C:
				break wait
			case reason := <-early:
				// A request that arrived during the run counts too: the run may have read
				// the samples before the change reached them.
				if o.earlyGap < o.every {
					at := max(time.Until(done.Add(o.earlyGap)), 0)
					log.Info("early training requested", "reason", reason, "in", at.Round(time.Second))
					next.Reset(at)
				}
			}
		}
	}
}

// listen passes the pickers' training requests to early until ctx ends, listening again
// when the connection fails. A request that finds early full is one already pending.
func listen(ctx context.Context, db *pgxpool.Pool, log *slog.Logger, early chan<- string) {
	for ctx.Err() == nil {
		err := store.ListenTraining(ctx, db, nil, func(reason string) {
			select {
			case early <- reason:
			default:
			}
		})
		if ctx.Err() != nil {
			return
		}
		log.Warn("not listening for early training requests; retrying", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
		}
	}
}

// once runs one training and returns its exit status.
func once(ctx context.Context, db *pgxpool.Pool, o options, stdout, stderr io.Writer) int {
	topts := o.train
	if o.window > 0 {
		topts.From = time.Now().Add(-o.window)
	}
	rep, err := trainer.Run(ctx, db, topts)
	if len(rep.Targets) > 0 {
		if werr := rep.WriteTable(stdout); werr != nil && err == nil {
			err = werr
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "trainer:", err)
		return exitError
	}
	if o.modelsOut != "" {
		champs, err := store.Champions(ctx, db)
		if err == nil {
			for _, a := range champs {
				if err = models.WriteDir(o.modelsOut, a); err != nil {
					break
				}
			}
		}
		if err != nil {
			fmt.Fprintln(stderr, "trainer: --models-out:", err)
			return exitError
		}
	}
	if !rep.Published() {
		fmt.Fprintln(stdout, "\nnothing published: the serving models stay")
		return o.unpublished
	}
	fmt.Fprintf(stdout, "\npublished run %s\n", rep.Run)
	return exitPublished
}
