package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
)

// WriteJSON writes r as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// summaryHeader names the columns of summaryCells, in a fixed order; times in milliseconds.
func summaryHeader() []string {
	return []string{
		"reqs", "done", "shed%", "errs", "slo%", "goodput/s", "done/s", "out tok/s",
		"ttft p50", "ttft p90", "ttft p99", "tpot p50", "tpot p99", "e2e p50", "e2e p99", "hit%", "queued p99",
	}
}

func summaryCells(s Summary) []string {
	return []string{
		strconv.Itoa(s.Requests), strconv.Itoa(s.Completed), pct(s.ShedShare), strconv.Itoa(s.Errors),
		attainment(s.SLOAttainment), num(s.GoodputRPS, 2), num(s.CompletedRPS, 2), num(s.OutputTPS, 0),
		num(s.TTFT.P50, 1), num(s.TTFT.P90, 1), num(s.TTFT.P99, 1),
		num(s.TPOT.P50, 1), num(s.TPOT.P99, 1),
		num(s.E2E.P50, 1), num(s.E2E.P99, 1), pct(s.PrefixHitRate), num(s.Queued.P99, 1),
	}
}

// WriteText writes r as aligned tables: the classes and overall, shed reasons, replicas, and
// stages when computed. Times are in milliseconds, shares in percent, "-" where undefined.
func (r *Report) WriteText(w io.Writer) error {
	// Rendered in memory, where writes cannot fail, then written once: one error to check.
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(cells ...string) { fmt.Fprint(tw, strings.Join(cells, "\t")+"\t\n") }

	fmt.Fprintf(tw, "window %.1fs-%.1fs (%.1f s)\n\n", r.Window.From.Seconds(), r.Window.To.Seconds(), r.Window.Seconds())
	row(append([]string{"class"}, summaryHeader()...)...)
	for _, s := range append([]Summary{r.Overall}, r.Classes...) {
		row(append([]string{s.Name}, summaryCells(s)...)...)
	}

	if lines := shedLines(append([]Summary{r.Overall}, r.Classes...)); len(lines) > 0 {
		fmt.Fprintf(tw, "\nshed by reason\n")
		for _, l := range lines {
			fmt.Fprintln(tw, l)
		}
	}

	if len(r.Replicas) > 0 {
		fmt.Fprintln(tw)
		row("replica", "reqs", "done", "hit%")
		for _, rp := range r.Replicas {
			row(rp.Name, strconv.Itoa(rp.Requests), strconv.Itoa(rp.Completed), pct(rp.PrefixHitRate))
		}
		fmt.Fprintf(tw, "max/min requests per replica: %s\n", r.maxMinText())
	}

	if len(r.Stages) > 0 {
		fmt.Fprintln(tw)
		row(append([]string{"stage", "from s", "to s", "class"}, summaryHeader()...)...)
		for _, st := range r.Stages {
			for _, s := range append([]Summary{st.Overall}, st.Classes...) {
				row(append([]string{strconv.Itoa(st.Stage), num(ptr(st.Window.From.Seconds()), 1),
					num(ptr(st.Window.To.Seconds()), 1), s.Name}, summaryCells(s)...)...)
			}
		}
	}
	_ = tw.Flush() // into a bytes.Buffer: cannot fail
	_, err := w.Write(buf.Bytes())
	return err
}

// maxMinText is the hot-spot ratio, "inf" when a replica received nothing while another did.
func (r *Report) maxMinText() string {
	if r.ReplicaMaxMin != nil {
		return num(r.ReplicaMaxMin, 2)
	}
	for _, rp := range r.Replicas {
		if rp.Requests > 0 {
			return "inf"
		}
	}
	return "-"
}

// shedLines are "class: reason=count (share of the class's requests), ..." for summaries
// that shed anything, reasons sorted.
func shedLines(ss []Summary) []string {
	var out []string
	for _, s := range ss {
		if len(s.ShedReasons) == 0 {
			continue
		}
		reasons := make([]string, 0, len(s.ShedReasons))
		for k := range s.ShedReasons {
			reasons = append(reasons, k)
		}
		sort.Strings(reasons)
		parts := make([]string, len(reasons))
		for i, k := range reasons {
			n := s.ShedReasons[k]
			parts[i] = fmt.Sprintf("%s=%d (%s%%)", k, n, pct(ratio(float64(n), float64(s.Requests))))
		}
		out = append(out, s.Name+": "+strings.Join(parts, ", "))
	}
	return out
}

func num(v *float64, prec int) string {
	if v == nil {
		return "-"
	}
	return strconv.FormatFloat(*v, 'f', prec, 64)
}

// attainment is pct, with "n/a" for a set of requests without objectives.
func attainment(v *float64) string {
	if v == nil {
		return "n/a"
	}
	return pct(v)
}

func pct(v *float64) string {
	if v == nil {
		return "-"
	}
	return strconv.FormatFloat(*v*100, 'f', 1, 64)
}
