package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/augur-llm/augur/local/pgserver"
	"github.com/augur-llm/augur/picker"
	"github.com/augur-llm/augur/requestcontrol"
	"github.com/augur-llm/augur/store"
)

// sink is where a virtual run's samples go: the same recorder production uses, or a CSV file
// in the table's schema.
type sink struct {
	observer requestcontrol.Observer
	where    string
	// finish writes what is pending and returns how many samples were written.
	finish func(ctx context.Context) (int64, error)
}

// openSink starts recording per the --record-db / --record-file flags; nil when neither is set.
func openSink(ctx context.Context, o options) (*sink, error) {
	switch {
	case o.recordDB != "":
		return openDBSink(ctx, o.recordDB)
	case o.recordFile != "":
		f, err := os.Create(o.recordFile)
		if err != nil {
			return nil, fmt.Errorf("--record-file: %w", err)
		}
		w := store.NewCSVWriter(f)
		var n int64
		var werr error
		return &sink{where: o.recordFile, observer: requestcontrol.ObserverFunc(func(c requestcontrol.Completion) {
			if werr == nil {
				if werr = w.Write(picker.SampleOf(c)); werr == nil {
					n++
				}
			}
		}), finish: func(context.Context) (int64, error) {
			if err := w.Flush(); err != nil && werr == nil {
				werr = err
			}
			if err := f.Close(); err != nil && werr == nil {
				werr = err
			}
			if werr != nil {
				return n, fmt.Errorf("--record-file: %w", werr)
			}
			return n, nil
		}}, nil
	}
	return nil, nil
}

func openDBSink(ctx context.Context, url string) (*sink, error) {
	var pg *pgserver.Server
	where := url
	if url == "local" {
		var err error
		if pg, err = pgserver.Start(ctx, pgserver.Options{Dir: filepath.Join(".cache", "bench-postgres")}); err != nil {
			return nil, fmt.Errorf("--record-db local: %w", err)
		}
		url, where = pg.URL(), "a local Postgres under .cache/bench-postgres"
	}
	stop := func() {
		if pg != nil {
			_ = pg.Stop()
		}
	}
	db, err := pgxpool.New(ctx, url)
	if err != nil {
		stop()
		return nil, fmt.Errorf("--record-db: %w", err)
	}
	if err := store.Migrate(ctx, db); err != nil {
		db.Close()
		stop()
		return nil, fmt.Errorf("--record-db: %w", err)
	}
	// Virtual time starts at a fixed date in the past: retention would delete the run's own
	// samples, so they are kept.
	rec := store.NewRecorder(db, store.RecorderOptions{Retention: -1})
	done := make(chan struct{})
	go func() { defer close(done); rec.Run() }()
	return &sink{where: where, observer: picker.Recording(rec), finish: func(ctx context.Context) (int64, error) {
		defer stop()
		defer db.Close()
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		err := rec.Close(cctx)
		<-done
		st := rec.Stats()
		if err == nil && st.Recorded != st.Added {
			err = fmt.Errorf("%d of %d samples not recorded (%d invalid, %d dropped)", st.Added-st.Recorded, st.Added,
				st.Invalid, st.DroppedFull+st.DroppedShutdown)
		}
		if err != nil {
			return st.Recorded, fmt.Errorf("--record-db: %w", err)
		}
		return st.Recorded, nil
	}}, nil
}
