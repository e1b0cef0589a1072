package trainer

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/augur-llm/augur/models"
)

// regimeOrder is the order regimes are listed in: load, prefix, then classes by name.
func regimeOrder(regimes map[string]models.Metrics) []string {
	out := []string{}
	for _, n := range []string{models.Idle.String(), models.Loaded.String(), models.Overloaded.String(), RegimePrefixHit, RegimePrefixMiss} {
		if _, ok := regimes[n]; ok {
			out = append(out, n)
		}
	}
	var classes []string
	for n := range regimes {
		if strings.HasPrefix(n, classPrefix) {
			classes = append(classes, n)
		}
	}
	slices.Sort(classes)
	return append(out, classes...)
}

// WriteTable writes the run's accuracy: per target, the challenger's holdout metrics overall
// and per regime next to the champion's, then the decision.
func (r *Report) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "run %s: %d labelled samples, trained in %s\n", r.Run, r.Samples, elapsed(r.Duration))
	for i := range r.Targets {
		t := &r.Targets[i]
		fmt.Fprintf(w, "\n%s: %d labelled", strings.ToUpper(string(t.Target)), t.Labelled)
		if t.Decision == DecisionSkipped {
			fmt.Fprintf(w, "; %s: %s\n", t.Decision, t.Why)
			continue
		}
		fmt.Fprintf(w, " = %d train (%d after balancing) + %d calibration + %d holdout; trees fitted in %s\n",
			t.Train, t.Balanced, t.Calibration, t.Holdout, elapsed(t.TrainTime))
		if err := WriteEvaluation(w, t.Mean, t.Upper, t.ChampionMean, t.ChampionUpper); err != nil {
			return err
		}
		fmt.Fprintf(w, "%s: %s\n", t.Decision, t.Why)
	}
	return nil
}

// WriteEvaluation writes a mean and quantile evaluation as a table, with the champion's
// MAPE and coverage beside them when given.
func WriteEvaluation(w io.Writer, mean, upper models.Evaluation, champMean, champUpper *models.Evaluation) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := "regime\tsamples\tMAPE\tMAE ms\tp50 APE\tp90 APE\tp90 coverage\t"
	if champMean != nil {
		head += "champion MAPE\tchampion coverage\t"
	}
	fmt.Fprintln(tw, head)
	line := func(name string, m models.Metrics, u models.Metrics, hasU bool, cm, cu *models.Metrics) {
		cov := "-"
		if hasU && u.Count > 0 {
			cov = pct(u.Coverage)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%.1f\t%s\t%s\t%s\t", name, m.Count, pct(m.MAPE), m.MAE, pct(m.P50APE), pct(m.P90APE), cov)
		if champMean != nil {
			c1, c2 := "-", "-"
			if cm != nil {
				c1 = pct(cm.MAPE)
			}
			if cu != nil {
				c2 = pct(cu.Coverage)
			}
			fmt.Fprintf(tw, "%s\t%s\t", c1, c2)
		}
		fmt.Fprintln(tw)
	}
	get := func(e *models.Evaluation, name string) *models.Metrics {
		if e == nil {
			return nil
		}
		if name == "" {
			return &e.Overall
		}
		if m, ok := e.Regimes[name]; ok {
			return &m
		}
		return nil
	}
	hasU := upper.Overall.Count > 0
	line("all", mean.Overall, upper.Overall, hasU, get(champMean, ""), get(champUpper, ""))
	for _, n := range regimeOrder(mean.Regimes) {
		line(n, mean.Regimes[n], upper.Regimes[n], hasU, get(champMean, n), get(champUpper, n))
	}
	return tw.Flush()
}
