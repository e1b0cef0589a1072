package workload

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// Stage is one step of a rate ladder: Poisson arrivals at Rate requests per second for
// Duration. A stage with rate 0 is a pause.
type Stage struct {
	Rate     float64       `json:"rate"`
	Duration time.Duration `json:"duration"`
	// Warmup marks a stage whose requests only fill caches and queues; reports leave the
	// leading warm-up stages out of the measured window (see Ladder.WarmupEnd).
	Warmup bool `json:"warmup,omitempty"`
}

// Ladder is a sequence of stages, run back to back from time 0.
type Ladder []Stage

// SharedPrefixLadderName is the name ParseLadder accepts for SharedPrefixLadder.
const SharedPrefixLadderName = "shared-prefix"

// SharedPrefixLadder is the rate ladder of llm-d's published shared-prefix benchmark: a
// warm-up of 15 req/s for 50 s, then 16 stages from 3 to 60 req/s, 8m22s in all (17,084
// requests expected). It was sized for 8 replicas of a 32B model on 16 H100s; use Scale and
// Stretch to fit it to a smaller pool or machine.
func SharedPrefixLadder() Ladder {
	steps := [...][2]float64{
		{15, 50}, {3, 20}, {10, 20}, {15, 20}, {20, 38}, {22, 34}, {25, 30}, {30, 25}, {35, 21},
		{40, 38}, {43, 36}, {46, 33}, {49, 30}, {52, 29}, {55, 27}, {57, 26}, {60, 25},
	}
	l := make(Ladder, len(steps))
	for i, s := range steps {
		l[i] = Stage{Rate: s[0], Duration: time.Duration(s[1]) * time.Second, Warmup: i == 0}
	}
	return l
}

// ConstantLadder is a single stage of rate req/s for d.
func ConstantLadder(rate float64, d time.Duration) Ladder {
	return Ladder{{Rate: rate, Duration: d}}
}

// Scale returns a copy of l with every rate multiplied by f, e.g. 0.25 to offer a quarter
// of the load to a pool a quarter the size.
func (l Ladder) Scale(f float64) Ladder {
	out := append(Ladder(nil), l...)
	for i := range out {
		out[i].Rate *= f
	}
	return out
}

// Stretch returns a copy of l with every duration multiplied by f, e.g. 0.1 for a quick run
// that keeps the ladder's shape.
func (l Ladder) Stretch(f float64) Ladder {
	out := append(Ladder(nil), l...)
	for i := range out {
		out[i].Duration = time.Duration(math.Round(float64(out[i].Duration) * f))
	}
	return out
}

// Duration is the ladder's total length.
func (l Ladder) Duration() time.Duration {
	var d time.Duration
	for _, s := range l {
		d += s.Duration
	}
	return d
}

// Start is the offset at which stage i begins (the ladder's length for i == len(l)).
func (l Ladder) Start(i int) time.Duration {
	var d time.Duration
	for _, s := range l[:i] {
		d += s.Duration
	}
	return d
}

// StageAt is the index of the stage running at offset t, or -1 when t is outside the ladder.
func (l Ladder) StageAt(t time.Duration) int {
	if t < 0 {
		return -1
	}
	var end time.Duration
	for i, s := range l {
		end += s.Duration
		if t < end {
			return i
		}
	}
	return -1
}

// WarmupEnd is the end of the leading warm-up stages: the start of the measured window.
func (l Ladder) WarmupEnd() time.Duration {
	var d time.Duration
	for _, s := range l {
		if !s.Warmup {
			break
		}
		d += s.Duration
	}
	return d
}

// ExpectedRequests is the mean number of arrivals over the whole ladder.
func (l Ladder) ExpectedRequests() float64 {
	var n float64
	for _, s := range l {
		n += s.Rate * s.Duration.Seconds()
	}
	return n
}

// Validate reports a ladder that cannot drive arrivals.
func (l Ladder) Validate() error {
	if len(l) == 0 {
		return errors.New("workload: empty rate ladder")
	}
	for i, s := range l {
		if !(s.Rate >= 0) || math.IsInf(s.Rate, 0) {
			return fmt.Errorf("workload: ladder stage %d: rate %v req/s is not a finite non-negative number", i, s.Rate)
		}
		if s.Duration <= 0 {
			return fmt.Errorf("workload: ladder stage %d: duration %v is not positive", i, s.Duration)
		}
	}
	return nil
}

