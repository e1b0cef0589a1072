package store_test

import (
	"context"
	"errors"
	"math"
	"os"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/augur-llm/augur/local/pgserver"
	"github.com/augur-llm/augur/models"
	"github.com/augur-llm/augur/store"
)

// shared is this package's Postgres; tests that stop it start their own.
var shared *pgserver.Server

func TestMain(m *testing.M) { os.Exit(pgserver.RunShared(m, &shared)) }

func open(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	db, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return db
}

func ptr[T any](v T) *T { return &v }

// distinctFeatures gives every feature a different valid value, so a column written to or
// read from the wrong place shows.
func distinctFeatures() models.Vector {
	var v models.Vector
	for i, f := range models.Schema() {
		x := float64(i + 2)
		if f.Max <= 1 {
			x = 1 / x
		}
		v.Set(i, x)
	}
	return v
}

func fullSample(i int, at time.Time) store.Sample {
	return store.Sample{
		Time: at, RequestID: "req-" + string(rune('a'+i%26)) + time.Duration(i).String(), Model: "m", Objective: "chat",
		FairnessID: "tenant-1", Stream: i%2 == 0, ServedByFallback: i%3 == 0, Replica: "sim-1", ReplicaAddress: "10.0.0.1:8000", ReplicaClass: "8b-h100",
		SchemaVersion: models.SchemaVersion, Features: distinctFeatures(),
		SLOTTFTMs: ptr(500.0), SLOTPOTMs: ptr(50.0), PredictedTTFTMs: ptr(212.5), PredictedTPOTMs: ptr(31.25),
		PredictedTTFTUpperMs: ptr(290.5), PredictedTPOTUpperMs: ptr(40.75),
		ModelVersion: ptr("ttft-2026-11-25T00:00:00Z"), DecisionUs: 18.75, TTFTMs: ptr(230.125), TPOTMs: ptr(29.5),
		E2EMs: 29700.5, PromptTokensReported: ptr(7200), CachedTokensReported: ptr(6000), OutputTokens: 1000,
		Outcome: "ok", Status: 200, QueuedMs: ptr(12.5),
	}
}

func TestMigrationsAndRoundTrip(t *testing.T) {
	db := open(t, shared.NewDatabase(t))
	ctx := context.Background()
	if err := store.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	if err := store.Migrate(ctx, db); err != nil { // re-applying is a no-op
		t.Fatalf("second migration: %v", err)
	}
	var applied int
	if err := db.QueryRow(ctx, "SELECT count(*) FROM augur_schema_migrations").Scan(&applied); err != nil || applied != 5 {
		t.Fatalf("schema_migrations rows %d (%v)", applied, err)
	}
	at := time.Date(2026, 11, 25, 10, 0, 0, 123456000, time.UTC)
	in := []store.Sample{fullSample(1, at), fullSample(2, at.Add(time.Second))}
	// A sample with every optional value absent round-trips as NULLs.
	sparse := fullSample(3, at.Add(2*time.Second))
	sparse.SLOTTFTMs, sparse.SLOTPOTMs, sparse.PredictedTTFTMs, sparse.PredictedTPOTMs = nil, nil, nil, nil
	sparse.PredictedTTFTUpperMs, sparse.PredictedTPOTUpperMs = nil, nil
	sparse.ModelVersion, sparse.TTFTMs, sparse.TPOTMs, sparse.PromptTokensReported, sparse.CachedTokensReported = nil, nil, nil, nil, nil
	for _, name := range []string{"prefix_match", "num_gpu_blocks", "block_size", "max_tokens", "last_token_age_ms"} { // NULL by the schema's rule
		sparse.Features.Clear(models.Index(name))
	}
	// A request refused before dispatch: no replica, only its own features, its reason.
	refused := store.Sample{Time: at.Add(3 * time.Second), RequestID: "refused-1", Model: "m", Objective: "batch", Stream: true,
		Refused: true, Reason: "rejected-saturated", QueuedMs: ptr(0.0), SchemaVersion: models.SchemaVersion,
		SLOTTFTMs: ptr(500.0), Outcome: "rejected", Status: 429}
	refused.Features.Set(models.Index("input_tokens"), 900)
	in = append(in, sparse, refused)
	if err := store.WriteSamples(ctx, db, in); err != nil {
		t.Fatal(err)
	}
	// The table itself refuses a dispatched request's row without its replica's features.
	bad := fullSample(4, at)
	bad.Features.Clear(models.Index("kv_cache_usage"))
	if err := store.WriteSamples(ctx, db, []store.Sample{bad}); err == nil {
		t.Error("a dispatched sample without kv_cache_usage was written")
	}
	out, err := store.ReadSamples(ctx, db, at, at.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != len(in) {
		t.Fatalf("read %d samples, wrote %d", len(out), len(in))
	}
	for i := range in {
		out[i].Time = out[i].Time.UTC()
		if !reflect.DeepEqual(in[i], out[i]) {
			t.Errorf("sample %d:\nwrote %+v\nread  %+v", i, in[i], out[i])
		}
	}
	if n, err := store.DeleteOlderThan(ctx, db, at.Add(1500*time.Millisecond)); err != nil || n != 2 {
		t.Errorf("retention deleted %d (%v), want 2", n, err)
	}
}

// The table has a column for every feature of the schema, of the schema's kind; the features
// models computes NULL are nullable.
func TestTableFollowsFeatureSchema(t *testing.T) {
	db := open(t, shared.NewDatabase(t))
	ctx := context.Background()
	if err := store.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	rows, err := db.Query(ctx, `SELECT column_name, data_type, is_nullable FROM information_schema.columns WHERE table_name = 'request_samples'`)
	if err != nil {
		t.Fatal(err)
	}
	type col struct{ typ, nullable string }
	cols := map[string]col{}
	for rows.Next() {
		var name string
		var c col
		if err := rows.Scan(&name, &c.typ, &c.nullable); err != nil {
			t.Fatal(err)
		}
		cols[name] = c
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for _, f := range models.Schema() {
		c, ok := cols[f.Name]
		want := "double precision"
		if f.Kind == models.Int {
			want = "integer"
			if f.Wide {
				want = "bigint"
			}
		}
		if !ok || c.typ != want {
			t.Errorf("feature %s: column %+v (present %v), want %s", f.Name, c, ok, want)
		}
	}
	for _, name := range []string{"prefix_match", "num_gpu_blocks", "block_size", "max_tokens", "last_token_age_ms"} {
		if cols[name].nullable != "YES" {
			t.Errorf("column %s must be nullable: the schema leaves it NULL when not computed", name)
		}
	}
	for _, name := range store.SampleColumns() {
		if _, ok := cols[name]; !ok {
			t.Errorf("SampleColumns names %s, which the table lacks", name)
		}
	}
}

func TestConcurrentStartups(t *testing.T) {
	url := shared.NewDatabase(t)
	db := open(t, url)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			other, err := pgxpool.New(context.Background(), url)
			if err != nil {
				errs[i] = err
				return
			}
			defer other.Close()
			errs[i] = store.Migrate(context.Background(), other)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("start-up %d: %v", i, err)
		}
	}
	if err := store.WriteSamples(context.Background(), db, []store.Sample{fullSample(1, time.Now())}); err != nil {
		t.Fatalf("after concurrent migrations the table is not usable: %v", err)
	}
}

