package sim_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/augur-llm/augur/windtunnel/sim"
)

// driver runs one virtual replica the way the virtual-time runner does: a step starts when the
// replica is idle and a request arrives, or when the previous step ends; a request that
// arrives during a step joins the next one.
type driver struct {
	t        testing.TB
	r        *sim.Replica
	now      time.Time
	stepping bool
	due      time.Time
	tokens   []timedToken
}

type timedToken struct {
	sim.Token
	At time.Time
}

func newDriver(t testing.TB, prof sim.Profile, seed uint64) *driver {
	t.Helper()
	r, err := sim.NewReplica(sim.Config{Model: "m", Profile: prof, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	return &driver{t: t, r: r, now: time.Unix(1000, 0)}
}

func (d *driver) startStep() {
	if d.stepping {
		return
	}
	dur, ok, err := d.r.Step(d.now)
	if err != nil {
		d.t.Fatal(err)
	}
	if ok {
		d.stepping, d.due = true, d.now.Add(dur)
	}
}

// advance moves time to `to`, ending the steps due before it, and those due at it too when
// stepEndsFirst (the order of simultaneous events).
func (d *driver) advance(to time.Time, stepEndsFirst bool) {
	for d.stepping && (d.due.Before(to) || stepEndsFirst && d.due.Equal(to)) {
		d.now, d.stepping = d.due, false
		d.r.Finish(d.now, func(tok sim.Token) { d.tokens = append(d.tokens, timedToken{tok, d.now}) })
		d.startStep()
	}
	d.now = to
}

// submit queues req at the current time.
func (d *driver) submit(tag int, req sim.Request) {
	if err := d.r.Submit(d.now, tag, req); err != nil {
		d.t.Fatal(err)
	}
	d.startStep()
}

// drain runs until the replica is idle.
func (d *driver) drain() {
	for d.stepping {
		d.advance(d.due, true)
	}
}

// realized is what request tag experienced, followed for n tokens, as Forecast reports it.
func (d *driver) realized(tag int, arrived time.Time, n int) (ttft, tpot time.Duration, cached int) {
	var first, nth time.Time
	for _, tok := range d.tokens {
		if tok.Tag != tag {
			continue
		}
		if tok.Generated == 1 {
			first, cached = tok.At, tok.CachedTokens
		}
		if tok.Generated == n {
			nth = tok.At
		}
	}
	if first.IsZero() || nth.IsZero() {
		d.t.Fatalf("request %d did not produce %d tokens", tag, n)
	}
	if n > 1 {
		tpot = nth.Sub(first) / time.Duration(n-1)
	}
	return first.Sub(arrived), tpot, cached
}

// promptText is a prompt of about n tokens whose first shared tokens are the same for every
// request of the tenant, so that requests hit each other's prefix blocks.
func promptText(rng *rand.Rand, tenant, shared, n int) []byte {
	b := make([]byte, 0, n*4+24)
	head := fmt.Sprintf("tenant %d says hello. ", tenant)
	for len(b) < shared*4 {
		b = append(b, head...)
	}
	b = b[:shared*4]
	for len(b) < n*4 {
		b = strconv.AppendUint(b, rng.Uint64(), 36)
		b = append(b, ' ')
	}
	return b[:n*4]
}

type arrival struct {
	at  time.Duration
	req sim.Request
}

// traffic is a Poisson stream of rate requests per second over span, prompts of 200-3,000
// tokens of which up to 1,000 are a tenant's shared prefix, outputs of 20-400 tokens.
func traffic(seed uint64, rate float64, span time.Duration) []arrival {
	return trafficOut(seed, rate, span, 20, 400)
}

// trafficOut is traffic with outputs of minOut-maxOut tokens.
func trafficOut(seed uint64, rate float64, span time.Duration, minOut, maxOut int) []arrival {
	rng := rand.New(rand.NewPCG(seed, 1))
	var out []arrival
	var at time.Duration
	for {
		at += time.Duration(rng.ExpFloat64() / rate * float64(time.Second))
		if at >= span {
			return out
		}
		n := 200 + rng.IntN(2800)
		p := promptText(rng, rng.IntN(4), min(n, rng.IntN(1001)), n)
		out = append(out, arrival{at: at, req: sim.Request{Prompt: sim.TextPrompt(p), MaxTokens: minOut + rng.IntN(maxOut-minOut+1)}})
	}
}

func lookup(t testing.TB, name string) sim.Profile {
	t.Helper()
	p, err := sim.LookupProfile(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// tight is a replica with little KV memory, so that the queue waits for blocks and running
// requests are preempted.
func tight(t testing.TB) sim.Profile {
	p := lookup(t, "8b-h100")
	p.Name, p.NumGPUBlocks, p.MaxModelLen = "tight", 700, 8192
	return p
}

// The forecast of a request is what then happens to it when nothing else arrives: first
// token, token timing and prefix hit, on an idle replica, on a busy one mid-step, at a step's
// end (either order of the simultaneous events), and on one whose queue waits for KV blocks.
func TestForecastIsExact(t *testing.T) {
	cases := []struct {
		name          string
		prof          sim.Profile
		rate          float64
		warm          time.Duration // traffic before the forecast
		offset        time.Duration // forecast this long after the last warm-up arrival; <0: at a step end
		stepEndsFirst bool
		wantBusy      bool
		wantPressure  bool
	}{
		{name: "idle", prof: lookup(t, "8b-h100"), rate: 2, warm: 3 * time.Second, offset: time.Minute},
		{name: "mid-step", prof: lookup(t, "8b-h100"), rate: 20, warm: 5 * time.Second, offset: 3 * time.Millisecond, wantBusy: true},
		{name: "step-end-arrival-first", prof: lookup(t, "8b-a100"), rate: 20, warm: 5 * time.Second, offset: -1, wantBusy: true},
		{name: "step-end-step-first", prof: lookup(t, "8b-a100"), rate: 20, warm: 5 * time.Second, offset: -1, stepEndsFirst: true, wantBusy: true},
		{name: "kv-pressure", prof: tight(t), rate: 12, warm: 3 * time.Second, offset: 1500 * time.Microsecond, wantBusy: true, wantPressure: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for trial := range 4 {
				d := newDriver(t, tc.prof, uint64(trial))
				start := d.now
				arr := traffic(uint64(100+trial), tc.rate, tc.warm)
				// One forecaster follows the whole run, so that its last forecast starts
				// from a copy brought up to date rather than made afresh.
				long := sim.NewForecaster(0)
				for i, a := range arr {
					d.advance(start.Add(a.at), false)
					if _, err := long.Forecast(d.r, d.now, a.req); err != nil {
						t.Fatal(err)
					}
					d.submit(i, a.req)
				}
				at := d.now.Add(tc.offset)
				if tc.offset < 0 {
					// A few steps on, exactly when one ends.
					for range 3 {
						d.advance(d.due, true)
					}
					at = d.due
				}
				d.advance(at, tc.stepEndsFirst)
				snap := d.r.Snapshot()
				if tc.wantBusy && snap.Running == 0 {
					t.Fatalf("trial %d: replica idle at the forecast: %+v", trial, snap)
				}
				if !tc.wantBusy && (snap.Running != 0 || snap.Waiting != 0) {
					t.Fatalf("trial %d: replica busy at the forecast: %+v", trial, snap)
				}
				if tc.wantPressure && snap.Waiting == 0 {
					t.Fatalf("trial %d: no queue at the forecast: %+v", trial, snap)
				}
				rng := rand.New(rand.NewPCG(uint64(trial), 9))
				req := sim.Request{Prompt: sim.TextPrompt(promptText(rng, trial%4, 600, 1500)), MaxTokens: 120}
				var fcs []sim.Forecast
				for _, f := range []*sim.Forecaster{long, sim.NewForecaster(5), sim.NewForecaster(sim.ForecastAll)} {
					fc, err := f.Forecast(d.r, at, req)
					if err != nil {
						t.Fatal(err)
					}
					fcs = append(fcs, fc)
				}
				tag := len(arr)
				d.submit(tag, req)
				d.drain()
				for _, fc := range fcs {
					ttft, tpot, cached := d.realized(tag, at, fc.Tokens)
					if fc.TTFT != ttft || fc.TPOT != tpot || fc.CachedTokens != cached {
						t.Errorf("trial %d, %d tokens: forecast TTFT %v TPOT %v cached %d, realized %v %v %d",
							trial, fc.Tokens, fc.TTFT, fc.TPOT, fc.CachedTokens, ttft, tpot, cached)
					}
				}
				if fcs[0].Tokens != 1+sim.DefaultForecastTokens || fcs[1].Tokens != 6 || fcs[2].Tokens != 120 {
					t.Errorf("followed %d, %d, %d tokens, want %d, 6, 120", fcs[0].Tokens, fcs[1].Tokens, fcs[2].Tokens, 1+sim.DefaultForecastTokens)
				}
				if trial == 0 {
					t.Logf("%+v at the forecast; forecast %+v", snap, fcs[2])
				}
				if tc.wantPressure && d.r.Snapshot().Preemptions == 0 {
					t.Errorf("trial %d: no preemption: KV pressure not exercised", trial)
				}
			}
		})
	}
}

// A replica that is forecast again and again serves exactly as its twin that is not.
func TestForecastLeavesReplicaAlone(t *testing.T) {
	for _, tc := range []struct {
		prof sim.Profile
		rate float64
	}{{lookup(t, "8b-h100"), 15}, {tight(t), 6}} {
		prof := tc.prof
		t.Run(prof.Name, func(t *testing.T) {
			plain, probed := newDriver(t, prof, 3), newDriver(t, prof, 3)
			f, all := sim.NewForecaster(0), sim.NewForecaster(sim.ForecastAll)
			rng := rand.New(rand.NewPCG(5, 5))
			start := plain.now
			forecasts, steps := 0, 0
			for i, a := range traffic(7, tc.rate, 6*time.Second) {
				at := start.Add(a.at)
				plain.advance(at, false)
				// The probed twin is forecast at every step end on the way, to the end at
				// every tenth, with requests that would evict, hit and preempt in the copy.
				for probed.stepping && probed.due.Before(at) {
					probed.advance(probed.due, true)
					fr := f
					if steps++; steps%10 == 0 {
						fr = all
					}
					req := sim.Request{Prompt: sim.TextPrompt(promptText(rng, rng.IntN(4), 500, 500+rng.IntN(4000))), MaxTokens: 1 + rng.IntN(300)}
					if _, err := fr.Forecast(probed.r, probed.now, req); err != nil {
						t.Fatal(err)
					}
					forecasts++
				}
				probed.advance(at, false)
				if _, err := f.Forecast(probed.r, at, a.req); err != nil {
					t.Fatal(err)
				}
				plain.submit(i, a.req)
				probed.submit(i, a.req)
			}
			plain.drain()
			probed.drain()
			if !reflect.DeepEqual(plain.tokens, probed.tokens) {
				t.Fatalf("token timings differ after %d forecasts (%d and %d tokens)", forecasts, len(plain.tokens), len(probed.tokens))
			}
			if a, b := plain.r.Snapshot(), probed.r.Snapshot(); a != b {
				t.Fatalf("end states differ:\n%+v\n%+v", a, b)
			}
			t.Logf("%d forecasts, %d tokens, %+v", forecasts, len(plain.tokens), plain.r.Snapshot())
		})
	}
}

func TestForecastRefusesWhatSubmitRefuses(t *testing.T) {
	d := newDriver(t, lookup(t, "8b-h100"), 1)
	f := sim.NewForecaster(0)
	if _, err := f.Forecast(d.r, d.now, sim.Request{Prompt: sim.TextPrompt([]byte("hi")), MaxTokens: 0}); err == nil {
		t.Error("max tokens 0 accepted")
	}
	if _, err := f.Forecast(d.r, d.now, sim.Request{Prompt: sim.TextPrompt(nil), MaxTokens: 5}); err == nil {
		t.Error("empty prompt accepted")
	}
	fc, err := f.Forecast(d.r, d.now, sim.Request{Prompt: sim.TextPrompt([]byte("hi")), MaxTokens: 1})
	if err != nil || fc.Tokens != 1 || fc.TPOT != 0 || fc.TTFT <= 0 || fc.Steps != 1 {
		t.Errorf("one-token request: %+v, %v", fc, err)
	}
}

// BenchmarkForecast is the cost of one forecast on an 8b-h100 replica serving about 50
// requests (8 req/s, outputs of 50-800 tokens as in the mixed-slo workload), for several
// bounds on the tokens followed after the first, and the error of the bounded forecast's TPOT
// against following the request to its end: mean and p90 of |bounded-full|/full over
// forecasts of 50-800-token requests at 200 moments of the run (the TTFT does not depend on
// the bound).
func BenchmarkForecast(b *testing.B) {
	d := newDriver(b, lookup(b, "8b-h100"), 1)
	start := d.now
	arr := trafficOut(11, 8, 70*time.Second, 50, 800)
	rng := rand.New(rand.NewPCG(3, 3))
	bounds := []int{1, 2, 4, 8, 16, 32, 64, 128, sim.ForecastAll}
	fs := make([]*sim.Forecaster, len(bounds))
	for i, k := range bounds {
		fs[i] = sim.NewForecaster(k)
	}
	errs := make([][]float64, len(bounds))
	var running []int
	// After a 20 s warm-up, forecast every 250 ms: the same request under every bound.
	next := start.Add(20 * time.Second)
	for i, a := range arr {
		at := start.Add(a.at)
		for next.Before(at) {
			d.advance(next, false)
			running = append(running, d.r.Snapshot().Running)
			req := sim.Request{Prompt: sim.TextPrompt(promptText(rng, rng.IntN(4), 600, 300+rng.IntN(1700))), MaxTokens: 50 + rng.IntN(751)}
			fcs := make([]sim.Forecast, len(bounds))
			for j, f := range fs {
				fc, err := f.Forecast(d.r, d.now, req)
				if err != nil {
					b.Fatal(err)
				}
				fcs[j] = fc
			}
			full := fcs[len(fcs)-1].TPOT
			for j, fc := range fcs {
				errs[j] = append(errs[j], math.Abs(float64(fc.TPOT-full))/float64(full))
			}
			next = next.Add(250 * time.Millisecond)
		}
		d.advance(at, false)
		d.submit(i, a.req)
	}
	slices.Sort(running)
	b.Logf("%d forecasts; running requests at them: p10 %d, median %d, p90 %d", len(running),
		running[len(running)/10], running[len(running)/2], running[len(running)*9/10])

	// The timed state: the first arrival after the warm-up that finds 50 requests running,
	// 2 ms later, mid-step.
	d = newDriver(b, lookup(b, "8b-h100"), 1)
	for i, a := range arr {
		d.advance(start.Add(a.at), false)
		d.submit(i, a.req)
		if a.at > 20*time.Second && d.r.Snapshot().Running >= 50 {
			break
		}
	}
	d.advance(d.now.Add(2*time.Millisecond), false)
	snap := d.r.Snapshot()
	reqs := make([]sim.Request, 64)
	for i := range reqs {
		reqs[i] = sim.Request{Prompt: sim.TextPrompt(promptText(rng, rng.IntN(4), 600, 300+rng.IntN(1700))), MaxTokens: 50 + rng.IntN(751)}
	}
	for j, k := range bounds {
		name := "all"
		if k >= 0 {
			name = strconv.Itoa(k)
		}
		b.Run("tokens="+name, func(b *testing.B) {
			f := sim.NewForecaster(k)
			steps, n := 0, 0
			for b.Loop() {
				fc, err := f.Forecast(d.r, d.now, reqs[n%len(reqs)])
				if err != nil {
					b.Fatal(err)
				}
				steps += fc.Steps
				n++
			}
			e := slices.Clone(errs[j])
			slices.Sort(e)
			var sum float64
			for _, x := range e {
				sum += x
			}
			b.ReportMetric(float64(snap.Running), "running")
			b.ReportMetric(float64(steps)/float64(n), "steps/op")
			b.ReportMetric(100*sum/float64(len(e)), "tpot-err-mean-%")
			b.ReportMetric(100*e[len(e)*9/10], "tpot-err-p90-%")
		})
	}
}
