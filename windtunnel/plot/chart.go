package plot

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
)

// Point is one measurement of a series: the value at a load.
type Point struct {
	Load    float64 // x: offered load as a multiple of capacity
	Value   float64 // y, in the chart's unit (percent for a Percent chart)
	Missing bool    // no measurement here: not drawn, and the line has a gap
}

// Series is one policy's results over a load ladder.
type Series struct {
	Name   string
	Points []Point
	// Reference draws the series in grey with a dashed line, beneath the others (a bound
	// such as a clairvoyant picker, not a contender).
	Reference bool
}

// Chart is one figure.
type Chart struct {
	Title, XLabel, YLabel string
	// LogY makes the Y axis logarithmic; points with a Value <= 0 are then skipped.
	LogY bool
	// Percent fixes the Y axis at 0..100 (unless YMin or YMax say otherwise); values are
	// percentages.
	Percent bool
	// YMin and YMax, when set, fix that end of the Y axis; points beyond it are clipped.
	YMin, YMax *float64
	Series     []Series
}

// Grid is several charts drawn as panels of one image, row by row, with one legend for all.
type Grid struct {
	Title  string // above all panels; may be empty
	Cols   int    // panels per row; 0 means min(3, len(Charts))
	Charts []Chart
	// PanelWidth and PanelHeight are each panel's size in pixels (0: DefaultPanelWidth and
	// DefaultPanelHeight). The image is Cols panels wide plus the legend, and as many
	// panels high as there are rows, plus the title.
	PanelWidth, PanelHeight int
}

// Image sizes, in pixels.
const (
	DefaultWidth       = 800
	DefaultHeight      = 500
	DefaultPanelWidth  = 480
	DefaultPanelHeight = 340
	MinWidth           = 200 // smallest chart or panel width accepted
	MinHeight          = 150 // smallest chart or panel height accepted
	MaxSide            = 12000
)

// Float returns a pointer to v, for Chart.YMin and Chart.YMax.
func Float(v float64) *float64 { return &v }

// xy is a drawable point.
type xy struct{ x, y float64 }

// prepared is a validated chart reduced to what is drawn.
type prepared struct {
	chart  Chart
	series []preparedSeries
	// The Y axis range, and the X range of the drawn points.
	xmin, xmax, ymin, ymax float64
}

