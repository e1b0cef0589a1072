package report

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

const (
	msec = time.Millisecond
	sec  = time.Second
)

// sample is a small run worked out by hand below.
func sample() []Outcome {
	inter := func(o Outcome) Outcome {
		o.Class, o.SLOTTFT, o.SLOTPOT = "interactive", 500*msec, 50*msec
		return o
	}
	batch := func(o Outcome) Outcome {
		o.Class, o.SLOTTFT = "batch", 30*sec
		return o
	}
	return []Outcome{
		// interactive
		inter(Outcome{Start: 1 * sec, Status: 200, Replica: "r1", TTFT: 400 * msec, TPOT: 40 * msec, E2E: 4400 * msec, PromptTokens: 1000, CachedTokens: 800, OutputTokens: 100}),
		inter(Outcome{Start: 2 * sec, Status: 200, Replica: "r2", TTFT: 600 * msec, TPOT: 30 * msec, E2E: 1000 * msec, PromptTokens: 1000, OutputTokens: 10}),                   // TTFT missed
		inter(Outcome{Start: 3 * sec, Status: 200, Replica: "r1", TTFT: 100 * msec, TPOT: 60 * msec, E2E: 3000 * msec, PromptTokens: 500, CachedTokens: 500, OutputTokens: 50}), // TPOT missed
		inter(Outcome{Start: 4 * sec, Status: 429, ShedReason: "rejected-saturated"}),
		inter(Outcome{Start: 5 * sec, Status: 200, Replica: "r1", TTFT: 200 * msec, E2E: 200 * msec, PromptTokens: 100, OutputTokens: 1}), // one token: no TPOT
		// batch
		batch(Outcome{Start: 1 * sec, Status: 200, Replica: "r2", TTFT: 20 * sec, TPOT: 25 * msec, E2E: 25 * sec, PromptTokens: 4000, CachedTokens: 2000, OutputTokens: 200}),
		batch(Outcome{Start: 2 * sec, Status: 429, ShedReason: "rejected-saturated"}),
		batch(Outcome{Start: 3 * sec, Status: 429}),
		batch(Outcome{Start: 4 * sec, Status: 503}),
		// no class, no objectives
		{Start: 6 * sec, Status: 200, Replica: "r3", TTFT: 5 * sec, TPOT: 1 * sec, E2E: 6 * sec, PromptTokens: 400, OutputTokens: 2},
		{Start: 7 * sec, Status: 0, Replica: "r3"},
		// outside a [0, 10s) window
		{Start: 12 * sec, End: 13 * sec, Status: 200, Replica: "r9", E2E: sec, OutputTokens: 5},
	}
}

func f(v float64) *float64 { return &v }

func near(p *float64, want float64) bool { return p != nil && math.Abs(*p-want) < 1e-9 }

