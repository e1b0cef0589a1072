package sim_test

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/augur-llm/augur/windtunnel/sim"
)

// A slowed replica's steps last the factor longer than a twin's from SetSlowdown on, and
// exactly as long before.
func TestSetSlowdownScalesStepsFromThenOn(t *testing.T) {
	prof, err := sim.LookupProfile("8b-h100")
	if err != nil {
		t.Fatal(err)
	}
	var twins [2]*sim.Replica
	for i := range twins {
		if twins[i], err = sim.NewReplica(sim.Config{Model: "m", Profile: prof, Seed: 3}); err != nil {
			t.Fatal(err)
		}
	}
	if err := twins[1].SetSlowdown(0); err == nil {
		t.Error("a zero slowdown was accepted")
	}
	now := [2]time.Time{time.Unix(0, 0), time.Unix(0, 0)}
	for i := range 8 {
		prompt := sim.TextPrompt([]byte(strings.Repeat(string(rune('a'+i)), 4000)))
		for k, r := range twins {
			if err := r.Submit(now[k], i, sim.Request{Prompt: prompt, MaxTokens: 40}); err != nil {
				t.Fatal(err)
			}
		}
	}
	const factor, at = 1.5, 20
	for step := 0; ; step++ {
		if step == at {
			if err := twins[1].SetSlowdown(factor); err != nil {
				t.Fatal(err)
			}
		}
		var d [2]time.Duration
		var ok [2]bool
		for k, r := range twins {
			if d[k], ok[k], err = r.Step(now[k]); err != nil {
				t.Fatal(err)
			}
		}
		if ok[0] != ok[1] {
			t.Fatalf("step %d: one twin is done, the other is not", step)
		}
		if !ok[0] {
			if step < at+10 {
				t.Fatalf("only %d steps", step)
			}
			break
		}
		want := float64(d[0])
		if step >= at {
			want *= factor
		}
		if math.Abs(float64(d[1])-want) > 2 {
			t.Fatalf("step %d: %v on the slowed twin, %v on the other (slowdown %v from step %d)", step, d[1], d[0], factor, at)
		}
		for k, r := range twins {
			now[k] = now[k].Add(d[k])
			r.Finish(now[k], func(sim.Token) {})
		}
	}
}

// A forecast on a slowed replica knows its slowdown: it is what then happens.
func TestForecastOnASlowedReplica(t *testing.T) {
	d := newDriver(t, lookup(t, "8b-h100"), 1)
	if err := d.r.SetSlowdown(1.5); err != nil {
		t.Fatal(err)
	}
	start := d.now
	arr := traffic(7, 20, 3*time.Second)
	for i, a := range arr {
		d.advance(start.Add(a.at), false)
		d.submit(i, a.req)
	}
	at := d.now.Add(3 * time.Millisecond)
	d.advance(at, false)
	req := sim.Request{Prompt: sim.TextPrompt([]byte(strings.Repeat("slow ", 800))), MaxTokens: 40}
	fc, err := sim.NewForecaster(sim.ForecastAll).Forecast(d.r, at, req)
	if err != nil {
		t.Fatal(err)
	}
	d.submit(len(arr), req)
	d.drain()
	ttft, tpot, _ := d.realized(len(arr), at, fc.Tokens)
	if fc.TTFT != ttft || fc.TPOT != tpot {
		t.Errorf("forecast TTFT %v TPOT %v, realized %v %v", fc.TTFT, fc.TPOT, ttft, tpot)
	}
}