func TestValidateRejectsAbsurdValues(t *testing.T) {
	for name, mutate := range map[string]func(*store.Sample){
		"negative e2e":       func(s *store.Sample) { s.E2EMs = -1 },
		"NaN ttft":           func(s *store.Sample) { s.TTFTMs = ptr(math.NaN()) },
		"infinite tpot":      func(s *store.Sample) { s.TPOTMs = ptr(math.Inf(1)) },
		"a week of ttft":     func(s *store.Sample) { s.TTFTMs = ptr(7 * 24 * 3600e3) },
		"kv usage above 1":   func(s *store.Sample) { s.Features.Set(models.Index("kv_cache_usage"), 1.5) },
		"fractional count":   func(s *store.Sample) { s.Features.Set(models.Index("num_requests_waiting"), 2.5) },
		"negative in flight": func(s *store.Sample) { s.Features.Set(models.Index("inflight_tokens"), -1) },
		"no schema version":  func(s *store.Sample) { s.SchemaVersion = 0 },
		"negative tokens":    func(s *store.Sample) { s.OutputTokens = -3 },
		"no request id":      func(s *store.Sample) { s.RequestID = "" },
		"negative cached":    func(s *store.Sample) { s.CachedTokensReported = ptr(-1) },
		"zero time":          func(s *store.Sample) { s.Time = time.Time{} },
		"NaN prefix match":   func(s *store.Sample) { s.Features.Set(models.Index("prefix_match"), math.NaN()) },
		"negative decision":  func(s *store.Sample) { s.DecisionUs = -0.5 },
	} {
		s := fullSample(1, time.Now())
		mutate(&s)
		if err := s.Validate(); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("%s: Validate = %v, want ErrInvalid", name, err)
		}
	}
	s := fullSample(1, time.Now())
	if err := s.Validate(); err != nil {
		t.Fatalf("a good sample was rejected: %v", err)
	}
}

