package picker

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"

	"github.com/augur-llm/augur/local/pgserver"
	"github.com/augur-llm/augur/models"
	"github.com/augur-llm/augur/pool"
	"github.com/augur-llm/augur/store"
)

// A picker with a database asks the trainer for new models when a replica drifts, once for
// a burst of onsets.
func TestDriftAsksTheTrainer(t *testing.T) {
	pg := pgserver.StartForTest(t)
	p, err := New(Config{Endpoints: []pool.Endpoint{{Name: "a", Address: "127.0.0.1:1"}}, DatabaseURL: pg.URL(),
		DrainTimeout: metav1.Duration{Duration: time.Second}},
		Options{Clock: clock.RealClock{}, Log: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if p.training == nil {
		t.Fatal("a picker with a database does not ask for training")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db, err := pgxpool.New(ctx, pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	listening := make(chan struct{})
	got := make(chan string, 4)
	go func() {
		_ = store.ListenTraining(ctx, db, func() { close(listening) }, func(reason string) { got <- reason })
	}()
	<-listening
	glis, _ := net.Listen("tcp", "127.0.0.1:0")
	served := make(chan error, 1)
	go func() { served <- p.Serve(ctx, glis, nil) }()

	p.training.onDrift("a", models.TTFT, 1.52)
	p.training.onDrift("b", models.TPOT, 1.61) // dropped: one request covers both
	select {
	case r := <-got:
		if !strings.Contains(r, "replica a") || !strings.Contains(r, "x1.52") {
			t.Errorf("reason %q", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the trainer was not asked")
	}
	p.training.onDrift("c", models.TTFT, 2) // within the interval: dropped too
	select {
	case r := <-got:
		t.Errorf("a second request within %v: %q", TrainingRequestInterval, r)
	case <-time.After(300 * time.Millisecond):
	}
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
}