func TestOverallHandComputed(t *testing.T) {
	r := Compute(sample(), Options{Window: Window{From: 0, To: 10 * sec}})
	s := r.Overall
	if s.Name != "all" || s.Requests != 11 || s.Completed != 6 || s.MetSLO != 4 || s.Shed != 3 || s.Errors != 2 {
		t.Fatalf("counts: %+v", s)
	}
	for name, c := range map[string]struct {
		got  *float64
		want float64
	}{
		"attainment":    {s.SLOAttainment, 3.0 / 9}, // the two requests without objectives are not judged
		"goodput":       {s.GoodputRPS, 0.4},
		"completed/s":   {s.CompletedRPS, 0.6},
		"output tok/s":  {s.OutputTPS, 36.3},
		"shed share":    {s.ShedShare, 3.0 / 11},
		"hit rate":      {s.PrefixHitRate, 3300.0 / 7000},
		"ttft p50":      {s.TTFT.P50, 400},
		"ttft p90":      {s.TTFT.P90, 20000},
		"ttft p99":      {s.TTFT.P99, 20000},
		"ttft mean":     {s.TTFT.Mean, 26300.0 / 6},
		"tpot p50":      {s.TPOT.P50, 40},
		"tpot p99":      {s.TPOT.P99, 1000},
		"e2e p50":       {s.E2E.P50, 3000},
		"e2e p99":       {s.E2E.P99, 25000},
		"replica ratio": {r.ReplicaMaxMin, 1.5},
	} {
		if !near(c.got, c.want) {
			t.Errorf("%s = %v, want %v", name, deref(c.got), c.want)
		}
	}
	if s.TTFT.N != 6 || s.TPOT.N != 5 || s.E2E.N != 6 {
		t.Errorf("sample sizes %d %d %d, want 6 5 6", s.TTFT.N, s.TPOT.N, s.E2E.N)
	}
	if want := map[string]int{"rejected-saturated": 2, "unknown": 1}; !reflect.DeepEqual(s.ShedReasons, want) {
		t.Errorf("shed reasons %v, want %v", s.ShedReasons, want)
	}
	wantReplicas := []Replica{
		{Name: "r1", Requests: 3, Completed: 3, PromptTokens: 1600, CachedTokens: 1300, PrefixHitRate: f(1300.0 / 1600)},
		{Name: "r2", Requests: 2, Completed: 2, PromptTokens: 5000, CachedTokens: 2000, PrefixHitRate: f(0.4)},
		{Name: "r3", Requests: 2, Completed: 1, PromptTokens: 400, CachedTokens: 0, PrefixHitRate: f(0)},
	}
	if !reflect.DeepEqual(r.Replicas, wantReplicas) {
		t.Errorf("replicas %+v\nwant %+v", r.Replicas, wantReplicas)
	}
}

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

func TestClassesHandComputed(t *testing.T) {
	r := Compute(sample(), Options{Window: Window{To: 10 * sec}})
	var names []string
	byName := map[string]Summary{}
	for _, c := range r.Classes {
		names = append(names, c.Name)
		byName[c.Name] = c
	}
	if want := []string{"batch", "default", "interactive"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("classes %v, want %v", names, want)
	}
	in := byName["interactive"]
	if in.Requests != 5 || in.Completed != 4 || in.MetSLO != 2 || in.Shed != 1 || in.Errors != 0 ||
		!near(in.SLOAttainment, 0.4) || !near(in.GoodputRPS, 0.2) || !near(in.ShedShare, 0.2) ||
		!near(in.PrefixHitRate, 1300.0/2600) || !near(in.TTFT.P50, 200) || !near(in.TPOT.P99, 60) {
		t.Errorf("interactive %+v", in)
	}
	b := byName["batch"]
	if b.Requests != 4 || b.Completed != 1 || b.MetSLO != 1 || b.Shed != 2 || b.Errors != 1 ||
		!near(b.SLOAttainment, 0.25) || !near(b.ShedShare, 0.5) ||
		!reflect.DeepEqual(b.ShedReasons, map[string]int{"rejected-saturated": 1, "unknown": 1}) {
		t.Errorf("batch %+v", b)
	}
	d := byName["default"]
	if d.Requests != 2 || d.Completed != 1 || d.MetSLO != 1 || d.Errors != 1 || d.ShedReasons != nil || !near(d.ShedShare, 0) ||
		d.SLOAttainment != nil || d.WithObjectives != 0 {
		t.Errorf("default %+v", d)
	}
}

func TestMetSLO(t *testing.T) {
	for _, tc := range []struct {
		o    Outcome
		want bool
	}{
		{Outcome{Status: 200}, true},
		{Outcome{Status: 204}, true},
		{Outcome{Status: 429}, false},
		{Outcome{Status: 500}, false},
		{Outcome{Status: 0}, false},
		{Outcome{Status: 200, SLOTTFT: 500 * msec, TTFT: 500 * msec}, true}, // at the objective meets it
		{Outcome{Status: 200, SLOTTFT: 500 * msec, TTFT: 500*msec + 1}, false},
		{Outcome{Status: 200, SLOTPOT: 50 * msec, TPOT: 51 * msec, OutputTokens: 2}, false},
		{Outcome{Status: 200, SLOTPOT: 50 * msec, TPOT: 51 * msec, OutputTokens: 1}, true},
		{Outcome{Status: 429, SLOTTFT: time.Hour}, false},
	} {
		if got := tc.o.MetSLO(); got != tc.want {
			t.Errorf("MetSLO(%+v) = %v, want %v", tc.o, got, tc.want)
		}
	}
}

