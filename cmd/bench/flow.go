package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/augur-llm/augur/flowcontrol"
	"github.com/augur-llm/augur/predictor"
	"github.com/augur-llm/augur/scheduler"
	"github.com/augur-llm/augur/windtunnel/plot"
	"github.com/augur-llm/augur/windtunnel/report"
	"github.com/augur-llm/augur/windtunnel/virtual"
	"github.com/augur-llm/augur/windtunnel/workload"
)

// flowVariants are the admission designs --flow compares: none (every request straight to
// the scheduler), llm-d's (a 1 ms ticker dispatching one request per tick while its
// utilization detector sees a replica with room) and Augur's flow control.
var flowVariants = []string{"none", "llm-d", "augur"}

// flowConfig is the flow control of a variant for the mixed-slo classes: one objective per
// class, with its priority and SLOs.
// extra, when not empty, is JSON applied over it (--flow-args), e.g. '{"ordering":"deadline"}'.
func flowConfig(variant, extra string) (*flowcontrol.Config, error) {
	if variant == "none" {
		return nil, nil
	}
	c := &flowcontrol.Config{Objectives: map[string]flowcontrol.Objective{}}
	for _, cl := range workload.DefaultClasses() {
		c.Objectives[cl.Name] = flowcontrol.Objective{Priority: cl.Priority}
	}
	if variant == "llm-d" {
		c.Mode = flowcontrol.ModeTicker
	} else if extra != "" {
		dec := json.NewDecoder(strings.NewReader(extra))
		dec.DisallowUnknownFields()
		if err := dec.Decode(c); err != nil {
			return nil, fmt.Errorf("--flow-args: %w", err)
		}
	}
	return c, nil
}

// flowCell is one variant at one load, for one seed.
type flowCell struct {
	Attainment  map[string]float64 `json:"attainment"`   // by class, and "all"
	Shed        map[string]int     `json:"shed"`         // 429s by class
	Requests    map[string]int     `json:"requests"`     // by class
	QueueP99Ms  map[string]float64 `json:"queue_p99_ms"` // time in flow control, by class
	TTFTP50Ms   map[string]float64 `json:"ttft_p50_ms"`
	MissedTTFT  map[string]int     `json:"missed_ttft"`          // completed, TTFT objective missed
	MissedTPOT  map[string]int     `json:"missed_tpot"`          // completed, TTFT met, TPOT missed
	MeanWaiting float64            `json:"replica_waiting_mean"` // per replica, over the scrapes
	WallSeconds float64            `json:"wall_s"`
}

// flowResult is --flow's output, as written with --json.
type flowResult struct {
	Workload string                           `json:"workload"`
	Pool     string                           `json:"pool"`
	Policy   string                           `json:"policy"`
	Capacity float64                          `json:"capacity"`
	Seeds    []uint64                         `json:"seeds"`
	Loads    []float64                        `json:"loads"`
	Length   string                           `json:"run_length"`
	Results  map[string]map[string][]flowCell `json:"results"` // load -> variant -> per seed
}