// String renders l in the form ParseLadder reads, e.g. "warmup:15x50s,3x20s".
func (l Ladder) String() string {
	var b strings.Builder
	for i, s := range l {
		if i > 0 {
			b.WriteByte(',')
		}
		if s.Warmup {
			b.WriteString("warmup:")
		}
		b.WriteString(strconv.FormatFloat(s.Rate, 'g', -1, 64))
		b.WriteByte('x')
		b.WriteString(s.Duration.String())
	}
	return b.String()
}

// ParseLadder reads a ladder from a command-line flag: either a preset name
// (SharedPrefixLadderName) or comma-separated stages RATExDURATION, where DURATION is a Go
// duration or a plain number of seconds and a "warmup:" prefix marks a warm-up stage, e.g.
// "warmup:15x50,3x20,10x20" or "8x2m".
func ParseLadder(s string) (Ladder, error) {
	s = strings.TrimSpace(s)
	if s == SharedPrefixLadderName {
		return SharedPrefixLadder(), nil
	}
	var l Ladder
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		var st Stage
		if rest, ok := strings.CutPrefix(part, "warmup:"); ok {
			st.Warmup, part = true, rest
		}
		rate, dur, ok := strings.Cut(part, "x")
		if !ok {
			return nil, fmt.Errorf("workload: ladder stage %q: want RATExDURATION, e.g. 10x20s", part)
		}
		var err error
		if st.Rate, err = strconv.ParseFloat(rate, 64); err != nil {
			return nil, fmt.Errorf("workload: ladder stage %q: bad rate %q", part, rate)
		}
		if secs, err := strconv.ParseFloat(dur, 64); err == nil {
			st.Duration = time.Duration(math.Round(secs * float64(time.Second)))
		} else if st.Duration, err = time.ParseDuration(dur); err != nil {
			return nil, fmt.Errorf("workload: ladder stage %q: bad duration %q", part, dur)
		}
		l = append(l, st)
	}
	if err := l.Validate(); err != nil {
		return nil, err
	}
	return l, nil
}

// Poisson draws arrival times of a Poisson process whose rate follows a ladder: within a
// stage, inter-arrival times are exponential with the stage's rate. A draw that would cross
// into the next stage is discarded and drawing restarts at the boundary with the next rate,
// which is exact because the exponential distribution is memoryless.
type Poisson struct {
	ladder Ladder
	scale  float64
	rng    *rand.Rand
	stage  int
	end    time.Duration // end of the current stage
	t      time.Duration // the last arrival, or the current stage's start
}

// NewPoisson returns the arrivals of ladder (which must be valid) for seed.
func NewPoisson(ladder Ladder, seed uint64) *Poisson {
	return newPoisson(ladder, 1, rand.New(rand.NewPCG(seed, streamArrivals)))
}

// newPoisson is NewPoisson with rates multiplied by scale, for processes whose events are
// sessions rather than requests.
func newPoisson(ladder Ladder, scale float64, rng *rand.Rand) *Poisson {
	p := &Poisson{ladder: ladder, scale: scale, rng: rng}
	if len(ladder) > 0 {
		p.end = ladder[0].Duration
	}
	return p
}

// Next returns the next arrival's offset and stage index; false once the ladder has ended.
func (p *Poisson) Next() (at time.Duration, stage int, ok bool) {
	for p.stage < len(p.ladder) {
		if rate := p.ladder[p.stage].Rate * p.scale; rate > 0 {
			// Compare in float first: a tiny rate gives gaps beyond Duration's range.
			if gap := p.rng.ExpFloat64() / rate * float64(time.Second); gap < float64(p.end-p.t) {
				p.t += time.Duration(gap)
				return p.t, p.stage, true
			}
		}
		p.t = p.end
		p.stage++
		if p.stage < len(p.ladder) {
			p.end += p.ladder[p.stage].Duration
		}
	}
	return 0, 0, false
}

// Independent random streams of one seed (the PCG's second word). Keeping arrivals apart from
// content means that changing, say, prompt lengths leaves the arrival times unchanged.
const (
	streamArrivals uint64 = 0x61727269 // "arri"
	streamContent  uint64 = 0x636f6e74 // "cont"
	streamSessions uint64 = 0x73657373 // "sess"
)
