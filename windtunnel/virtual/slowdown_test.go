package virtual

import (
	"context"
	"testing"
	"time"

	"github.com/augur-llm/augur/scheduler"
	"github.com/augur-llm/augur/windtunnel/workload"
)

// A replica slowed at an instant streams 1.5 times slower from then on, and only it does.
func TestSlowdownFromAnInstant(t *testing.T) {
	const at, factor = 80 * time.Second, 1.5
	// One request at a time per replica, so that TPOT is the decode step time alone.
	ladder := workload.ConstantLadder(0.25, 160*time.Second)
	res, err := Run(context.Background(), Config{Replicas: pool8(t, "8b-h100", 2), Profile: scheduler.BuiltinProfiles()["round-robin"], Seed: 1,
		Slowdowns: []Slowdown{{Replica: 0, At: at, Factor: factor}}}, sharedPrefix(t, 1, ladder, 100).Next)
	if err != nil {
		t.Fatal(err)
	}
	// Mean TPOT per replica, of requests that ran wholly before the instant and wholly after.
	var sum [2][2]time.Duration
	var n [2][2]int
	for _, o := range res.Outcomes {
		r := map[string]int{"sim-a": 0, "sim-b": 1}[o.Replica]
		switch {
		case o.End < at:
			sum[r][0] += o.TPOT
			n[r][0]++
		case o.Start >= at:
			sum[r][1] += o.TPOT
			n[r][1]++
		}
	}
	for r := range 2 {
		if n[r][0] < 5 || n[r][1] < 5 {
			t.Fatalf("replica %d: %v requests before and after", r, n[r])
		}
		before, after := sum[r][0]/time.Duration(n[r][0]), sum[r][1]/time.Duration(n[r][1])
		ratio := float64(after) / float64(before)
		want := 1.0
		if r == 0 {
			want = factor
		}
		t.Logf("replica %d: TPOT %v before, %v after (x%.3f)", r, before, after, ratio)
		if ratio < want*0.97 || ratio > want*1.03 {
			t.Errorf("replica %d: TPOT x%.3f after the instant, want x%v", r, ratio, want)
		}
	}
	if _, err := Run(context.Background(), Config{Replicas: pool8(t, "8b-h100", 2), Profile: scheduler.BuiltinProfiles()["round-robin"],
		Slowdowns: []Slowdown{{Replica: 2, Factor: 2}}}, sharedPrefix(t, 1, ladder, 100).Next); err == nil {
		t.Error("a slowdown of a replica that does not exist was accepted")
	}
}
