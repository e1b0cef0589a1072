package workload

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestSharedPrefixLadderMatchesReference(t *testing.T) {
	l := SharedPrefixLadder()
	want := "warmup:15x50s,3x20s,10x20s,15x20s,20x38s,22x34s,25x30s,30x25s,35x21s,40x38s,43x36s,46x33s,49x30s,52x29s,55x27s,57x26s,60x25s"
	if got := l.String(); got != want {
		t.Fatalf("ladder = %s\nwant     %s", got, want)
	}
	if got := l.Duration(); got != 502*time.Second {
		t.Errorf("Duration = %v, want 8m22s", got)
	}
	if got := l.ExpectedRequests(); got != 17084 {
		t.Errorf("ExpectedRequests = %v, want 17084", got)
	}
	if got := l.WarmupEnd(); got != 50*time.Second {
		t.Errorf("WarmupEnd = %v, want 50s", got)
	}
	// The preset is a fresh copy: changing one must not change the next.
	l[0].Rate = 1
	if SharedPrefixLadder()[0].Rate != 15 {
		t.Error("SharedPrefixLadder returned shared state")
	}
}

func TestLadderArithmetic(t *testing.T) {
	l := Ladder{{Rate: 10, Duration: 20 * time.Second, Warmup: true}, {Rate: 4, Duration: 10 * time.Second}}
	s := l.Scale(0.5).Stretch(0.1)
	if s[0].Rate != 5 || s[1].Rate != 2 || s[0].Duration != 2*time.Second || s[1].Duration != time.Second || !s[0].Warmup {
		t.Errorf("Scale(0.5).Stretch(0.1) = %v", s)
	}
	if l[0].Rate != 10 || l[0].Duration != 20*time.Second {
		t.Error("Scale/Stretch modified the receiver")
	}
	for _, tc := range []struct {
		at   time.Duration
		want int
	}{{-1, -1}, {0, 0}, {20*time.Second - 1, 0}, {20 * time.Second, 1}, {30*time.Second - 1, 1}, {30 * time.Second, -1}} {
		if got := l.StageAt(tc.at); got != tc.want {
			t.Errorf("StageAt(%v) = %d, want %d", tc.at, got, tc.want)
		}
	}
	if l.Start(1) != 20*time.Second || l.Start(2) != 30*time.Second {
		t.Errorf("Start(1), Start(2) = %v, %v", l.Start(1), l.Start(2))
	}
	if c := ConstantLadder(3, time.Minute); len(c) != 1 || c[0].Rate != 3 || c[0].Duration != time.Minute {
		t.Errorf("ConstantLadder = %v", c)
	}
}

func TestParseLadder(t *testing.T) {
	l, err := ParseLadder("warmup:15x50, 3x20s ,0.5x2m,0x1.5")
	if err != nil {
		t.Fatal(err)
	}
	want := Ladder{{15, 50 * time.Second, true}, {3, 20 * time.Second, false}, {0.5, 2 * time.Minute, false}, {0, 1500 * time.Millisecond, false}}
	if l.String() != want.String() {
		t.Errorf("ParseLadder = %v, want %v", l, want)
	}
	if back, err := ParseLadder(l.String()); err != nil || back.String() != l.String() {
		t.Errorf("round trip of %v = %v, %v", l, back, err)
	}
	if p, err := ParseLadder(SharedPrefixLadderName); err != nil || p.String() != SharedPrefixLadder().String() {
		t.Errorf("preset: %v, %v", p, err)
	}
	for _, bad := range []string{"", "10", "ax10", "10xb", "10x0", "-1x10", "NaNx10", "10x-5s"} {
		if _, err := ParseLadder(bad); err == nil {
			t.Errorf("ParseLadder(%q) succeeded", bad)
		}
	}
}

func TestPoissonMeanRate(t *testing.T) {
	const rate, secs = 50.0, 2000
	p := NewPoisson(ConstantLadder(rate, secs*time.Second), 7)
	n := 0
	var last, sumGap, sumSq float64
	for {
		at, stage, ok := p.Next()
		if !ok {
			break
		}
		if stage != 0 || at < 0 || at >= secs*time.Second {
			t.Fatalf("arrival at %v in stage %d", at, stage)
		}
		gap := at.Seconds() - last
		sumGap += gap
		sumSq += gap * gap
		last = at.Seconds()
		n++
	}
	if got := float64(n) / secs; math.Abs(got-rate)/rate > 0.02 {
		t.Errorf("mean rate %.2f req/s, want %.0f within 2%%", got, rate)
	}
	// Exponential gaps: the coefficient of variation is 1.
	mean := sumGap / float64(n)
	cv := math.Sqrt(sumSq/float64(n)-mean*mean) / mean
	if math.Abs(cv-1) > 0.03 {
		t.Errorf("inter-arrival coefficient of variation %.3f, want 1 (exponential)", cv)
	}
}

func TestPoissonFollowsLadder(t *testing.T) {
	l := Ladder{
		{Rate: 40, Duration: 100 * time.Second, Warmup: true},
		{Rate: 0, Duration: 10 * time.Second},
		{Rate: 10, Duration: 300 * time.Second},
		{Rate: 100, Duration: 50 * time.Second},
	}
	counts := make([]int, len(l))
	p := NewPoisson(l, 3)
	prev := time.Duration(-1)
	for {
		at, stage, ok := p.Next()
		if !ok {
			break
		}
		if at < prev {
			t.Fatalf("arrivals out of order: %v after %v", at, prev)
		}
		prev = at
		if at < l.Start(stage) || at >= l.Start(stage+1) || l.StageAt(at) != stage {
			t.Fatalf("arrival at %v labelled stage %d, which spans [%v, %v)", at, stage, l.Start(stage), l.Start(stage+1))
		}
		counts[stage]++
	}
	for i, s := range l {
		want := s.Rate * s.Duration.Seconds()
		// Four standard deviations of a Poisson count.
		if tol := 4 * math.Sqrt(want); math.Abs(float64(counts[i])-want) > tol {
			t.Errorf("stage %d: %d arrivals, want %.0f +- %.0f", i, counts[i], want, tol)
		}
	}
	if _, _, ok := p.Next(); ok {
		t.Error("Next after the end returned an arrival")
	}
}

func TestPoissonTinyRateEnds(t *testing.T) {
	p := NewPoisson(Ladder{{Rate: 1e-300, Duration: time.Hour}, {Rate: 1, Duration: time.Second}}, 1)
	for range 100 {
		at, stage, ok := p.Next()
		if !ok {
			return
		}
		if stage != 1 || at < time.Hour {
			t.Fatalf("arrival at %v in stage %d", at, stage)
		}
	}
	t.Fatal("stream did not end")
}

func TestLadderValidate(t *testing.T) {
	for _, l := range []Ladder{nil, {{Rate: math.Inf(1), Duration: 1}}, {{Rate: math.NaN(), Duration: 1}}, {{Rate: 1}}} {
		if err := l.Validate(); err == nil || !strings.HasPrefix(err.Error(), "workload: ") {
			t.Errorf("Validate(%v) = %v", l, err)
		}
	}
}
