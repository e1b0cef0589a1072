package plot

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var policies = []string{"round-robin", "least-queue", "prefix-aware", "augur", "augur-noslo", "random"}

// ladder makes a load ladder of n steps from 0.25 to n*0.25 times capacity.
func ladder(n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = 0.25 * float64(i+1)
	}
	return out
}

// sampleCharts returns the three charts of one workload: attainment, TTFT p50 and p99, each
// with the six policies and a clairvoyant reference (seven series), some points missing.
func sampleCharts(workload string, shift float64) []Chart {
	loads := ladder(8)
	att := Chart{Title: workload + ": SLO attainment", XLabel: "load (× capacity)", YLabel: "attainment (%)", Percent: true}
	p50 := Chart{Title: workload + ": TTFT p50", XLabel: "load (× capacity)", YLabel: "ms", LogY: true}
	p99 := Chart{Title: workload + ": TTFT p99", XLabel: "load (× capacity)", YLabel: "ms", LogY: true}
	names := append(append([]string{}, policies...), "clairvoyant")
	for k, name := range names {
		q := float64(k) / float64(len(names)) // 0 is the worst policy, clairvoyant the best
		if name == "clairvoyant" {
			q = 1.2
		}
		var sa, s50, s99 Series
		sa.Name, s50.Name, s99.Name = name, name, name
		ref := name == "clairvoyant"
		sa.Reference, s50.Reference, s99.Reference = ref, ref, ref
		for i, l := range loads {
			over := math.Max(0, l-0.6-0.3*q+shift)
			a := 100 * math.Exp(-3*over*over)
			t50 := 40 * (1 + 4*over*over*(1.5-q))
			t99 := t50 * (2.5 + 3*over)
			missing := name == "random" && i == 5 || name == "augur-noslo" && i == 7
			sa.Points = append(sa.Points, Point{Load: l, Value: a, Missing: missing})
			s50.Points = append(s50.Points, Point{Load: l, Value: t50, Missing: missing})
			s99.Points = append(s99.Points, Point{Load: l, Value: t99, Missing: missing})
		}
		att.Series = append(att.Series, sa)
		p50.Series = append(p50.Series, s50)
		p99.Series = append(p99.Series, s99)
	}
	return []Chart{att, p50, p99}
}

func sampleGrid() Grid {
	g := Grid{Title: "Policy comparison (sample data)", Cols: 3}
	g.Charts = append(g.Charts, sampleCharts("shared-prefix", 0)...)
	g.Charts = append(g.Charts, sampleCharts("multi-turn", 0.3)...)
	return g
}

func decode(t *testing.T, b []byte) image.Image {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("decoding the PNG: %v", err)
	}
	return img
}

// checkDrawn fails unless the image is w×h, mostly white but not blank, and shows the
// first series' colour.
func checkDrawn(t *testing.T, img image.Image, w, h int) {
	t.Helper()
	if b := img.Bounds(); b.Dx() != w || b.Dy() != h {
		t.Fatalf("image is %dx%d, want %dx%d", b.Dx(), b.Dy(), w, h)
	}
	rgba, ok := img.(*image.RGBA) // what image/png decodes an opaque RGB image to
	if !ok {
		t.Fatalf("decoded a %T, want *image.RGBA", img)
	}
	var nonWhite, first int
	want := color.RGBAModel.Convert(palette[0]).(color.RGBA)
	for i := 0; i+3 < len(rgba.Pix); i += 4 {
		r, g, b := rgba.Pix[i], rgba.Pix[i+1], rgba.Pix[i+2]
		if r != 0xFF || g != 0xFF || b != 0xFF {
			nonWhite++
		}
		if r == want.R && g == want.G && b == want.B {
			first++
		}
	}
	total := w * h
	if nonWhite < total/100 || nonWhite > total/2 {
		t.Errorf("%d of %d pixels are not white: blank or flooded", nonWhite, total)
	}
	if first < 20 {
		t.Errorf("only %d pixels in the first series' colour", first)
	}
}

