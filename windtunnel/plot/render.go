package plot

import (
	"bytes"
	"errors"
	"fmt"
	"image/color"
	"io"
	"os"

	gplot "gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

const dpi = 96

// px converts pixels to drawing length at dpi.
func px(n int) vg.Length { return vg.Length(n) * vg.Inch / dpi }

// The series palette: Okabe and Ito's colour-blind-safe colours, their yellow swapped for a
// dark one that reads on white, and a purple for an eighth.
var palette = []color.Color{
	color.RGBA{0x00, 0x72, 0xB2, 0xFF}, // blue
	color.RGBA{0xD5, 0x5E, 0x00, 0xFF}, // vermillion
	color.RGBA{0x00, 0x9E, 0x73, 0xFF}, // bluish green
	color.RGBA{0xCC, 0x79, 0xA7, 0xFF}, // reddish purple
	color.RGBA{0xE6, 0x9F, 0x00, 0xFF}, // orange
	color.RGBA{0x56, 0xB4, 0xE9, 0xFF}, // sky blue
	color.RGBA{0x00, 0x00, 0x00, 0xFF}, // black
	color.RGBA{0x7B, 0x32, 0x94, 0xFF}, // purple
}

var glyphs = []draw.GlyphDrawer{
	draw.CircleGlyph{}, draw.SquareGlyph{}, draw.TriangleGlyph{}, draw.CrossGlyph{},
	draw.RingGlyph{}, draw.BoxGlyph{}, draw.PyramidGlyph{}, draw.PlusGlyph{},
}

// Line patterns: solid for the first eight series, dashed for the next eight, and so on.
var dashes = [][]vg.Length{nil, {vg.Points(6), vg.Points(3)}, {vg.Points(2), vg.Points(2)}, {vg.Points(8), vg.Points(3), vg.Points(2), vg.Points(3)}}

// Reference series: greys, each with a dash pattern of its own.
var (
	refColors = []color.Color{color.RGBA{0x80, 0x80, 0x80, 0xFF}, color.RGBA{0xA8, 0xA8, 0xA8, 0xFF}, color.RGBA{0x58, 0x58, 0x58, 0xFF}}
	refDashes = [][]vg.Length{{vg.Points(6), vg.Points(3)}, {vg.Points(2), vg.Points(2)}, {vg.Points(8), vg.Points(3), vg.Points(2), vg.Points(3)}}
	refGlyphs = []draw.GlyphDrawer{draw.RingGlyph{}, draw.BoxGlyph{}, draw.PyramidGlyph{}}
)

type style struct {
	line  draw.LineStyle
	glyph draw.GlyphStyle
}

// legendEntry is one legend line; the legend lists series in order of first appearance.
type legendEntry struct {
	name string
	sty  style
}

// assignStyles gives every series name a look, in order of first appearance across charts:
// contenders take palette slots, references take grey ones.
func assignStyles(charts []*prepared) ([]legendEntry, map[string]style) {
	byName := map[string]style{}
	var order []legendEntry
	var contenders, refs int
	for _, c := range charts {
		for _, s := range c.series {
			if _, ok := byName[s.name]; ok {
				continue
			}
			var st style
			if s.ref {
				st.line = draw.LineStyle{Color: refColors[refs%len(refColors)], Width: vg.Points(1.5), Dashes: refDashes[refs%len(refDashes)]}
				st.glyph = draw.GlyphStyle{Color: st.line.Color, Radius: vg.Points(2.5), Shape: refGlyphs[refs%len(refGlyphs)]}
				refs++
			} else {
				i := contenders
				st.line = draw.LineStyle{Color: palette[i%len(palette)], Width: vg.Points(1.5), Dashes: dashes[(i/len(palette))%len(dashes)]}
				st.glyph = draw.GlyphStyle{Color: st.line.Color, Radius: vg.Points(3), Shape: glyphs[i%len(glyphs)]}
				contenders++
			}
			byName[s.name] = st
			order = append(order, legendEntry{s.name, st})
		}
	}
	return order, byName
}

// build makes the gonum plot of a prepared chart, without a legend.
func build(c *prepared, styles map[string]style, textScale float64) (*gplot.Plot, error) {
	p := gplot.New()
	scaleText(p, textScale)
	p.Title.Text = c.chart.Title
	p.X.Label.Text = c.chart.XLabel
	p.Y.Label.Text = c.chart.YLabel

	grid := plotter.NewGrid()
	grid.Vertical.Color = color.Gray{0xE0}
	grid.Horizontal.Color = color.Gray{0xE0}
	p.Add(grid)

	// References first, so that the contenders are drawn over them.
	for _, pass := range []bool{true, false} {
		for _, s := range c.series {
			if s.ref != pass {
				continue
			}
			st := styles[s.name]
			for _, seg := range s.segments {
				if len(seg) < 2 {
					continue
				}
				l, err := plotter.NewLine(toXYs(seg))
				if err != nil {
					return nil, fmt.Errorf("series %q: %w", s.name, err)
				}
				l.LineStyle = st.line
				p.Add(l)
			}
			sc, err := plotter.NewScatter(toXYs(s.points))
			if err != nil {
				return nil, fmt.Errorf("series %q: %w", s.name, err)
			}
			sc.GlyphStyle = st.glyph
			p.Add(sc)
		}
	}

	// Ranges are set after Add, which widens them to the data.
	p.X.Min, p.X.Max = c.xmin, c.xmax
	if p.X.Min == p.X.Max {
		p.X.Min, p.X.Max = p.X.Min-0.5, p.X.Max+0.5
	}
	p.X.Tick.Marker = gplot.TickerFunc(linearTicks)
	p.Y.Min, p.Y.Max = c.ymin, c.ymax
	p.Y.Tick.Marker = gplot.TickerFunc(linearTicks)
	switch {
	case c.chart.LogY:
		p.Y.Scale = gplot.LogScale{}
		p.Y.Tick.Marker = gplot.TickerFunc(logTicks)
	case c.chart.Percent:
		p.Y.Tick.Marker = gplot.TickerFunc(percentTicks)
	}
	return p, nil
}

func toXYs(pts []xy) plotter.XYs {
	out := make(plotter.XYs, len(pts))
	for i, q := range pts {
		out[i].X, out[i].Y = q.x, q.y
	}
	return out
}

// scaleText sizes a plot's text: 1 is gonum's default (12-point title and labels).
func scaleText(p *gplot.Plot, s float64) {
	p.Title.TextStyle.Font.Size = font.Length(13 * s)
	p.Title.Padding = vg.Points(6 * s)
	for _, a := range []*gplot.Axis{&p.X, &p.Y} {
		a.Label.TextStyle.Font.Size = font.Length(11 * s)
		a.Tick.Label.Font.Size = font.Length(10 * s)
	}
}

// legend returns the legend of the entries, to be drawn top-left in a strip of its own.
func legend(entries []legendEntry, textScale float64) gplot.Legend {
	l := gplot.NewLegend()
	l.Top, l.Left = true, true
	l.TextStyle.Font.Size = font.Length(11 * textScale)
	l.ThumbnailWidth = vg.Points(28)
	l.Padding = vg.Points(3)
	for _, e := range entries {
		line := &plotter.Line{LineStyle: e.sty.line}
		sc := &plotter.Scatter{GlyphStyle: e.sty.glyph}
		l.Add(e.name, line, sc)
	}
	return l
}

// The blank border around the image and the gap between the plots and the legend.
var (
	margin    = vg.Points(8)
	legendGap = vg.Points(10)
)

// legendWidth is the width of the legend strip, gap included.
func legendWidth(l *gplot.Legend, dc draw.Canvas) vg.Length {
	return l.Rectangle(dc).Size().X + legendGap
}

// WritePNG draws the chart as a PNG image of width×height pixels (0 for DefaultWidth or
// DefaultHeight), the legend to the right of the plot.
func WritePNG(w io.Writer, c Chart, width, height int) error {
	width, height, err := checkSize("chart", width, height, DefaultWidth, DefaultHeight)
	if err != nil {
		return err
	}
	pc, err := prepare(c)
	if err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	entries, styles := assignStyles([]*prepared{pc})
	return render(w, width, height, func(dc draw.Canvas) error {
		p, err := build(pc, styles, 1)
		if err != nil {
			return fmt.Errorf("plot: chart %q: %w", c.Title, err)
		}
		l := legend(entries, 1)
		area := draw.Crop(dc, margin, -margin, margin, -margin)
		lw := legendWidth(&l, area)
		if area.Size().X-lw < px(MinWidth)/2 {
			return fmt.Errorf("plot: chart %q: a %d-pixel width leaves no room for the plot beside its legend", c.Title, width)
		}
		plotArea := draw.Crop(area, 0, -lw, 0, 0)
		p.Draw(plotArea)
		top := p.DataCanvas(plotArea).Max.Y
		l.Draw(draw.Canvas{Canvas: dc.Canvas, Rectangle: vg.Rectangle{
			Min: vg.Point{X: plotArea.Max.X + legendGap, Y: area.Min.Y},
			Max: vg.Point{X: area.Max.X, Y: top},
		}})
		return nil
	})
}

// SavePNG writes the chart to path as a DefaultWidth×DefaultHeight PNG.
func SavePNG(path string, c Chart) error {
	var buf bytes.Buffer
	if err := WritePNG(&buf, c, 0, 0); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// WriteGridPNG draws the grid's charts as panels, row by row, with one legend for all their
// series to the right. Panels are aligned so that their data areas have the same size.
func WriteGridPNG(w io.Writer, g Grid) error {
	n := len(g.Charts)
	if n == 0 {
		return errors.New("plot: grid has no charts")
	}
	cols := g.Cols
	switch {
	case cols < 0:
		return fmt.Errorf("plot: grid has %d columns", cols)
	case cols == 0:
		cols = min(3, n)
	case cols > n:
		cols = n
	}
	rows := (n + cols - 1) / cols
	pw, ph, err := checkSize("panel", g.PanelWidth, g.PanelHeight, DefaultPanelWidth, DefaultPanelHeight)
	if err != nil {
		return err
	}
	pcs := make([]*prepared, n)
	for i, c := range g.Charts {
		if pcs[i], err = prepare(c); err != nil {
			return fmt.Errorf("plot: grid panel %d: %w", i, err)
		}
	}
	entries, styles := assignStyles(pcs)
	const textScale = 0.9

	// The legend's width is measured on a throw-away canvas, to size the image.
	l := legend(entries, textScale)
	lw := legendWidth(&l, draw.New(vgimg.NewWith(vgimg.UseWH(px(MinWidth), px(MinHeight)), vgimg.UseDPI(dpi))))
	titleStyle := gplot.New().Title.TextStyle // centred, hanging from its point
	titleStyle.Font.Size = font.Length(15)
	var titleH vg.Length
	if g.Title != "" {
		titleH = titleStyle.Rectangle(g.Title).Size().Y + vg.Points(6)
	}
	width := cols*pw + int(float64((lw+2*margin)/vg.Inch*dpi)+0.999)
	height := rows*ph + int(float64((titleH+2*margin)/vg.Inch*dpi)+0.999)
	if width > MaxSide || height > MaxSide {
		return fmt.Errorf("plot: grid image %dx%d pixels is larger than %dx%d", width, height, MaxSide, MaxSide)
	}

	return render(w, width, height, func(dc draw.Canvas) error {
		plots := make([][]*gplot.Plot, rows)
		for r := range plots {
			plots[r] = make([]*gplot.Plot, cols)
		}
		for i, pc := range pcs {
			p, err := build(pc, styles, textScale)
			if err != nil {
				return fmt.Errorf("plot: panel %d (%q): %w", i, pc.chart.Title, err)
			}
			plots[i/cols][i%cols] = p
		}
		area := draw.Crop(dc, margin, -margin, margin, -margin)
		if g.Title != "" {
			dc.FillText(titleStyle, vg.Point{X: area.Center().X, Y: area.Max.Y + titleStyle.FontExtents().Descent}, g.Title)
			area = draw.Crop(area, 0, 0, 0, -titleH)
		}
		panels := draw.Crop(area, 0, -lw, 0, 0)
		tiles := draw.Tiles{Rows: rows, Cols: cols, PadX: vg.Points(12), PadY: vg.Points(10)}
		canvases := gplot.Align(plots, tiles, panels)
		for r := range plots {
			for c, p := range plots[r] {
				if p != nil {
					p.Draw(canvases[r][c])
				}
			}
		}
		top := plots[0][0].DataCanvas(canvases[0][0]).Max.Y
		l.Draw(draw.Canvas{Canvas: dc.Canvas, Rectangle: vg.Rectangle{
			Min: vg.Point{X: panels.Max.X + legendGap, Y: area.Min.Y},
			Max: vg.Point{X: area.Max.X, Y: top},
		}})
		return nil
	})
}

// SaveGridPNG writes the grid to path as a PNG.
func SaveGridPNG(path string, g Grid) error {
	var buf bytes.Buffer
	if err := WriteGridPNG(&buf, g); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// render draws on a white width×height-pixel canvas and encodes it as PNG. Input is
// validated before it gets here; should gonum panic all the same, the panic becomes an
// error rather than taking the caller down.
func render(w io.Writer, width, height int, drawFn func(draw.Canvas) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("plot: drawing failed: %v", r)
		}
	}()
	img := vgimg.NewWith(vgimg.UseWH(px(width), px(height)), vgimg.UseDPI(dpi))
	if err := drawFn(draw.New(img)); err != nil {
		return err
	}
	var buf bytes.Buffer
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(&buf); err != nil {
		return fmt.Errorf("plot: encoding PNG: %w", err)
	}
	_, err = w.Write(buf.Bytes())
	return err
}
