package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	batchv1 "k8s.io/api/batch/v1"
	"sigs.k8s.io/yaml"

	"github.com/augur-llm/augur/local/pgserver"
	"github.com/augur-llm/augur/models"
	"github.com/augur-llm/augur/store"
	"github.com/augur-llm/augur/trainer/trainertest"
)

func TestFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--once"}, "--database-url"},
		{[]string{"--database-url", "postgres://x"}, "--once or --every"},
		{[]string{"--database-url", "postgres://x", "--once", "--every", "1h"}, "--once or --every"},
		{[]string{"--database-url", "postgres://x", "--once", "extra"}, "unexpected"},
		{[]string{"--database-url", "postgres://x", "--once", "--window", "-1h"}, "negative"},
		{[]string{"--database-url", "postgres://x", "--every", "1h", "--early-min-interval", "-1s"}, "negative"},
		{[]string{"--database-url", "postgres://x", "--once", "--unpublished-status", "1"}, "--unpublished-status"},
		{[]string{"--database-url", "postgres://x", "--once", "--min-tpot-tokens", "-1"}, "MinTPOTTokens -1"},
		{[]string{"--database-url", "postgres://x", "--once", "--quantile", "1.5"}, "quantile 1.5"},
	} {
		var out, errb bytes.Buffer
		code := run(context.Background(), tc.args, &out, &errb)
		if code != exitUsage || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, code, errb.String(), exitUsage, tc.want)
		}
	}
}

// The job's exit status tells a CronJob what happened: 0 published, 3 nothing published.
func TestOnceExitStatus(t *testing.T) {
	pg := pgserver.StartForTest(t)
	ctx := context.Background()
	db, err := pgxpool.New(ctx, pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := store.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	args := []string{"--database-url", pg.URL(), "--once", "--quiet"}
	var out, errb bytes.Buffer
	if code := run(ctx, args, &out, &errb); code != exitNotPublished || !strings.Contains(out.String(), "skipped") {
		t.Fatalf("no samples: exit %d\n%s%s", code, out.String(), errb.String())
	}
	var samples []store.Sample
	now := time.Now().Add(-time.Hour)
	for i, r := range trainertest.Rows(3000, 11) {
		sample := trainertest.Sample(i, r)
		sample.Time = now.Add(time.Duration(i) * time.Millisecond)
		samples = append(samples, sample)
	}
	if err := store.WriteSamples(ctx, db, samples); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out.Reset()
	if code := run(ctx, append(args, "--models-out", dir, "--window", "24h"), &out, &errb); code != exitPublished {
		t.Fatalf("first training: exit %d\n%s%s", code, out.String(), errb.String())
	}
	for _, want := range []string{"TTFT", "TPOT", "MAPE", "published run"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	arts, err := models.ReadDir(dir)
	if err != nil || len(arts) != 4 {
		t.Fatalf("--models-out wrote %d artifacts (%v)", len(arts), err)
	}
	// The same samples again with the labels scrambled in their training part: the
	// challenger is worse on the clean newest samples, nothing is published.
	if _, err := db.Exec(ctx, `UPDATE request_samples SET ttft_ms = ttft_ms * (0.2 + 5 * random()), tpot_ms = tpot_ms * (0.2 + 5 * random())
		WHERE time < $1`, now.Add(2100*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if code := run(ctx, args, &out, &errb); code != exitNotPublished || !strings.Contains(out.String(), "kept champion") {
		t.Fatalf("degraded training: exit %d\n%s%s", code, out.String(), errb.String())
	}
}

// The CronJob manifest is valid, its arguments are the trainer's, and with them a run that
// publishes nothing succeeds (a Job retries any other status).
func TestCronJobManifest(t *testing.T) {
	b, err := os.ReadFile("../../deploy/kubernetes/trainer-cronjob.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cj batchv1.CronJob
	if err := yaml.UnmarshalStrict(b, &cj); err != nil {
		t.Fatal(err)
	}
	c := cj.Spec.JobTemplate.Spec.Template.Spec.Containers
	if len(c) != 1 {
		t.Fatalf("%d containers", len(c))
	}
	if _, err := parse(append(c[0].Args, "--database-url", "postgres://x"), &bytes.Buffer{}); err != nil {
		t.Errorf("the manifest's arguments %v: %v", c[0].Args, err)
	}
	pg := pgserver.StartForTest(t)
	var out, errb bytes.Buffer
	if code := run(context.Background(), append(c[0].Args, "--database-url", pg.URL()), &out, &errb); code != 0 {
		t.Errorf("the manifest's arguments on an empty database: exit %d, want 0\n%s%s", code, out.String(), errb.String())
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// With --every, a picker's training request (NOTIFY augur_train) makes the trainer run early,
// but no sooner than --early-min-interval after its previous run.
func TestEveryRunsEarlyWhenAsked(t *testing.T) {
	pg := pgserver.StartForTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db, err := pgxpool.New(ctx, pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var out, errb syncBuffer
	const gap = time.Second
	exit := make(chan int, 1)
	go func() {
		exit <- run(ctx, []string{"--database-url", pg.URL(), "--every", "1h", "--early-min-interval", gap.String(), "--quiet"}, &out, &errb)
	}()
	runs := func() int { return strings.Count(out.String(), "nothing published") }
	var at []time.Time // when each run's report appeared
	deadline := time.Now().Add(30 * time.Second)
	for len(at) < 2 && time.Now().Before(deadline) {
		if n := runs(); n > len(at) {
			at = append(at, time.Now())
		}
		if len(at) == 1 {
			// Until the trainer listens, requests are lost: ask again until it runs.
			if err := store.RequestTraining(ctx, db, "drift sim-0 ttft x1.52"); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(at) < 2 {
		t.Fatalf("%d runs within 30 s of an early request (the next is due in an hour)\n%s%s", len(at), out.String(), errb.String())
	}
	if d := at[1].Sub(at[0]); d < gap-100*time.Millisecond { // seen by polling every 50 ms
		t.Errorf("the early run came %v after the previous one, want at least %v", d, gap)
	}
	if !strings.Contains(errb.String(), "early training requested") || !strings.Contains(errb.String(), "drift sim-0") {
		t.Errorf("the request is not logged:\n%s", errb.String())
	}
	cancel()
	select {
	case code := <-exit:
		if code != exitPublished {
			t.Errorf("exit %d after the context ended", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the trainer did not stop")
	}
}
