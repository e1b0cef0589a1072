package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/augur-llm/augur/windtunnel/plot"
)

// writePlots draws the comparison into dir/compare.png: a row per workload with SLO
// attainment overall and for the interactive class, and TTFT p50 and p99, against load, a
// line per policy (the clairvoyant reference dashed grey).
func writePlots(dir string, res *comparison) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("--plots: %w", err)
	}
	series := func(wl string, get func(cell) *float64, scale float64) []plot.Series {
		var out []plot.Series
		for _, p := range res.Policies {
			s := plot.Series{Name: p, Reference: p == "clairvoyant"}
			for _, l := range res.Loads {
				st := over(res.Results[wl][loadKey(l)][p], get)
				s.Points = append(s.Points, plot.Point{Load: l, Value: scale * st.mean, Missing: st.n == 0})
			}
			out = append(out, s)
		}
		return out
	}
	g := plot.Grid{Title: fmt.Sprintf("Policies side by side in virtual time (means over seeds %v, runs of %s)", res.Seeds, res.RunLength), Cols: 4}
	for _, wl := range res.Workloads {
		name := wl.Name + " (" + wl.Pool + ")"
		g.Charts = append(g.Charts,
			plot.Chart{Title: name + ": SLO attainment", XLabel: "load (x capacity)", YLabel: "attainment (%)", Percent: true,
				Series: series(wl.Name, attainmentOf, 100)},
			plot.Chart{Title: wl.Name + ": interactive attainment", XLabel: "load (x capacity)", YLabel: "attainment (%)", Percent: true,
				Series: series(wl.Name, func(c cell) *float64 { return c.ByClass["interactive"] }, 100)},
			plot.Chart{Title: wl.Name + ": TTFT p50", XLabel: "load (x capacity)", YLabel: "ms", LogY: true,
				Series: series(wl.Name, func(c cell) *float64 { return c.TTFTP50 }, 1)},
			plot.Chart{Title: wl.Name + ": TTFT p99", XLabel: "load (x capacity)", YLabel: "ms", LogY: true,
				Series: series(wl.Name, func(c cell) *float64 { return c.TTFTP99 }, 1)})
	}
	if err := plot.SaveGridPNG(filepath.Join(dir, "compare.png"), g); err != nil {
		return fmt.Errorf("--plots: %w", err)
	}
	return nil
}
