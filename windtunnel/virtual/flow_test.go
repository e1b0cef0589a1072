package virtual

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/augur-llm/augur/flowcontrol"
	"github.com/augur-llm/augur/scheduler"
	"github.com/augur-llm/augur/windtunnel/sim"
	"github.com/augur-llm/augur/windtunnel/workload"
)

// Flow control on the virtual clock: overloaded three times over, every request ends (served
// or refused with 429), the picker never pushes a replica's queue past the limit (only the
// replica itself can, by preempting), checked at every event, and the run repeats exactly.
func TestFlowControlVirtual(t *testing.T) {
	run := func() Result {
		g, err := workload.New(workload.NameMixedSLO, workload.Options{Seed: 3, Ladder: workload.ConstantLadder(120, 5*time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		fc := &flowcontrol.Config{Objectives: map[string]flowcontrol.Objective{}}
		for _, cl := range workload.DefaultClasses() {
			fc.Objectives[cl.Name] = flowcontrol.Objective{Priority: cl.Priority}
		}
		events := 0
		res, err := Run(context.Background(), Config{Replicas: pool8(t, "8b-h100", 2), Profile: scheduler.BuiltinProfiles()["llm-d-token"], Seed: 3,
			FlowControl: fc,
			OnEvent: func(now time.Time, c *flowcontrol.Controller, _ []*sim.Replica) {
				events++
				for _, r := range c.Stats().Replicas {
					if r.Waiting > max(2, r.Scraped) {
						t.Fatalf("at %v replica %s holds %d waiting by the picker's count, limit 2, %d at its last scrape", now, r.Name, r.Waiting, r.Scraped)
					}
				}
			}}, g.Next)
		if err != nil {
			t.Fatal(err)
		}
		if events == 0 {
			t.Fatal("no event checked")
		}
		return res
	}
	res := run()
	served, shed := 0, 0
	for _, o := range res.Outcomes {
		switch {
		case o.Completed():
			served++
		case o.Shed():
			shed++
			if o.ShedReason != flowcontrol.ReasonSaturated && o.ShedReason != flowcontrol.ReasonTTLExpired {
				t.Errorf("shed for %q", o.ShedReason)
			}
		default:
			t.Errorf("request ended with status %d", o.Status)
		}
	}
	if served == 0 || shed == 0 || served+shed != len(res.Outcomes) {
		t.Errorf("%d served, %d shed of %d: want both, and every request ended", served, shed, len(res.Outcomes))
	}
	if res.MeanWaiting > 2 {
		t.Errorf("replicas held %.2f waiting on average, limit 2", res.MeanWaiting)
	}
	if again := run(); !reflect.DeepEqual(res.Outcomes, again.Outcomes) {
		t.Error("two runs with flow control differ")
	}
}