func TestPercentileMethod(t *testing.T) {
	var outs []Outcome
	for i := 100; i >= 1; i-- { // unsorted on purpose
		outs = append(outs, Outcome{Status: 200, E2E: time.Duration(i) * msec, TTFT: time.Duration(i) * msec, OutputTokens: 1})
	}
	p := Compute(outs, Options{}).Overall.E2E
	if !near(p.P50, 50) || !near(p.P90, 90) || !near(p.P99, 99) || !near(p.Mean, 50.5) {
		t.Errorf("1..100 ms: p50 %v p90 %v p99 %v mean %v, want 50 90 99 50.5", *p.P50, *p.P90, *p.P99, *p.Mean)
	}
	p = Compute(outs[:4], Options{}).Overall.TTFT // 100, 99, 98, 97
	if !near(p.P50, 98) || !near(p.P99, 100) {
		t.Errorf("4 samples: p50 %v p99 %v, want 98 100", *p.P50, *p.P99)
	}
}

func TestWindowDefaultsAndFiltering(t *testing.T) {
	outs := []Outcome{
		{Start: 2 * sec, End: 3 * sec, Status: 200, OutputTokens: 10},
		{Start: 4 * sec, End: 12 * sec, Status: 200, OutputTokens: 10},
		{Start: 1 * sec, End: 2 * sec, Status: 200}, // before From
	}
	r := Compute(outs, Options{Window: Window{From: 2 * sec}})
	if r.Window != (Window{From: 2 * sec, To: 12 * sec}) || r.Overall.Requests != 2 || !near(r.Overall.CompletedRPS, 0.2) || !near(r.Overall.OutputTPS, 2) {
		t.Errorf("window %+v, overall %+v", r.Window, r.Overall)
	}
	if r := Compute(outs, Options{Window: Window{From: 2 * sec, To: 4 * sec}}); r.Overall.Requests != 1 {
		t.Errorf("[2s, 4s) holds %d requests, want 1", r.Overall.Requests)
	}
}

func TestEmpty(t *testing.T) {
	r := Compute(nil, Options{Replicas: []string{"b", "a"}})
	s := r.Overall
	if s.Requests != 0 || s.SLOAttainment != nil || s.GoodputRPS != nil || s.TTFT.P50 != nil || s.PrefixHitRate != nil || len(r.Classes) != 0 {
		t.Errorf("empty overall %+v", s)
	}
	if len(r.Replicas) != 2 || r.Replicas[0].Name != "a" || r.ReplicaMaxMin != nil {
		t.Errorf("replicas %+v ratio %v", r.Replicas, r.ReplicaMaxMin)
	}
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "max/min requests per replica: -") {
		t.Errorf("text:\n%s", b.String())
	}
	for _, line := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "all") {
			if fields := strings.Fields(line); len(fields) != 18 || fields[1] != "0" || fields[5] != "n/a" || fields[6] != "-" || fields[16] != "-" || fields[17] != "-" {
				t.Errorf("empty overall row %q", line)
			}
		}
	}
}

func TestIdleReplicaIsAHotSpot(t *testing.T) {
	r := Compute(sample(), Options{Window: Window{To: 10 * sec}, Replicas: []string{"r4"}})
	if len(r.Replicas) != 4 || r.Replicas[3] != (Replica{Name: "r4"}) || r.ReplicaMaxMin != nil {
		t.Fatalf("replicas %+v ratio %v", r.Replicas, deref(r.ReplicaMaxMin))
	}
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "max/min requests per replica: inf") {
		t.Errorf("text:\n%s", b.String())
	}
}