func TestRecorderCountsEverything(t *testing.T) {
	srv := pgserver.StartForTest(t) // stopped and restarted below
	db := open(t, srv.URL())
	ctx := context.Background()
	if err := store.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	// On a fake clock the writer runs only when kicked by a full batch or when the test steps
	// the clock, so what it holds during the outage is known.
	clk := clocktesting.NewFakeClock(time.Now())
	const flush = 10 * time.Millisecond
	r := store.NewRecorder(db, store.RecorderOptions{BufferSize: 1000, BatchSize: 100, FlushEvery: flush, Clock: clk})
	runDone := make(chan struct{})
	go func() { r.Run(); close(runDone) }()
	now := time.Now()
	for i := range 500 {
		r.Add(fullSample(i, now))
	}
	bad := fullSample(0, now)
	bad.E2EMs = math.NaN()
	r.Add(bad) // rejected before the database, counted
	waitStepping(t, clk, flush, func() bool { return r.Stats().Recorded == 500 })

	// Postgres goes away: requests go on, samples buffer, the oldest are dropped when full.
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	// One sample, flushed: the writer holds exactly it, retrying, while the rest arrive.
	r.Add(fullSample(1000, now))
	waitStepping(t, clk, flush, func() bool { return r.Stats().WriteErrors > 0 })
	for i := range 1499 {
		r.Add(fullSample(1001+i, now))
	}
	if st := r.Stats(); st.DroppedFull != 499 || st.Buffered != 1001 {
		t.Fatalf("during the outage: %+v, want 499 dropped and 1,001 buffered (1,000 + 1 in the retried batch)", st)
	}
	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	// The retry backoff is on the fake clock too: step it at its cap.
	waitStepping(t, clk, 5*time.Second, func() bool { return r.Stats().Buffered == 0 })
	closeCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := r.Close(closeCtx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-runDone:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after Close")
	}
	st := r.Stats()
	n, err := store.CountSamples(ctx, db, now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := store.Stats{Added: 2001, Recorded: 1501, Invalid: 1, DroppedFull: 499, WriteErrors: st.WriteErrors}
	if st != want || n != st.Recorded {
		t.Fatalf("stats %+v, rows %d; want %+v", st, n, want)
	}
}

// waitStepping steps clk by d until cond holds: the recorder's writer and its retries wait on
// the fake clock.
func waitStepping(t *testing.T, clk *clocktesting.FakeClock, d time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 20 s")
		}
		clk.Step(d)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 20 s")
		}
	}
}

// A row Postgres refuses must not stall recording: the good rows of its batch are written and
// the refused one is counted as invalid.
func TestRecorderSurvivesRefusedRows(t *testing.T) {
	db := open(t, shared.NewDatabase(t))
	ctx := context.Background()
	if err := store.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	// A CHECK the sample's own validation does not know makes Postgres refuse one row.
	if _, err := db.Exec(ctx, "ALTER TABLE request_samples ADD CONSTRAINT no_teapots CHECK (status <> 418)"); err != nil {
		t.Fatal(err)
	}
	r := store.NewRecorder(db, store.RecorderOptions{BatchSize: 64, FlushEvery: 10 * time.Millisecond})
	go r.Run()
	now := time.Now()
	for i := range 50 {
		s := fullSample(i, now)
		if i == 17 {
			s.Status = 418
		}
		r.Add(s)
	}
	waitFor(t, func() bool { st := r.Stats(); return st.Recorded+st.Invalid == 50 })
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if st := r.Stats(); st.Recorded != 49 || st.Invalid != 1 {
		t.Fatalf("stats %+v, want 49 recorded and 1 invalid", st)
	}
	bad := fullSample(1, now)
	bad.Model = "m\x00x"
	if err := bad.Validate(); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("a NUL in the model name passed validation: %v", err)
	}
	bad.Model = string([]byte{0xff, 0xfe})
	if err := bad.Validate(); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("invalid UTF-8 passed validation: %v", err)
	}
}

// A burst of refusals fills half the buffer at most: the samples the trainer learns from are
// not pushed out by it.
func TestRefusedSamplesHoldHalfTheBuffer(t *testing.T) {
	r := store.NewRecorder(nil, store.RecorderOptions{BufferSize: 10, BatchSize: 100}) // never run: all stays buffered
	now := time.Now()
	for i := range 3 {
		r.Add(fullSample(i, now))
	}
	for i := range 20 {
		s := fullSample(100+i, now)
		s.Refused, s.Reason, s.Outcome, s.Status, s.Replica = true, "rejected-saturated", "rejected", 429, ""
		r.Add(s)
	}
	if st := r.Stats(); st.Buffered != 8 || st.DroppedFull != 15 || st.Invalid != 0 {
		t.Fatalf("after 3 served and 20 refused: %+v, want 8 buffered (3 served, 5 refused) and 15 refused dropped", st)
	}
	// Served samples still push out the oldest, refused or not.
	for i := range 4 {
		r.Add(fullSample(200+i, now))
	}
	if st := r.Stats(); st.Buffered != 10 || st.DroppedFull != 17 {
		t.Fatalf("after 4 more served: %+v, want 10 buffered, 17 dropped", st)
	}
}