func TestWritePNGDeterministicAndDrawn(t *testing.T) {
	for _, c := range sampleCharts("shared-prefix", 0) {
		var a, b bytes.Buffer
		if err := WritePNG(&a, c, 480, 300); err != nil {
			t.Fatal(err)
		}
		if err := WritePNG(&b, c, 480, 300); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a.Bytes(), b.Bytes()) {
			t.Errorf("%s: two renderings differ", c.Title)
		}
		checkDrawn(t, decode(t, a.Bytes()), 480, 300)
	}
}

func TestGridDeterministicAndDrawn(t *testing.T) {
	g := sampleGrid()
	g.PanelWidth, g.PanelHeight = 300, 200
	var a, b bytes.Buffer
	if err := WriteGridPNG(&a, g); err != nil {
		t.Fatal(err)
	}
	if err := WriteGridPNG(&b, g); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("two renderings of the grid differ")
	}
	img := decode(t, a.Bytes())
	w, h := img.Bounds().Dx(), img.Bounds().Dy()
	if w < 3*300 || w > 3*300+300 || h < 2*200 || h > 2*200+80 {
		t.Errorf("grid is %dx%d, want 3 panels of 300 plus a legend by 2 of 200 plus a title", w, h)
	}
	checkDrawn(t, img, w, h)

	// An incomplete last row, and no title.
	g.Title, g.Charts, g.Cols = "", g.Charts[:3], 2
	var c bytes.Buffer
	if err := WriteGridPNG(&c, g); err != nil {
		t.Fatal(err)
	}
	if img := decode(t, c.Bytes()); img.Bounds().Dy() >= h {
		t.Errorf("a grid of two rows without a title is %d pixels high, as high as one with", img.Bounds().Dy())
	}
}

// Rendering from several goroutines at once (gonum's font cache is shared) gives the same
// bytes as rendering alone.
func TestConcurrentRendering(t *testing.T) {
	c := sampleCharts("w", 0)[2]
	var want bytes.Buffer
	if err := WritePNG(&want, c, 300, 200); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 3)
	outs := make([]bytes.Buffer, 3)
	for i := range errs {
		wg.Go(func() { errs[i] = WritePNG(&outs[i], c, 300, 200) })
	}
	wg.Wait()
	for i := range errs {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if !bytes.Equal(outs[i].Bytes(), want.Bytes()) {
			t.Errorf("goroutine %d rendered different bytes", i)
		}
	}
}

func TestStylesDistinct(t *testing.T) {
	var series []Series
	for i := range 8 {
		series = append(series, Series{Name: string(rune('a' + i)), Points: []Point{{Load: 1, Value: 1}}})
	}
	series = append(series, Series{Name: "ref", Reference: true, Points: []Point{{Load: 1, Value: 1}}})
	pc, err := prepare(Chart{Series: series})
	if err != nil {
		t.Fatal(err)
	}
	entries, _ := assignStyles([]*prepared{pc})
	seenColor := map[color.Color]string{}
	seenGlyph := map[any]string{}
	for _, e := range entries[:8] {
		if o, ok := seenColor[e.sty.line.Color]; ok {
			t.Errorf("%s and %s share a colour", o, e.name)
		}
		if o, ok := seenGlyph[e.sty.glyph.Shape]; ok {
			t.Errorf("%s and %s share a marker", o, e.name)
		}
		seenColor[e.sty.line.Color], seenGlyph[e.sty.glyph.Shape] = e.name, e.name
	}
	ref := entries[8]
	if _, ok := seenColor[ref.sty.line.Color]; ok || len(ref.sty.line.Dashes) == 0 {
		t.Errorf("the reference series is not drawn in a grey dashed line of its own: %+v", ref.sty.line)
	}
	r, g, b, _ := ref.sty.line.Color.RGBA()
	if r != g || g != b {
		t.Errorf("reference colour %v is not grey", ref.sty.line.Color)
	}
}