func TestPerStage(t *testing.T) {
	outs := []Outcome{
		{Stage: 0, Start: 1 * sec, End: 2 * sec, Status: 200, Class: "a"},
		{Stage: 0, Start: 3 * sec, End: 5 * sec, Status: 429, Class: "b", ShedReason: "rejected-saturated"},
		{Stage: 1, Start: 11 * sec, End: 12 * sec, Status: 200, Class: "a", SLOTTFT: sec},
		{Stage: 1, Start: 12 * sec, End: 13 * sec, Status: 200, Class: "a", SLOTTFT: sec},
	}
	// The window leaves stage 0 out of the totals but not out of the stages.
	r := Compute(outs, Options{Window: Window{From: 10 * sec, To: 20 * sec}, PerStage: true,
		StageWindows: []Window{{0, 10 * sec}}})
	if r.Overall.Requests != 2 || len(r.Stages) != 2 {
		t.Fatalf("overall %d requests, %d stages", r.Overall.Requests, len(r.Stages))
	}
	s0, s1 := r.Stages[0], r.Stages[1]
	if s0.Stage != 0 || s0.Window != (Window{0, 10 * sec}) || s0.Overall.Requests != 2 || !near(s0.Overall.CompletedRPS, 0.1) ||
		len(s0.Classes) != 2 || s0.Classes[1].Name != "b" || s0.Classes[1].Shed != 1 {
		t.Errorf("stage 0 %+v", s0)
	}
	// Stage 0 has no objectives: its attainment is n/a, not 100%.
	if s0.Overall.SLOAttainment != nil {
		t.Errorf("stage 0 without objectives has attainment %v", *s0.Overall.SLOAttainment)
	}
	// Without a given window, stage 1 spans its first Start to its last End.
	if s1.Window != (Window{11 * sec, 13 * sec}) || !near(s1.Overall.CompletedRPS, 1) || !near(s1.Overall.SLOAttainment, 1) {
		t.Errorf("stage 1 %+v", s1)
	}
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if !strings.Contains(out, "stage  from s  to s  class") || strings.Count(out, "\n") < 12 {
		t.Errorf("no stage table:\n%s", out)
	}
	// Stage 0's shed request is outside the measured window: the totals shed nothing.
	if strings.Contains(out, "shed by reason") {
		t.Errorf("text shows shedding outside the window:\n%s", out)
	}
	t.Logf("\n%s", out)
}

func TestJSONRoundTrip(t *testing.T) {
	r := Compute(sample(), Options{Window: Window{To: 10 * sec}, PerStage: true, Replicas: []string{"r0"}})
	var b bytes.Buffer
	if err := r.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*r, back) {
		t.Errorf("round trip differs:\n%+v\n%+v", *r, back)
	}
	var generic map[string]any
	_ = json.Unmarshal(b.Bytes(), &generic)
	overall := generic["overall"].(map[string]any)
	if _, ok := overall["slo_attainment"]; !ok || generic["replica_max_min_ratio"] != nil {
		t.Errorf("JSON keys: %v", overall)
	}
	if ttft := overall["ttft_ms"].(map[string]any); ttft["p50"] != 400.0 {
		t.Errorf("ttft_ms = %v", ttft)
	}
}

func TestTextTable(t *testing.T) {
	r := Compute(sample(), Options{Window: Window{To: 10 * sec}})
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"window 0.0s-10.0s (10.0 s)",
		"class  reqs  done  shed%  errs  slo%  goodput/s  done/s  out tok/s  ttft p50  ttft p90  ttft p99  tpot p50  tpot p99  e2e p50  e2e p99  hit%  queued p99",
		"all: rejected-saturated=2 (18.2%), unknown=1 (9.1%)",
		"batch: rejected-saturated=1 (25.0%), unknown=1 (25.0%)",
		"max/min requests per replica: 1.50",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("text lacks %q:\n%s", want, out)
		}
	}
	// Rows in a stable order: overall, then classes by name.
	var order []string
	for _, line := range strings.Split(out, "\n") {
		if fields := strings.Fields(line); len(fields) == 18 {
			order = append(order, fields[0])
		}
	}
	if want := []string{"all", "batch", "default", "interactive"}; !reflect.DeepEqual(order, want) {
		t.Errorf("row order %v, want %v", order, want)
	}
	if !strings.Contains(out, "400.0") || !strings.Contains(out, "36") {
		t.Errorf("figures missing:\n%s", out)
	}
	t.Logf("\n%s", out)
}