type preparedSeries struct {
	name     string
	ref      bool
	segments [][]xy // runs of consecutive drawn points: one line each
	points   []xy   // every drawn point: one marker each
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// prepare validates c and reduces it to segments and markers. The error names the chart.
func prepare(c Chart) (*prepared, error) {
	p, err := prepareChart(c)
	if err != nil {
		return nil, fmt.Errorf("chart %q: %w", c.Title, err)
	}
	return p, nil
}

func prepareChart(c Chart) (*prepared, error) {
	if len(c.Series) == 0 {
		return nil, errors.New("no series")
	}
	if c.LogY && c.Percent {
		return nil, errors.New("LogY and Percent cannot both be set")
	}
	for _, b := range []struct {
		name string
		v    *float64
	}{{"YMin", c.YMin}, {"YMax", c.YMax}} {
		if b.v == nil {
			continue
		}
		if !finite(*b.v) {
			return nil, fmt.Errorf("%s is %v", b.name, *b.v)
		}
		if c.LogY && *b.v <= 0 {
			return nil, fmt.Errorf("%s is %v, not positive, on a log axis", b.name, *b.v)
		}
	}
	if c.YMin != nil && c.YMax != nil && *c.YMin >= *c.YMax {
		return nil, fmt.Errorf("YMin %v is not below YMax %v", *c.YMin, *c.YMax)
	}

	p := &prepared{chart: c, xmin: math.Inf(1), xmax: math.Inf(-1), ymin: math.Inf(1), ymax: math.Inf(-1)}
	names := make(map[string]bool, len(c.Series))
	for si, s := range c.Series {
		if s.Name == "" {
			return nil, fmt.Errorf("series %d has no name", si)
		}
		if names[s.Name] {
			return nil, fmt.Errorf("two series are named %q", s.Name)
		}
		names[s.Name] = true
		if len(s.Points) == 0 {
			return nil, fmt.Errorf("series %q has no points", s.Name)
		}
		for i, pt := range s.Points {
			if pt.Missing {
				continue
			}
			if !finite(pt.Load) {
				return nil, fmt.Errorf("series %q point %d: Load is %v (set Missing to leave a gap)", s.Name, i, pt.Load)
			}
			if !finite(pt.Value) {
				return nil, fmt.Errorf("series %q point %d (load %v): Value is %v (set Missing to leave a gap)", s.Name, i, pt.Load, pt.Value)
			}
		}

		// Points in increasing Load, Missing ones included, so that a gap falls at the load
		// of its Missing point (a NaN Load sorts first: such a gap breaks nothing).
		pts := slices.Clone(s.Points)
		slices.SortStableFunc(pts, func(a, b Point) int { return cmp.Compare(a.Load, b.Load) })

		ps := preparedSeries{name: s.Name, ref: s.Reference}
		var run []xy
		for _, pt := range pts {
			if pt.Missing || (c.LogY && pt.Value <= 0) {
				if len(run) > 0 {
					ps.segments = append(ps.segments, run)
					run = nil
				}
				continue
			}
			q := xy{pt.Load, pt.Value}
			run = append(run, q)
			ps.points = append(ps.points, q)
			p.xmin, p.xmax = min(p.xmin, q.x), max(p.xmax, q.x)
			p.ymin, p.ymax = min(p.ymin, q.y), max(p.ymax, q.y)
		}
		if len(run) > 0 {
			ps.segments = append(ps.segments, run)
		}
		p.series = append(p.series, ps)
	}
	if math.IsInf(p.xmin, 1) {
		if c.LogY {
			return nil, errors.New("nothing to draw: every point is Missing or not positive on the log axis")
		}
		return nil, errors.New("nothing to draw: every point is Missing")
	}
	p.ymin, p.ymax = yRange(c, p.ymin, p.ymax)
	return p, nil
}

// yRange returns the Y axis range for data spanning lo..hi.
func yRange(c Chart, lo, hi float64) (float64, float64) {
	if c.Percent {
		lo, hi = 0, 100
	} else if c.LogY {
		// A little room above and below, as a factor, so extreme markers clear the frame.
		if lo == hi {
			lo, hi = lo/2, hi*2
		} else {
			f := math.Pow(hi/lo, 0.03)
			lo, hi = lo/f, hi*f
		}
	} else if lo == hi {
		d := math.Max(math.Abs(lo)*0.1, 1)
		lo, hi = lo-d, hi+d
	}
	if c.YMin != nil {
		lo = *c.YMin
	}
	if c.YMax != nil {
		hi = *c.YMax
	}
	if lo >= hi { // one end fixed beyond all the data
		switch {
		case c.YMin != nil && c.LogY:
			hi = lo * 10
		case c.YMin != nil:
			hi = lo + math.Max(math.Abs(lo), 1)
		case c.LogY:
			lo = hi / 10
		default:
			lo = hi - math.Max(math.Abs(hi), 1)
		}
	}
	return lo, hi
}

// checkSize applies the default to zero sizes and refuses the rest out of range.
func checkSize(what string, w, h, defW, defH int) (int, int, error) {
	if w == 0 {
		w = defW
	}
	if h == 0 {
		h = defH
	}
	if w < MinWidth || h < MinHeight || w > MaxSide || h > MaxSide {
		return 0, 0, fmt.Errorf("plot: %s size %dx%d pixels is outside %dx%d..%dx%d", what, w, h, MinWidth, MinHeight, MaxSide, MaxSide)
	}
	return w, h, nil
}
