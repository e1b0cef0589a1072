package main

import (
	"context"
	"fmt"
	"os"
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
		return &sink{where: o.recordFile, observer: picker.SampleFunc(func(s store.Sample) {
			if werr == nil {
				if werr = w.Write(s); werr == nil {
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
	db, where, stop, err := openDB(ctx, url, "")
	if err != nil {
		return nil, fmt.Errorf("--record-db: %w", err)
	}
	// Virtual time starts at a fixed date in the past: retention would delete the run's own
	// samples, so they are kept.
	rec, drain := startRecorder(db, 0)
	return &sink{where: where, observer: picker.Recording(rec), finish: func(ctx context.Context) (int64, error) {
		defer stop()
		n, err := drain(ctx)
		if err != nil {
			return n, fmt.Errorf("--record-db: %w", err)
		}
		return n, nil
	}}, nil
}

// localDir is where --record-db local keeps its Postgres.
const localDir = ".cache/bench-postgres"

// openDB opens url and brings its schema up to date. With "local" it starts a Postgres under
// .cache/bench-postgres, in its default database, or, when empty names one, in that database
// emptied first (a run that must start from nothing). stop closes everything.
func openDB(ctx context.Context, url, empty string) (db *pgxpool.Pool, where string, stop func(), err error) {
	var pg *pgserver.Server
	where = url
	if url == "local" {
		if pg, err = pgserver.Start(ctx, pgserver.Options{Dir: localDir}); err != nil {
			return nil, "", nil, fmt.Errorf("local Postgres: %w", err)
		}
		url, where = pg.URL(), "a local Postgres under "+localDir
		if empty != "" {
			if url, err = pg.EmptyDatabase(ctx, empty); err != nil {
				_ = pg.Stop()
				return nil, "", nil, err
			}
			where += ", database " + empty + " (emptied first)"
		}
	}
	stopServer := func() {
		if pg != nil {
			_ = pg.Stop()
		}
	}
	if db, err = pgxpool.New(ctx, url); err != nil {
		stopServer()
		return nil, "", nil, err
	}
	stop = func() { db.Close(); stopServer() }
	if err := store.Migrate(ctx, db); err != nil {
		stop()
		return nil, "", nil, err
	}
	return db, where, stop, nil
}

// startRecorder runs the picker's recorder on db, keeping samples forever (virtual time is in
// the past); buffer 0 is its default. drain stops it once everything added is written, and
// fails unless every sample was recorded.
func startRecorder(db *pgxpool.Pool, buffer int) (rec *store.Recorder, drain func(context.Context) (int64, error)) {
	rec = store.NewRecorder(db, store.RecorderOptions{Retention: -1, BufferSize: buffer})
	done := make(chan struct{})
	go func() { defer close(done); rec.Run() }()
	return rec, func(ctx context.Context) (int64, error) {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		err := rec.Close(cctx)
		<-done
		st := rec.Stats()
		if err == nil && st.Recorded != st.Added {
			err = fmt.Errorf("%d of %d samples not recorded (%d invalid, %d dropped)", st.Added-st.Recorded, st.Added,
				st.Invalid, st.DroppedFull+st.DroppedShutdown)
		}
		return st.Recorded, err
	}
}