// In a grid, a policy keeps its look in every panel even when panels list series in
// different orders or lack some.
func TestGridStylesByName(t *testing.T) {
	a, _ := prepare(Chart{Series: []Series{{Name: "x", Points: []Point{{Load: 1, Value: 1}}}, {Name: "y", Points: []Point{{Load: 1, Value: 1}}}}})
	b, _ := prepare(Chart{Series: []Series{{Name: "z", Points: []Point{{Load: 1, Value: 1}}}, {Name: "y", Points: []Point{{Load: 1, Value: 1}}}}})
	entries, styles := assignStyles([]*prepared{a, b})
	var names []string
	for _, e := range entries {
		names = append(names, e.name)
	}
	if got := strings.Join(names, ","); got != "x,y,z" {
		t.Errorf("legend order %s, want x,y,z", got)
	}
	if styles["y"].line.Color != palette[1] || styles["z"].line.Color != palette[2] {
		t.Error("styles are not assigned by name in order of first appearance")
	}
}

func TestMissingAndLogSkipsMakeGaps(t *testing.T) {
	pc, err := prepare(Chart{LogY: true, Series: []Series{{Name: "s", Points: []Point{
		{Load: 0.5, Value: 10}, {Load: 0.25, Value: 5}, // out of order: sorted
		{Load: 0.75, Missing: true, Value: math.NaN()},
		{Load: 1, Value: 20}, {Load: 1.25, Value: 30},
		{Load: 1.5, Value: 0}, // not drawable on a log axis
		{Load: 1.75, Value: 40},
	}}}})
	if err != nil {
		t.Fatal(err)
	}
	s := pc.series[0]
	var lens []int
	for _, seg := range s.segments {
		lens = append(lens, len(seg))
	}
	if len(lens) != 3 || lens[0] != 2 || lens[1] != 2 || lens[2] != 1 {
		t.Errorf("segments of lengths %v, want [2 2 1]", lens)
	}
	if len(s.points) != 5 || s.points[0].x != 0.25 {
		t.Errorf("points %v", s.points)
	}
	if pc.ymin >= 5 || pc.ymax <= 40 || pc.ymin <= 0 {
		t.Errorf("log range %v..%v does not hold 5..40 with a margin", pc.ymin, pc.ymax)
	}
	var buf bytes.Buffer
	if err := WritePNG(&buf, pc.chart, 400, 300); err != nil {
		t.Fatal(err)
	}
}

