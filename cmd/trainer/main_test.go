package main

import (
	"bytes"
	"context"
	"os"
	"strings"
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
		{[]string{"--database-url", "postgres://x", "--once", "--unpublished-status", "1"}, "--unpublished-status"},
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