// flowBench overloads the mixed-slo pool with and without flow control and reports, per
// class, attainment, shedding, time queued, and the replicas' own queues.
func flowBench(ctx context.Context, o options, stdout, stderr io.Writer) error {
	co := o.compare
	w := benchWorkload{Name: "mixed-slo", Workload: workload.NameMixedSLO, Pool: "8x8b-h100"}
	loads, seeds, err := co.loadsAndSeeds()
	if err != nil {
		return err
	}
	capacity := 0.0
	if co.capacities != "" {
		k, v, ok := strings.Cut(co.capacities, "=")
		capacity, err = strconv.ParseFloat(v, 64)
		if !ok || k != w.Name || err != nil || !(capacity > 0) {
			return fmt.Errorf("--capacities: with --flow, want mixed-slo=REQ/S, not %q", co.capacities)
		}
	} else {
		return errors.New("--flow needs --capacities mixed-slo=REQ/S (measure it with --compare --workloads mixed-slo)")
	}
	if _, err := flowConfig("augur", o.flowArgs); err != nil {
		return err
	}
	profs, err := profiles([]string{w.Pool}, []string{o.policy}, co.sloArgs)
	if err != nil {
		return err
	}
	pc := profs[[2]string{w.Pool, o.policy}]
	var set *predictor.Set
	if usesPredictor(o.policy) {
		if set, _, err = benchModels(ctx, o, stdout, progressTo(o, stderr)); err != nil {
			return err
		}
	}
	res := flowResult{Workload: w.Name, Pool: w.Pool, Policy: o.policy, Capacity: capacity, Seeds: seeds, Loads: loads,
		Length: o.duration.String(), Results: map[string]map[string][]flowCell{}}
	type job struct {
		load    float64
		variant string
		seed    int
	}
	var jobs []job
	for _, l := range loads {
		res.Results[loadKey(l)] = map[string][]flowCell{}
		for _, v := range flowVariants {
			res.Results[loadKey(l)][v] = make([]flowCell, len(seeds))
			for i := range seeds {
				jobs = append(jobs, job{l, v, i})
			}
		}
	}
	par := co.parallel
	if par <= 0 {
		par = runtime.GOMAXPROCS(0)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(par)
	var mu sync.Mutex
	done := 0
	progress := progressTo(o, stderr)
	for _, j := range jobs {
		g.Go(func() error {
			c, err := flowRun(gctx, w, capacity*j.load, seeds[j.seed], j.variant, o.flowArgs, o.duration, pc, set)
			if err != nil {
				return fmt.Errorf("%s at %.2fx, seed %d: %w", j.variant, j.load, seeds[j.seed], err)
			}
			mu.Lock()
			res.Results[loadKey(j.load)][j.variant][j.seed] = c
			done++
			progress("\rflow control: %d of %d runs   ", done, len(jobs))
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	progress("\n")
	writeFlow(stdout, &res)
	if co.plots != "" {
		if err := plotFlow(co.plots, &res); err != nil {
			return err
		}
	}
	return writeJSON(o.jsonPath, stdout, &res)
}

// flowRun runs one variant at one rate.
func flowRun(ctx context.Context, w benchWorkload, rate float64, seed uint64, variant, extra string, d time.Duration, pc scheduler.ProfileConfig, set *predictor.Set) (flowCell, error) {
	start := time.Now()
	specs, err := virtual.ParsePool(w.Pool)
	if err != nil {
		return flowCell{}, err
	}
	g, err := w.generator(seed, rate, d)
	if err != nil {
		return flowCell{}, err
	}
	fc, err := flowConfig(variant, extra)
	if err != nil {
		return flowCell{}, err
	}
	vc := virtual.Config{Replicas: specs, Profile: pc, Seed: seed, FlowControl: fc}
	if set != nil {
		vc.PredictorFor = predictorFor(set, nil)
	}
	r, err := virtual.Run(ctx, vc, g.Next)
	if err != nil {
		return flowCell{}, err
	}
	rep := report.Compute(r.Outcomes, report.Options{Window: report.Window{From: 0, To: d}})
	c := flowCell{Attainment: map[string]float64{}, Shed: map[string]int{}, Requests: map[string]int{}, QueueP99Ms: map[string]float64{},
		TTFTP50Ms: map[string]float64{}, MissedTTFT: map[string]int{}, MissedTPOT: map[string]int{}, MeanWaiting: r.MeanWaiting, WallSeconds: time.Since(start).Seconds()}
	for _, s := range append(slices.Clone(rep.Classes), rep.Overall) {
		if s.SLOAttainment != nil {
			c.Attainment[s.Name] = *s.SLOAttainment
		}
		c.Shed[s.Name], c.Requests[s.Name] = s.Shed, s.Requests
		c.MissedTTFT[s.Name], c.MissedTPOT[s.Name] = s.MissedTTFT, s.MissedTPOT
		if s.TTFT.P50 != nil {
			c.TTFTP50Ms[s.Name] = *s.TTFT.P50
		}
	}
	queued := map[string][]float64{}
	for _, oc := range r.Outcomes {
		if oc.Start > d {
			continue
		}
		cl := oc.Class
		queued[cl] = append(queued[cl], ms(oc.Queued))
		queued[report.OverallName] = append(queued[report.OverallName], ms(oc.Queued))
	}
	for cl, q := range queued {
		sort.Float64s(q)
		c.QueueP99Ms[cl] = q[min(len(q)-1, int(0.99*float64(len(q))))]
	}
	return c, nil
}

// flowClasses are the columns of --flow's tables.
var flowClasses = []string{"interactive", "standard", "batch", report.OverallName}

func meanOver(cells []flowCell, f func(flowCell) float64) float64 {
	s := 0.0
	for _, c := range cells {
		s += f(c)
	}
	return s / float64(len(cells))
}

func writeFlow(out io.Writer, res *flowResult) {
	fmt.Fprintf(out, "\n%s on %s, capacity %.1f req/s, policy %s, %s runs, mean over seeds %v\n", res.Workload, res.Pool, res.Capacity, res.Policy, res.Length, res.Seeds)
	fmt.Fprintln(out, "SLO attainment % (interactive / standard / batch / all); shed % of each class; time queued p99 ms; replica-side waiting per replica")
	fmt.Fprintf(out, "%-5s %-6s %-29s %-23s %-25s %-8s %s\n", "load", "flow", "attainment i/s/b/all", "shed i/s/b", "queued p99 i/s/b", "waiting", "missed ttft/tpot i/s/b")
	for _, l := range res.Loads {
		for _, v := range flowVariants {
			cells := res.Results[loadKey(l)][v]
			var att, shed, q, miss []string
			for _, cl := range flowClasses {
				att = append(att, fmt.Sprintf("%.1f", 100*meanOver(cells, func(c flowCell) float64 { return c.Attainment[cl] })))
				if cl == report.OverallName {
					continue
				}
				shed = append(shed, fmt.Sprintf("%.1f", 100*meanOver(cells, func(c flowCell) float64 {
					if c.Requests[cl] == 0 {
						return 0
					}
					return float64(c.Shed[cl]) / float64(c.Requests[cl])
				})))
				q = append(q, fmt.Sprintf("%.0f", meanOver(cells, func(c flowCell) float64 { return c.QueueP99Ms[cl] })))
				miss = append(miss, fmt.Sprintf("%.0f/%.0f", meanOver(cells, func(c flowCell) float64 { return float64(c.MissedTTFT[cl]) }),
					meanOver(cells, func(c flowCell) float64 { return float64(c.MissedTPOT[cl]) })))
			}
			fmt.Fprintf(out, "%-5s %-6s %-29s %-23s %-25s %-8.2f %s\n", strconv.FormatFloat(l, 'f', -1, 64)+"x", v, strings.Join(att, " / "),
				strings.Join(shed, " / "), strings.Join(q, " / "), meanOver(cells, func(c flowCell) float64 { return c.MeanWaiting }), strings.Join(miss, " "))
		}
	}
}

// plotFlow draws dir/flow-control.png: attainment of the interactive class and of all
// requests, and the replicas' own queues, against load, a line per variant.
func plotFlow(dir string, res *flowResult) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("--plots: %w", err)
	}
	series := func(get func(flowCell) float64, scale float64) []plot.Series {
		var out []plot.Series
		for _, v := range flowVariants {
			s := plot.Series{Name: "flow control: " + v}
			for _, l := range res.Loads {
				s.Points = append(s.Points, plot.Point{Load: l, Value: scale * meanOver(res.Results[loadKey(l)][v], get)})
			}
			out = append(out, s)
		}
		return out
	}
	g := plot.Grid{Title: fmt.Sprintf("Flow control on %s, policy %s (means over seeds %v, runs of %s)", res.Workload, res.Policy, res.Seeds, res.Length), Cols: 3}
	g.Charts = append(g.Charts,
		plot.Chart{Title: "interactive attainment", XLabel: "load (x capacity)", YLabel: "attainment (%)", Percent: true,
			Series: series(func(c flowCell) float64 { return c.Attainment["interactive"] }, 100)},
		plot.Chart{Title: "attainment, all classes (shed count as missed)", XLabel: "load (x capacity)", YLabel: "attainment (%)", Percent: true,
			Series: series(func(c flowCell) float64 { return c.Attainment[report.OverallName] }, 100)},
		plot.Chart{Title: "waiting in the replicas' own queues", XLabel: "load (x capacity)", YLabel: "requests per replica",
			Series: series(func(c flowCell) float64 { return c.MeanWaiting }, 1)})
	if err := plot.SaveGridPNG(filepath.Join(dir, "flow-control.png"), g); err != nil {
		return fmt.Errorf("--plots: %w", err)
	}
	return nil
}
