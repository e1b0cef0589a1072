package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/augur-llm/augur/store"
)

// A training request reaches a listening trainer with its reason.
func TestTrainingRequestsReachAListener(t *testing.T) {
	db := open(t, shared.NewDatabase(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Nobody listens yet: not an error.
	if err := store.RequestTraining(ctx, db, "early"); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	got := make(chan string, 4)
	done := make(chan error, 1)
	go func() {
		done <- store.ListenTraining(ctx, db, func() { close(ready) }, func(reason string) { got <- reason })
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatal(err)
	}
	if err := store.RequestTraining(ctx, db, "drift sim-0 ttft x1.52"); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-got:
		if r != "drift sim-0 ttft x1.52" {
			t.Errorf("reason %q", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no training request received")
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("ListenTraining returned %v after its context ended", err)
	}
	// The listening connection did not go back to the pool.
	if n := db.Stat().TotalConns(); n > 1 {
		t.Errorf("%d connections in the pool after listening", n)
	}
}