func TestRanges(t *testing.T) {
	one := []Series{{Name: "s", Points: []Point{{Load: 1, Value: 50}}}}
	for _, tc := range []struct {
		name   string
		c      Chart
		lo, hi float64
	}{
		{"percent", Chart{Percent: true, Series: one}, 0, 100},
		{"percent zoomed", Chart{Percent: true, YMin: Float(40), Series: one}, 40, 100},
		{"single value linear", Chart{Series: one}, 45, 55},
		{"single value log", Chart{LogY: true, Series: one}, 25, 100},
		{"fixed max below data", Chart{YMax: Float(10), Series: one}, 0, 10},
		{"fixed min above data, log", Chart{LogY: true, YMin: Float(100), Series: one}, 100, 1000},
	} {
		pc, err := prepare(tc.c)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if pc.ymin != tc.lo || pc.ymax != tc.hi {
			t.Errorf("%s: range %v..%v, want %v..%v", tc.name, pc.ymin, pc.ymax, tc.lo, tc.hi)
		}
		var buf bytes.Buffer
		if err := WritePNG(&buf, tc.c, 300, 200); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

func TestInvalidInput(t *testing.T) {
	ok := []Point{{Load: 1, Value: 1}, {Load: 2, Value: 2}}
	s := func(name string, pts ...Point) Series { return Series{Name: name, Points: pts} }
	for _, tc := range []struct {
		name string
		c    Chart
		want string
	}{
		{"no series", Chart{Title: "t"}, `chart "t": no series`},
		{"unnamed", Chart{Series: []Series{{Points: ok}}}, "series 0 has no name"},
		{"duplicate", Chart{Series: []Series{s("a", ok...), s("a", ok...)}}, `two series are named "a"`},
		{"empty series", Chart{Series: []Series{s("a")}}, `series "a" has no points`},
		{"NaN value", Chart{Series: []Series{s("a", Point{Load: 1, Value: math.NaN()})}}, `series "a" point 0 (load 1): Value is NaN`},
		{"Inf value", Chart{Series: []Series{s("a", ok[0], Point{Load: 2, Value: math.Inf(1)})}}, "Value is +Inf"},
		{"Inf load", Chart{Series: []Series{s("a", Point{Load: math.Inf(-1), Value: 1})}}, "Load is -Inf"},
		{"all missing", Chart{Series: []Series{s("a", Point{Missing: true})}}, "nothing to draw"},
		{"log, nothing positive", Chart{LogY: true, Series: []Series{s("a", Point{Load: 1, Value: 0}, Point{Load: 2, Value: -3})}}, "not positive on the log axis"},
		{"log and percent", Chart{LogY: true, Percent: true, Series: []Series{s("a", ok...)}}, "LogY and Percent"},
		{"min above max", Chart{YMin: Float(5), YMax: Float(5), Series: []Series{s("a", ok...)}}, "YMin 5 is not below YMax 5"},
		{"NaN bound", Chart{YMax: Float(math.NaN()), Series: []Series{s("a", ok...)}}, "YMax is NaN"},
		{"log, zero bound", Chart{LogY: true, YMin: Float(0), Series: []Series{s("a", ok...)}}, "YMin is 0, not positive, on a log axis"},
	} {
		var buf bytes.Buffer
		err := WritePNG(&buf, tc.c, 400, 300)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "plot: ") {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
		if buf.Len() != 0 {
			t.Errorf("%s: %d bytes written on error", tc.name, buf.Len())
		}
		if err := WriteGridPNG(&buf, Grid{Charts: []Chart{sampleCharts("w", 0)[0], tc.c}}); err == nil || !strings.Contains(err.Error(), "panel 1") {
			t.Errorf("%s: grid error %v does not name panel 1", tc.name, err)
		}
	}

	c := sampleCharts("w", 0)[0]
	for _, sz := range [][2]int{{-1, 300}, {100, 300}, {400, 100}, {20000, 300}} {
		if err := WritePNG(new(bytes.Buffer), c, sz[0], sz[1]); err == nil {
			t.Errorf("size %v accepted", sz)
		}
	}
	for _, g := range []Grid{{}, {Cols: -1, Charts: []Chart{c}}, {Charts: []Chart{c}, PanelWidth: 50}, {Cols: 1, Charts: make([]Chart, 40), PanelHeight: 400}} {
		if err := WriteGridPNG(new(bytes.Buffer), g); err == nil {
			t.Errorf("grid %d charts, %d cols, %dx%d accepted", len(g.Charts), g.Cols, g.PanelWidth, g.PanelHeight)
		}
	}
	// A legend too wide for the chart is an error, not a squashed plot.
	long := c
	long.Series = []Series{s(strings.Repeat("very long policy name ", 8), ok...)}
	if err := WritePNG(new(bytes.Buffer), long, 300, 200); err == nil || !strings.Contains(err.Error(), "no room") {
		t.Errorf("a legend wider than the chart: %v", err)
	}
}

func TestSaveFiles(t *testing.T) {
	dir := t.TempDir()
	if err := SavePNG(filepath.Join(dir, "c.png"), sampleCharts("w", 0)[1]); err != nil {
		t.Fatal(err)
	}
	g := Grid{Charts: sampleCharts("w", 0)[:2], PanelWidth: MinWidth, PanelHeight: MinHeight}
	if err := SaveGridPNG(filepath.Join(dir, "g.png"), g); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"c.png", "g.png"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if img := decode(t, b); f == "c.png" {
			checkDrawn(t, img, DefaultWidth, DefaultHeight)
		}
	}
	if err := SavePNG(filepath.Join(dir, "missing", "c.png"), sampleCharts("w", 0)[1]); err == nil {
		t.Error("saving into a missing directory succeeded")
	}
}

// AUGUR_PLOT_SAMPLES=dir go test -run TestWriteSamples ./windtunnel/plot/ writes sample
// images to look at.
func TestWriteSamples(t *testing.T) {
	dir := os.Getenv("AUGUR_PLOT_SAMPLES")
	if dir == "" {
		t.Skip("AUGUR_PLOT_SAMPLES is not set")
	}
	for i, c := range sampleCharts("shared-prefix", 0) {
		if err := SavePNG(filepath.Join(dir, "chart"+string(rune('0'+i))+".png"), c); err != nil {
			t.Fatal(err)
		}
	}
	if err := SaveGridPNG(filepath.Join(dir, "grid.png"), sampleGrid()); err != nil {
		t.Fatal(err)
	}
	// Eight contenders and two references, one of them with values a log axis skips.
	c := Chart{Title: "eight policies, two references", XLabel: "load (× capacity)", YLabel: "TTFT p99 (ms)", LogY: true}
	for k := range 10 {
		s := Series{Name: "policy-" + string(rune('A'+k)), Reference: k >= 8}
		for i, l := range ladder(8) {
			v := 50 * math.Exp(l*float64(k+2)/3)
			if k == 9 && i == 3 {
				v = 0
			}
			s.Points = append(s.Points, Point{Load: l, Value: v})
		}
		c.Series = append(c.Series, s)
	}
	if err := SavePNG(filepath.Join(dir, "ten-series.png"), c); err != nil {
		t.Fatal(err)
	}
}

func TestLogTicks(t *testing.T) {
	labels := func(lo, hi float64) string {
		var out []string
		for _, tk := range logTicks(lo, hi) {
			if tk.Value < lo || tk.Value > hi {
				t.Errorf("%v..%v: tick %v out of range", lo, hi, tk.Value)
			}
			if tk.Label != "" {
				out = append(out, tk.Label)
			}
		}
		return strings.Join(out, " ")
	}
	for _, tc := range []struct {
		lo, hi float64
		want   string
	}{
		{35, 2100, "50 100 200 500 1000 2000"},
		{0.7, 9, "1 2 5"},
		{1.5, 9.5, "2 3 4 5 6 7 8 9"},
		{0.02, 0.4, "0.02 0.05 0.1 0.2"},
		{0.02, 30, "0.03 0.1 0.3 1 3 10 30"},
		{3, 3e5, "10 100 1000 10000 100000"},
		{1, 1e12, "1 100 10000 1000000 1e+08 1e+10 1e+12"},
		{120, 180, "120 150 180"},
	} {
		if got := labels(tc.lo, tc.hi); got != tc.want {
			t.Errorf("%v..%v: labels %q, want %q", tc.lo, tc.hi, got, tc.want)
		}
	}
	if logTicks(0, 10) != nil || logTicks(5, 1) != nil {
		t.Error("ticks for an invalid log range")
	}
}

func TestLinearTicks(t *testing.T) {
	for _, tc := range []struct {
		lo, hi float64
		want   string
	}{
		{0.25, 2, "0.25 0.5 0.75 1 1.25 1.5 1.75 2"},
		{0.1, 3, "0.5 1 1.5 2 2.5 3"},
		{0, 1000, "0 200 400 600 800 1000"},
		{-3, 3, "-3 -2 -1 0 1 2 3"},
		{0.3, 0.45, "0.3 0.32 0.34 0.36 0.38 0.4 0.42 0.44"},
		{1e6, 1e6 + 0.01, "1000000 1000000.002 1000000.004 1000000.006 1000000.008 1000000.01"},
	} {
		var labels []string
		for _, tk := range linearTicks(tc.lo, tc.hi) {
			if tk.Value < tc.lo || tk.Value > tc.hi {
				t.Errorf("%v..%v: tick %v out of range", tc.lo, tc.hi, tk.Value)
			}
			if tk.Label != "" {
				labels = append(labels, tk.Label)
			}
		}
		if got := strings.Join(labels, " "); got != tc.want {
			t.Errorf("%v..%v: labels %q, want %q", tc.lo, tc.hi, got, tc.want)
		}
	}
}

// BenchmarkGrid3x2 renders the sample grid: 3×2 panels of 7 series, 8 loads each.
func BenchmarkGrid3x2(b *testing.B) {
	g := sampleGrid()
	var buf bytes.Buffer
	for b.Loop() {
		buf.Reset()
		if err := WriteGridPNG(&buf, g); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(buf.Len()), "PNG-bytes")
}

// BenchmarkChart renders one default-size chart of 7 series on a log axis.
func BenchmarkChart(b *testing.B) {
	c := sampleCharts("w", 0)[2]
	var buf bytes.Buffer
	for b.Loop() {
		buf.Reset()
		if err := WritePNG(&buf, c, 0, 0); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(buf.Len()), "PNG-bytes")
}
