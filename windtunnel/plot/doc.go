// Package plot draws benchmark charts as PNG: one line per policy over a load ladder (x is
// the offered load as a multiple of capacity), with a marker at every measured point. It is
// used by the wind tunnel's reports only; the product never imports it.
//
// A Chart holds the series of one figure (SLO attainment, TTFT p50 or p99, ...); WritePNG
// and SavePNG draw one chart, WriteGridPNG and SaveGridPNG draw several as panels of one
// image (one panel per workload, say) that share a legend.
//
// # Look
//
// Each series gets a colour and a marker of its own, in the order series first appear
// (across all panels of a grid, so a policy has the same look in every panel): eight
// colour-blind-safe colours with eight different markers, so up to eight series stay
// distinguishable; from the ninth on the colours and markers repeat with a dashed line. A
// series marked Reference (a clairvoyant bound, say) is drawn in grey with a dashed line
// beneath the others, and does not use up a colour. The legend is drawn outside the data
// area, to the right of the chart (of the whole grid), so it never covers a point.
//
// The Y axis is linear over the data by default, ticked at steps of 1, 2, 2.5 or 5 times a
// power of ten (so is the X axis). LogY makes it logarithmic (latencies), labelled at every
// digit, 1-2-5, 1-3 or powers of ten per decade as the range allows. Percent fixes it at
// 0..100 (values are percentages, not fractions) for attainment. YMin and YMax fix either
// end.
//
// # Input rules
//
// Validation comes before drawing and reports the first problem as an error naming the
// chart, the series and the point; nothing panics on bad input.
//
//   - A chart must have at least one series, and each series a non-empty name unique in its
//     chart and at least one point.
//   - A point with Missing set is not drawn and breaks its series' line at its Load (a
//     gap); its Value is ignored.
//   - A point that is not Missing must have a finite Load and Value: NaN or ±Inf is an error
//     (set Missing to leave a gap on purpose), since it usually means a lost division.
//   - On a log axis, a point whose Value is zero or negative cannot be placed: it is skipped
//     and breaks the line as a Missing point does. A chart left with nothing to draw is an
//     error.
//   - Points are drawn in increasing Load whatever their order in the slice (a stable sort,
//     Missing points included).
//   - YMin and YMax must be finite, YMin < YMax, and positive on a log axis. LogY and
//     Percent together are an error. Points outside a fixed range are clipped.
//
// Sizes are in pixels at 96 dots per inch (12-point text is 16 pixels high); zero picks a
// default. The same input gives the same bytes every time: no map order, clock or
// randomness reaches the drawing.
//
// # Cost
//
// A 3×2 grid of 7-series charts (8 loads each, 1583×732 pixels, a 277 KB PNG) takes 130 ms
// at best, up to 300 ms on a busy machine, and 18 MB of allocation on 2 cores
// (BenchmarkGrid3x2), over half of it PNG encoding; a single 800×500 chart 43 to 100 ms
// and 5.4 MB (BenchmarkChart).
//
// Allowed imports (checked by imports_test.go): gonum.org/v1/plot.
package plot
