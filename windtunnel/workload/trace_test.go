package workload

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/augur-llm/augur/tokens"
)

// isTraceReplay reports the workloads whose arrival times come from a trace, the same for
// every seed.
func isTraceReplay(name string) bool {
	return name == NameAzureConv || name == NameAzureCode || name == NameMooncake || name == NameTrace
}

// withTracePath gives the generic "trace" workload a file (the small Azure code trace), so
// that the tests over Names() can run it.
func withTracePath(t testing.TB, name string, o Options) Options {
	t.Helper()
	if name == NameTrace {
		o.Trace.Path = findTrace(t, AzureCodeFile)
	}
	return o
}

func findTrace(t testing.TB, file string) string {
	t.Helper()
	p, err := FindTrace(file)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func loadTrace(t testing.TB, file string) *Trace {
	t.Helper()
	tr, err := LoadTrace(findTrace(t, file))
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func mustParse(t *testing.T, parse func(r *strings.Reader) (*Trace, error), text string) *Trace {
	t.Helper()
	tr, err := parse(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parsing %q: %v", text, err)
	}
	return tr
}

func parseAzureString(r *strings.Reader) (*Trace, error)    { return ParseAzure(r) }
func parseMooncakeString(r *strings.Reader) (*Trace, error) { return ParseMooncake(r) }
func parseAnyString(r *strings.Reader) (*Trace, error)      { return ParseTrace(r) }

type rowWant struct {
	at      time.Duration
	in, out int
}

func checkRows(t *testing.T, tr *Trace, want []rowWant) {
	t.Helper()
	if len(tr.Rows) != len(want) {
		t.Fatalf("%d rows, want %d: %+v", len(tr.Rows), len(want), tr.Rows)
	}
	for i, w := range want {
		r := tr.Rows[i]
		if r.At != w.at || r.Input != w.in || r.Output != w.out {
			t.Errorf("row %d = {%v %d %d}, want {%v %d %d}", i, r.At, r.Input, r.Output, w.at, w.in, w.out)
		}
	}
}

func TestParseAzure(t *testing.T) {
	tr := mustParse(t, parseAzureString, "TIMESTAMP,ContextTokens,GeneratedTokens\n"+
		"2023-11-16 18:15:46.6805900,374,44\r\n"+
		"2023-11-16 18:15:50.9951690,396,109\n"+
		"\n"+
		"2023-11-16 18:15:51.2224670,0,55\n")
	if tr.Format != FormatAzure || tr.BlockTokens != 0 || tr.Reordered != 0 {
		t.Errorf("trace %+v", tr)
	}
	checkRows(t, tr, []rowWant{{0, 374, 44}, {4314579000, 396, 109}, {4541877000, 0, 55}})
	if tr.Rows[2].Line != 5 || tr.Rows[2].HashIDs != nil {
		t.Errorf("last row %+v, want line 5 and no ids", tr.Rows[2])
	}
	if got := tr.MeanRate(); math.Abs(got-2/4.541877) > 1e-9 {
		t.Errorf("mean rate %v", got)
	}

	// Columns by name in any order, extra columns, a byte-order mark, zones and "T".
	tr = mustParse(t, parseAzureString, "\ufeffGeneratedTokens, id ,timestamp,contexttokens\n"+
		"7,a,2024-05-10T00:00:01.5+00:00,10\n"+
		"8,b,2024-05-10T02:00:01.5+02:00,20\n")
	checkRows(t, tr, []rowWant{{0, 10, 7}, {0, 20, 8}})

	// No header, timestamps in seconds, rows slightly out of order: sorted, relative to the
	// earliest.
	tr = mustParse(t, parseAzureString, "100.5,1,2\n100.25,3,4\n101,5,6\n100.9,7,8\n")
	checkRows(t, tr, []rowWant{{0, 3, 4}, {250 * time.Millisecond, 1, 2}, {650 * time.Millisecond, 7, 8}, {750 * time.Millisecond, 5, 6}})
	if tr.Reordered != 2 {
		t.Errorf("%d rows reordered, want 2", tr.Reordered)
	}
}

func TestParseAzureErrors(t *testing.T) {
	const header = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
	const row = "2023-11-16 18:15:46.6805900,374,44\n"
	for _, tc := range []struct{ text, want string }{
		{"", "no requests"},
		{header, "no requests"},
		{"time,ContextTokens,GeneratedTokens\n" + row, "line 1: the first row is neither a header"},
		{header + row + "2023-11-16 18:15:47,x,4\n", `line 3: ContextTokens "x" is not a whole number`},
		{header + row + "2023-11-16 18:15:47,3,-4\n", "line 3: GeneratedTokens -4 is negative"},
		{header + row + "2023-11-16 18:15:47,3,4.5\n", `line 3: GeneratedTokens "4.5" is not a whole number`},
		{header + row + "2023-11-16 18:15:47,3,99999999999\n", "line 3: GeneratedTokens 99999999999 is beyond the limit"},
		{header + row + "2023-11-16 18:15:47,3\n", "line 3: 2 fields, want at least 3"},
		{header + row + "yesterday,3,4\n", `line 3: timestamp "yesterday" is not a date-time like the first row's`},
		{header + row + "1700000000,3,4\n", `line 3: timestamp "1700000000" is not a date-time`},
		{header + row + "2023-11-16 18:15:44,3,4\n", "line 3: timestamp is 2.68059s before line 2's"},
		{header + row + "2023-11-16 18:15:50,3,4\n" + "2023-11-16 18:15:49.5,3,4\n" + "2023-11-16 18:15:48,3,4\n", "line 5: timestamp is 2s before line 3's"},
		{header + row + "9999-11-16 18:15:47,3,4\n", "more than"},
		{"1,2,3\n2,3,4\nNaN,1,1\n", `line 3: timestamp "NaN" is not a number of seconds`},
		{"NaN,1,1\n", "line 1: the first row is neither"},
		{"1,2,3\n1e300,1,1\n", "more than"},
		{header + `"2023-11-16 18:15:47,3,4` + "\n", "line 2"},
	} {
		_, err := ParseAzure(strings.NewReader(tc.text))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "workload: azure trace") {
			t.Errorf("ParseAzure(%q) = %v, want an error with %q", tc.text, err, tc.want)
		}
	}
}

func TestParseMooncake(t *testing.T) {
	tr := mustParse(t, parseMooncakeString, `{"timestamp": 5, "input_length": 600, "output_length": 6, "hash_ids": [0, 1]}`+"\n"+
		"\n"+
		`{"timestamp": 40.5, "input_length": 10, "output_length": 0, "hash_ids": [0], "extra": "x"}`+"\r\n"+
		`{"output_length": 1, "input_length": 0, "timestamp": 1040}`)
	if tr.Format != FormatMooncake || tr.BlockTokens != MooncakeBlockTokens {
		t.Errorf("trace %+v", tr)
	}
	checkRows(t, tr, []rowWant{{0, 600, 6}, {35500 * time.Microsecond, 10, 0}, {1035 * time.Millisecond, 0, 1}})
	if !slices.Equal(tr.Rows[0].HashIDs, []int64{0, 1}) || tr.Rows[2].HashIDs != nil || tr.Rows[1].Line != 3 || tr.Rows[2].Line != 4 {
		t.Errorf("rows %+v", tr.Rows)
	}
	// Without any ids there is no prefix structure.
	tr = mustParse(t, parseMooncakeString, `{"timestamp": 0, "input_length": 6, "output_length": 6}`)
	if tr.BlockTokens != 0 {
		t.Errorf("a trace without ids has blocks of %d tokens", tr.BlockTokens)
	}
}

func TestParseMooncakeErrors(t *testing.T) {
	const ok = `{"timestamp": 0, "input_length": 6, "output_length": 6, "hash_ids": [0]}` + "\n"
	for _, tc := range []struct{ text, want string }{
		{"", "no requests"},
		{"\n\n", "no requests"},
		{ok + `{"timestamp": 1, "input_length": 6}`, "line 2: missing output_length"},
		{ok + `{}`, "line 2: missing timestamp, input_length, output_length"},
		{ok + `null`, "line 2: missing timestamp"},
		{ok + `[1, 2]`, "line 2: want a JSON object, got JSON array"},
		{ok + `{"timestamp": "0", "input_length": 6, "output_length": 6}`, "line 2: timestamp must be a number of milliseconds, got JSON string"},
		{ok + `{"timestamp": 1, "input_length": 6.5, "output_length": 6}`, "line 2: input_length must hold whole numbers, got JSON number"},
		{ok + `{"timestamp": 1, "input_length": -6, "output_length": 6}`, "line 2: input_length -6 is negative"},
		{ok + `{"timestamp": 1, "input_length": 6, "output_length": 6, "hash_ids": [1, "a"]}`, "line 2: hash_ids must hold whole numbers"},
		{ok + `{"timestamp": 1, "input_length": 6, "output_length": 6`, "line 2: invalid JSON"},
		{ok + `{"timestamp": 1, "input_length": 6, "output_length": 6} x`, "line 2: invalid JSON"},
		{ok + `{"timestamp": 1e300, "input_length": 6, "output_length": 6}`, `line 2: timestamp "1e+300" is more than`},
		{ok + ok + `{"timestamp": -1001, "input_length": 6, "output_length": 6}`, "line 3: timestamp is 1.001s before line 2's"},
		{ok + `{"timestamp": 1, "input_length": 6, "output_length": 6, "hash_ids": [` + strings.Repeat("1,", maxTraceLine/2) + `1]}`, "line 2: longer than"},
	} {
		_, err := ParseMooncake(strings.NewReader(tc.text))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "workload: mooncake trace") {
			t.Errorf("ParseMooncake(%.200q) = %v, want an error with %q", tc.text, err, tc.want)
		}
	}
}

func TestParseTraceTellsFormats(t *testing.T) {
	tr := mustParse(t, parseAnyString, "\ufeff\n  \n"+`{"timestamp": 0, "input_length": 6, "output_length": 6}`)
	if tr.Format != FormatMooncake || tr.Rows[0].Line != 3 {
		t.Errorf("JSONL after blank lines: %+v", tr)
	}
	tr = mustParse(t, parseAnyString, "\n\nTIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,1,2\n")
	if tr.Format != FormatAzure || tr.Rows[0].Line != 4 {
		t.Errorf("CSV after blank lines: %+v", tr)
	}
	// Errors keep the file's line numbers too.
	_, err := ParseTrace(strings.NewReader("\n" + `{"timestamp": 0, "input_length": 6, "output_length": 6}` + "\n{"))
	if err == nil || !strings.Contains(err.Error(), "line 3") {
		t.Errorf("error %v, want line 3", err)
	}
	for _, empty := range []string{"", " \n\r\n", "\ufeff"} {
		if _, err := ParseTrace(strings.NewReader(empty)); err == nil || !strings.Contains(err.Error(), "empty") {
			t.Errorf("ParseTrace(%q) = %v", empty, err)
		}
	}
	if _, err := LoadTrace(filepath.Join(t.TempDir(), "none.csv")); err == nil {
		t.Error("LoadTrace of a missing file succeeded")
	}
	p := filepath.Join(t.TempDir(), "bad.jsonl")
	if err := os.WriteFile(p, []byte("{\"timestamp\": 0}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadTrace(p); err == nil || !strings.Contains(err.Error(), "line 1: missing input_length") || !strings.Contains(err.Error(), p) {
		t.Errorf("LoadTrace of a bad file: %v", err)
	}
}

// The shared traces are what their README says they are.
func TestRealTraces(t *testing.T) {
	for _, tc := range []struct {
		file    string
		format  TraceFormat
		rows    int
		minutes float64
		in, out float64
	}{
		{AzureConvFile, FormatAzure, 19366, 58, 1155, 211},
		{AzureCodeFile, FormatAzure, 8819, 57, 2048, 28},
		{MooncakeFile, FormatMooncake, 3993, 17, 15325, 149},
	} {
		tr := loadTrace(t, tc.file)
		// Unclamped: the README's means are of the raw counts.
		s, err := tr.Summary(TraceOptions{MaxModelLen: maxReplayModelLen})
		if err != nil {
			t.Fatal(err)
		}
		if tr.Format != tc.format || s.Requests != tc.rows || math.Abs(s.Span.Minutes()-tc.minutes) > 1 ||
			math.Abs(s.MeanInput-tc.in) > 1 || math.Abs(s.MeanOutput-tc.out) > 1 || s.Clamped != 0 || s.Raised != 0 || s.MismatchedIDs != 0 || tr.Reordered != 0 {
			t.Errorf("%s: %+v, reordered %d", tc.file, s, tr.Reordered)
		}
		for _, maxLen := range []int{DefaultMaxModelLen, 131072} {
			s, err := tr.Summary(TraceOptions{MaxModelLen: maxLen})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s at max_model_len %d: %d requests over %v, %.3f req/s, mean in %.1f out %.1f, clamped %d, raised %d, shared prefix %.4f",
				tc.file, maxLen, s.Requests, s.Span.Round(time.Millisecond), s.MeanRate, s.MeanInput, s.MeanOutput, s.Clamped, s.Raised, s.SharedPrefix)
		}
	}
}

// testTrace is a trace of n rows with the given gaps (cycled) and token counts.
func testTrace(n int, gaps []time.Duration, in, out int) *Trace {
	tr := &Trace{Format: FormatAzure}
	var at time.Duration
	for i := range n {
		tr.Rows = append(tr.Rows, TraceRow{Line: i + 2, At: at, Input: in + i%7, Output: out + i%3})
		at += gaps[i%len(gaps)]
	}
	return tr
}

func TestTraceReplayDeterministic(t *testing.T) {
	tr := loadTrace(t, AzureCodeFile)
	ladder := Ladder{{Rate: 50, Duration: 10 * time.Second, Warmup: true}, {Rate: 100, Duration: 5 * time.Second}}
	run := func(seed uint64) []Request {
		g, err := NewTraceReplay("t", seed, ladder, tr, TraceOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return Collect(g)
	}
	a, b, c := run(1), run(1), run(2)
	if len(a) != 1000 || !reflect.DeepEqual(a, b) {
		t.Fatalf("same seed: %d and %d requests, equal %v", len(a), len(b), reflect.DeepEqual(a, b))
	}
	sameClass := 0
	for i := range a {
		if a[i].At != c[i].At || a[i].PromptTokens() != c[i].PromptTokens() || a[i].MaxTokens != c[i].MaxTokens {
			t.Fatalf("request %d: the seed changed the trace's times or tokens", i)
		}
		if a[i].Prompt == c[i].Prompt {
			t.Fatalf("request %d: seeds 1 and 2 sent the same prompt", i)
		}
		if a[i].FairnessID == c[i].FairnessID {
			sameClass++
		}
	}
	if sameClass > len(a)/2 {
		t.Errorf("seeds 1 and 2 agree on %d of %d tenants", sameClass, len(a))
	}
	// A request's class depends on the seed and its place only, not on the ladder.
	g, err := NewTraceReplay("t", 1, ConstantLadder(2.5, 400*time.Second), tr, TraceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range Collect(g) {
		if r.Class != a[i].Class || r.FairnessID != a[i].FairnessID || r.Prompt != a[i].Prompt {
			t.Fatalf("request %d: class %s/%s under another ladder, %s/%s before", i, r.Class, r.FairnessID, a[i].Class, a[i].FairnessID)
		}
	}
}

func TestTraceReplayRate(t *testing.T) {
	for _, file := range []string{AzureConvFile, AzureCodeFile, MooncakeFile} {
		tr := loadTrace(t, file)
		const rate, secs = 30.0, 100
		g, err := NewTraceReplay("t", 1, ConstantLadder(rate, secs*time.Second), tokenless(tr), TraceOptions{})
		if err != nil {
			t.Fatal(err)
		}
		rs := Collect(g)
		if len(rs) != rate*secs {
			t.Fatalf("%s: %d requests, want %v", file, len(rs), rate*secs)
		}
		// The first rate*secs rows, scaled by one factor: the trace time up to the next row,
		// squeezed into the ladder's 100 s.
		scale := secs / tr.Rows[len(rs)].At.Seconds()
		for i, r := range rs {
			want := time.Duration(float64(tr.Rows[i].At) * scale)
			if d := r.At - want; d < -time.Microsecond || d > time.Microsecond {
				t.Fatalf("%s: request %d at %v, want %v", file, i, r.At, want)
			}
		}
		// Mean rate over the second half, where the trace's own rate varies.
		half := 0
		for _, r := range rs {
			if r.At >= secs/2*time.Second {
				half++
			}
		}
		t.Logf("%s: %d requests in 100 s (the trace sped up %.1fx), %d in the second half", file, len(rs), 1/scale, half)
	}
}

// tokenless is a copy of tr with one-token prompts and outputs, for tests about times and
// ids: the prompts are then each block's first word.
func tokenless(tr *Trace) *Trace {
	small := *tr
	small.Rows = slices.Clone(tr.Rows)
	for i := range small.Rows {
		small.Rows[i].Input, small.Rows[i].Output = 1, 1
	}
	return &small
}

// The published ladder, shortened, over the real traces: every stage gets its rate.
func TestTraceReplayFollowsLadder(t *testing.T) {
	ladder := SharedPrefixLadder().Stretch(0.3) // 5,125 requests
	for _, file := range []string{AzureConvFile, MooncakeFile} {
		g, err := NewTraceReplay("t", 1, ladder, tokenless(loadTrace(t, file)), TraceOptions{})
		if err != nil {
			t.Fatal(err)
		}
		counts := make([]int, len(ladder))
		prev := time.Duration(0)
		for _, r := range Collect(g) {
			if r.At < prev || r.Stage != ladder.StageAt(r.At) {
				t.Fatalf("%s: request %d at %v in stage %d after %v", file, r.Seq, r.At, r.Stage, prev)
			}
			prev = r.At
			counts[r.Stage]++
		}
		for i, s := range ladder {
			if want := s.Rate * s.Duration.Seconds(); math.Abs(float64(counts[i])-want) > 1 {
				t.Errorf("%s: stage %d: %d requests, want %.1f", file, i, counts[i], want)
			}
		}
		// The ladder is longer than the Mooncake trace (3,993 rows): it wraps.
		if st := g.Stats(); st.Passes != map[string]int{AzureConvFile: 0, MooncakeFile: 1}[file] {
			t.Errorf("%s: %d requests in %d passes", file, st.Requests, st.Passes)
		}
	}
}

// A second pass replays the trace's reuse with blocks of its own.
func TestTraceReplayWrapsWithFreshBlocks(t *testing.T) {
	tr := tokenless(loadTrace(t, MooncakeFile))
	n := len(tr.Rows)
	g, err := NewTraceReplay("t", 1, ConstantLadder(float64(n), 2*time.Second), tr, TraceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rs := Collect(g)
	if len(rs) != 2*n || g.Stats().Passes != 1 {
		t.Fatalf("%d requests, %d passes", len(rs), g.Stats().Passes)
	}
	// Pass 2 starts a mean gap after pass 1's last row (here 1 s / n of the run).
	if gap, mean := rs[n].At-rs[n-1].At, time.Second/time.Duration(n); gap < mean*9/10 || gap > mean*11/10 {
		t.Errorf("gap between the passes %v, want about %v", gap, mean)
	}
	same := 0
	for i := range n {
		a, b := rs[i], rs[n+i]
		if b.At-a.At != rs[n].At || b.PromptTokens() != a.PromptTokens() || b.MaxTokens != a.MaxTokens {
			t.Fatalf("row %d: pass 2 at %v (%d tokens), pass 1 at %v (%d)", i, b.At, b.PromptTokens(), a.At, a.PromptTokens())
		}
		if a.Prompt == b.Prompt {
			same++
		}
		// Within a pass, rows starting with the same id start with the same word.
		if i > 0 && tr.Rows[i].HashIDs[0] == tr.Rows[i-1].HashIDs[0] && (a.Prompt != rs[i-1].Prompt || b.Prompt != rs[n+i-1].Prompt) {
			t.Fatalf("rows %d and %d share their first block but not its text", i-1, i)
		}
	}
	if same > n/1000 {
		t.Errorf("%d of %d rows start with the same word in both passes", same, n)
	}
}

func TestTraceReplayLadderAndWrap(t *testing.T) {
	// Five rows with gaps 1, 2, 1, 4 s (mean 2 s): a pass lasts 10 s of trace time.
	tr := testTrace(5, []time.Duration{time.Second, 2 * time.Second, time.Second, 4 * time.Second}, 3, 2)
	ladder := Ladder{
		{Rate: 1, Duration: 4 * time.Second, Warmup: true}, // rows 0-3
		{Rate: 0, Duration: 10 * time.Second},              // a pause
		{Rate: 0.5, Duration: 3 * time.Second},             // 1.5 rows: rounded with the others, 2
		{Rate: 2.5, Duration: 2 * time.Second},             // 5 rows, wrapping
	}
	g, err := NewTraceReplay("w", 1, ladder, tr, TraceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rs := Collect(g)
	var got []string
	for _, r := range rs {
		got = append(got, fmt.Sprintf("%d@%v/%d", r.Seq%5, r.At, r.Stage))
		if r.Stage != ladder.StageAt(r.At) {
			t.Errorf("request %d at %v labelled stage %d", r.Seq, r.At, r.Stage)
		}
		if want := 3 + r.Seq%5%7; r.PromptTokens() != want {
			t.Errorf("request %d: %d prompt tokens, want row %d's %d", r.Seq, r.PromptTokens(), r.Seq%5, want)
		}
	}
	// Stage 0: rows 0-3 (trace 0,1,3,4 s) and row 4 at 8 s next: x0.5.
	// Stage 2: rows 4 (8 s) and 0' (10 s) up to 1' (11 s): 3 s over 3 s.
	// Stage 3: rows 1'-4' (11, 13, 14, 18 s) and 0'' (20 s) up to 1'' (21 s): 10 s into 2 s.
	want := []string{"0@0s/0", "1@500ms/0", "2@1.5s/0", "3@2s/0",
		"4@14s/2", "0@16s/2",
		"1@17s/3", "2@17.4s/3", "3@17.6s/3", "4@18.4s/3", "0@18.8s/3"}
	if !slices.Equal(got, want) {
		t.Errorf("replay\n %v, want\n %v", got, want)
	}
	if st := g.Stats(); st.Requests != 11 || st.Passes != 2 || st.InputTokens == 0 {
		t.Errorf("stats %+v", st)
	}
	if _, ok := g.Next(); ok {
		t.Error("a request after the ladder's end")
	}
}

func TestTraceReplayDegenerateTimes(t *testing.T) {
	// All rows at one instant: a pass's rows arrive together; passes are a second of trace
	// time apart.
	tr := testTrace(3, []time.Duration{0}, 1, 1)
	g, err := NewTraceReplay("d", 1, ConstantLadder(2, 3*time.Second), tr, TraceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var ats []time.Duration
	for _, r := range Collect(g) {
		ats = append(ats, r.At)
	}
	if want := []time.Duration{0, 0, 0, 1500 * time.Millisecond, 1500 * time.Millisecond, 1500 * time.Millisecond}; !slices.Equal(ats, want) {
		t.Errorf("arrivals %v, want %v", ats, want)
	}
	if _, err := NewTraceReplay("d", 1, quickLadder(), &Trace{}, TraceOptions{}); err == nil {
		t.Error("an empty trace was accepted")
	}
	if _, err := NewTraceReplay("d", 1, Ladder{}, tr, TraceOptions{}); err == nil {
		t.Error("an empty ladder was accepted")
	}
	for _, o := range []TraceOptions{{MaxModelLen: 1}, {MaxModelLen: -5}, {Classes: MixedSLOOptions{Classes: []Class{}}}} {
		if _, err := NewTraceReplay("d", 1, quickLadder(), tr, o); err == nil {
			t.Errorf("options %+v accepted", o)
		}
	}
}

func TestAzureReplayTokens(t *testing.T) {
	tr := loadTrace(t, AzureConvFile)
	g, err := NewTraceReplay("a", 1, ConstantLadder(100, 5*time.Second), tr, TraceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rs := Collect(g)
	heads := map[string]bool{}
	for i, r := range rs {
		row := tr.Rows[i]
		if r.API != Completions || r.PromptTokens() != row.Input || tokens.Count(r.Prompt) != row.Input || len(r.Prompt) != 4*row.Input ||
			r.MaxTokens != row.Output || !r.IgnoreEOS || !r.Stream || r.SessionID != "" {
			t.Fatalf("request %d: %d prompt tokens, max_tokens %d; row %+v", i, r.PromptTokens(), r.MaxTokens, row)
		}
		// Unique text: no two prompts share even their first 16-token cache block.
		if row.Input >= 16 {
			head := r.Prompt[:64]
			if heads[head] {
				t.Fatalf("request %d repeats an earlier prompt's first block", i)
			}
			heads[head] = true
		}
	}
}

// expectedShared is the number of leading tokens two rows' prompts have in common when
// each id is one block of bt tokens (a partial block being the full one's beginning).
func expectedShared(a, b TraceRow, inA, inB, bt int) int {
	shared := 0
	for i := 0; i < len(a.HashIDs) && i < len(b.HashIDs) && a.HashIDs[i] == b.HashIDs[i]; i++ {
		ta, tb := min(bt, inA-i*bt), min(bt, inB-i*bt)
		if ta <= 0 || tb <= 0 {
			break
		}
		shared += min(ta, tb)
		if ta != tb {
			break
		}
	}
	return shared
}

// commonTokens is the length of the common prefix of two prompts in whole tokens.
func commonTokens(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n / tokens.BytesPerToken
}

func TestMooncakePrefixSharing(t *testing.T) {
	// Blocks of 8 tokens, partial last blocks, ids that do not cover the input, and ids
	// beyond it.
	tr := &Trace{Format: FormatMooncake, BlockTokens: 8, Rows: []TraceRow{
		{At: 0, Input: 24, Output: 1, HashIDs: []int64{1, 2, 3}},
		{At: 1, Input: 20, Output: 2, HashIDs: []int64{1, 2, 4}},   // shares 16
		{At: 2, Input: 13, Output: 3, HashIDs: []int64{1, 2}},      // 8 + 5 of block 2
		{At: 3, Input: 30, Output: 4, HashIDs: []int64{1, 2, 3}},   // 24, then 6 of its own
		{At: 4, Input: 8, Output: 5, HashIDs: []int64{9, 2, 3, 4}}, // nothing: a different first block
		{At: 5, Input: 3, Output: 6, HashIDs: []int64{1}},          // 3 of block 1
	}}
	g, err := NewTraceReplay("m", 1, ConstantLadder(6, time.Second), tr, TraceOptions{MaxModelLen: 28})
	if err != nil {
		t.Fatal(err)
	}
	rs := Collect(g)
	ins := []int{24, 20, 13, 24, 8, 3} // row 3 clamped: 28 - 4
	for i, r := range rs {
		if r.PromptTokens() != ins[i] || r.MaxTokens != tr.Rows[i].Output {
			t.Errorf("request %d: %d tokens, max %d", i, r.PromptTokens(), r.MaxTokens)
		}
		for j := range i {
			if got, want := commonTokens(rs[j].Prompt, r.Prompt), expectedShared(tr.Rows[j], tr.Rows[i], ins[j], ins[i], 8); got != want {
				t.Errorf("requests %d and %d share %d tokens, want %d", j, i, got, want)
			}
		}
	}
	if st := g.Stats(); st.Clamped != 1 || st.Requests != 6 {
		t.Errorf("stats %+v", st)
	}
	s, err := tr.Summary(TraceOptions{MaxModelLen: 28})
	if err != nil {
		t.Fatal(err)
	}
	// Shared with an earlier request: 0, 16, 13, 24, 0, 3 of 92 tokens.
	if want := 56.0 / 92; s.SharedPrefix != want || s.Clamped != 1 || s.MismatchedIDs != 2 {
		t.Errorf("summary %+v, want shared %v", s, want)
	}
}

// On the real trace: every pair of requests with a common first id, and each request
// with its predecessor, share exactly the tokens of their common ids, and a prompt is as
// long as its input_length. (That the next block's first word differs is a matter of
// chance, 1 in 17,576, so a pair could in principle share one word more; the seed is fixed
// and none does. The caches' 16-token blocks could not see such a word anyway.)
func TestMooncakeRealPrefixSharing(t *testing.T) {
	tr := loadTrace(t, MooncakeFile)
	g, err := NewTraceReplay("m", 1, quickLadder(), tr, TraceOptions{MaxModelLen: 131072})
	if err != nil {
		t.Fatal(err)
	}
	prompt := func(i int) (string, int) {
		in, _, _, _ := fitRow(tr.Rows[i].Input, tr.Rows[i].Output, 131072)
		return g.prompt(i, 0, &tr.Rows[i], in), in
	}
	// The stream and the direct construction agree.
	for i := range 3 {
		r, _ := g.Next()
		if p, in := prompt(i); r.Prompt != p || r.PromptTokens() != tr.Rows[i].Input || in != tr.Rows[i].Input {
			t.Fatalf("request %d differs from its prompt, or has %d tokens for %d", i, r.PromptTokens(), tr.Rows[i].Input)
		}
	}
	// Pairs: the first request with each first id against every later one with it (up to a
	// budget), and neighbours.
	firstWith := map[int64]int{}
	pairs, sharing := 0, 0
	for i := 1; i < len(tr.Rows) && pairs < 400; i++ {
		js := []int{i - 1}
		if ids := tr.Rows[i].HashIDs; len(ids) > 0 {
			if j, ok := firstWith[ids[0]]; ok {
				js = append(js, j)
			} else {
				firstWith[ids[0]] = i
			}
		}
		for _, j := range js {
			if j == i-1 && i%10 != 0 && len(js) == 1 {
				continue // a sample of the neighbours is enough
			}
			pi, ini := prompt(i)
			pj, inj := prompt(j)
			want := expectedShared(tr.Rows[j], tr.Rows[i], inj, ini, MooncakeBlockTokens)
			if got := commonTokens(pi, pj); got != want {
				t.Fatalf("rows %d and %d share %d tokens, want %d", j, i, got, want)
			}
			if tokens.Count(pi) != ini {
				t.Fatalf("row %d: %d tokens, want %d", i, tokens.Count(pi), ini)
			}
			pairs++
			if want > 0 {
				sharing++
			}
		}
	}
	if sharing < 100 {
		t.Errorf("only %d of %d pairs share a prefix", sharing, pairs)
	}
	t.Logf("%d pairs checked, %d sharing a prefix", pairs, sharing)
}

func TestTraceClamping(t *testing.T) {
	for _, tc := range []struct {
		in, out, maxLen, wantIn, wantOut int
		clamped, raised                  bool
	}{
		{100, 10, 200, 100, 10, false, false},
		{190, 10, 200, 190, 10, false, false},
		{191, 10, 200, 190, 10, true, false},
		{50, 300, 200, 1, 199, true, false},
		{0, 10, 200, 1, 10, false, true},
		{10, 0, 200, 10, 1, false, true},
		{0, 0, 2, 1, 1, false, true},
		{500, 0, 100, 99, 1, true, true},
	} {
		in, out, clamped, raised := fitRow(tc.in, tc.out, tc.maxLen)
		if in != tc.wantIn || out != tc.wantOut || clamped != tc.clamped || raised != tc.raised {
			t.Errorf("fitRow(%d, %d, %d) = %d, %d, %v, %v", tc.in, tc.out, tc.maxLen, in, out, clamped, raised)
		}
	}
	// Through a replay: counted, and a clamped request is exactly at the limit.
	tr := testTrace(20, []time.Duration{time.Second}, 60, 10) // inputs 60-66, outputs 10-12
	g, err := NewTraceReplay("c", 1, ConstantLadder(20, time.Second), tr, TraceOptions{MaxModelLen: 73})
	if err != nil {
		t.Fatal(err)
	}
	clamped := 0
	for i, r := range Collect(g) {
		row := tr.Rows[i]
		if row.Input+row.Output > 73 {
			clamped++
			if r.PromptTokens()+r.MaxTokens != 73 || r.MaxTokens != row.Output {
				t.Errorf("request %d: %d + %d tokens for row %+v", i, r.PromptTokens(), r.MaxTokens, row)
			}
		} else if r.PromptTokens() != row.Input || r.MaxTokens != row.Output {
			t.Errorf("request %d changed: %d + %d tokens for row %+v", i, r.PromptTokens(), r.MaxTokens, row)
		}
	}
	if st := g.Stats(); st.Clamped != clamped || clamped == 0 {
		t.Errorf("stats %+v, %d rows over the limit", st, clamped)
	}
	if s, _ := tr.Summary(TraceOptions{MaxModelLen: 73}); s.Clamped != clamped {
		t.Errorf("summary counts %d clamped, the replay %d", s.Clamped, clamped)
	}
}

func TestTraceClassShares(t *testing.T) {
	tr := testTrace(4000, []time.Duration{time.Millisecond, 5 * time.Millisecond}, 1, 1)
	g, err := NewTraceReplay("s", 7, ConstantLadder(400, 10*time.Second), tr, TraceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rs := Collect(g)
	classes := map[string]Class{}
	for _, c := range DefaultClasses() {
		classes[c.Name] = c
	}
	counts, tenants := map[string]int{}, map[string]int{}
	for _, r := range rs {
		c, ok := classes[r.Class]
		if !ok || r.SLOTTFT != c.SLOTTFT || r.SLOTPOT != c.SLOTPOT || r.Priority != c.Priority || r.Objective != c.Name ||
			!strings.HasPrefix(r.FairnessID, c.Name+"-") || r.API != Completions {
			t.Fatalf("request %+v", r)
		}
		counts[r.Class]++
		tenants[r.FairnessID]++
	}
	for name, want := range map[string]float64{"interactive": 0.5, "standard": 0.3, "batch": 0.2} {
		if got := float64(counts[name]) / float64(len(rs)); math.Abs(got-want) > 0.025 {
			t.Errorf("class %s: share %.3f of %d, want %.2f", name, got, len(rs), want)
		}
		// The noisy tenant sends 5x each of the three others: 5/8 of its class.
		if got := float64(tenants[name+"-noisy"]) / float64(counts[name]); math.Abs(got-5.0/8) > 0.05 {
			t.Errorf("class %s: noisy tenant's share %.3f, want 0.625", name, got)
		}
	}
	if len(tenants) != 12 {
		t.Errorf("%d tenants, want 12", len(tenants))
	}
	// The mix is configurable like mixed-slo's.
	g, err = NewTraceReplay("s", 7, ConstantLadder(400, time.Second), tr, TraceOptions{
		Classes: MixedSLOOptions{Shares: map[string]float64{"standard": 0, "batch": 0}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range Collect(g) {
		if r.Class != "interactive" {
			t.Fatalf("class %s with only interactive weighted", r.Class)
		}
	}
}

func TestTraceWorkloadsByName(t *testing.T) {
	for _, name := range []string{NameAzureConv, NameAzureCode, NameMooncake} {
		g, err := New(name, Options{Seed: 1, Ladder: ConstantLadder(10, time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		rs := Collect(g)
		if len(rs) != 10 || rs[0].At != 0 || !strings.Contains(rs[0].ID, "-000000") {
			t.Errorf("%s: %d requests, first %s at %v", name, len(rs), rs[0].ID, rs[0].At)
		}
		if Describe(name) == "" {
			t.Errorf("%s has no description", name)
		}
	}
	if _, err := New(NameTrace, Options{}); err == nil || !strings.Contains(err.Error(), "TraceOptions.Path") {
		t.Errorf("trace without a path: %v", err)
	}
	if _, err := New(NameTrace, Options{Trace: TraceOptions{Path: filepath.Join(t.TempDir(), "x.csv")}}); err == nil {
		t.Error("trace with a missing file accepted")
	}
	// An explicit path replaces a named trace's file.
	g, err := New(NameMooncake, Options{Seed: 1, Ladder: ConstantLadder(10, time.Second), Trace: TraceOptions{Path: findTrace(t, AzureCodeFile)}})
	if err != nil {
		t.Fatal(err)
	}
	if tr := g.(*TraceReplay).Trace(); tr.Format != FormatAzure {
		t.Errorf("the path was not used: format %s", tr.Format)
	}
	g, err = New(NameTrace, Options{Seed: 1, Ladder: ConstantLadder(10, time.Second), MaxRequests: 3, Trace: TraceOptions{Path: findTrace(t, MooncakeFile)}})
	if err != nil {
		t.Fatal(err)
	}
	if rs := Collect(g); len(rs) != 3 || !strings.HasPrefix(rs[0].ID, "tr-") {
		t.Errorf("generic trace: %d requests", len(rs))
	}
}

func TestFindTrace(t *testing.T) {
	// From the package directory, the walk up finds shared/ beside the repository.
	p, err := FindTrace(MooncakeFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(p, filepath.Join("shared", "traces", MooncakeFile)) {
		t.Errorf("found %s", p)
	}
	if _, err := FindTrace("no-such-trace.csv"); err == nil || !strings.Contains(err.Error(), TraceDirEnv) {
		t.Errorf("missing trace: %v", err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, MooncakeFile), []byte(`{"timestamp": 0, "input_length": 1, "output_length": 1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(TraceDirEnv, dir)
	if p, err := FindTrace(MooncakeFile); err != nil || p != filepath.Join(dir, MooncakeFile) {
		t.Errorf("with $%s: %s, %v", TraceDirEnv, p, err)
	}
	if _, err := FindTrace(AzureConvFile); err == nil {
		t.Errorf("with $%s, a file not there was found elsewhere", TraceDirEnv)
	}
	g, err := New(NameMooncake, Options{Ladder: ConstantLadder(1, 3*time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(Collect(g)); n != 3 {
		t.Errorf("%d requests from the one-row trace of $%s", n, TraceDirEnv)
	}
}

// checkParsed holds what any successfully parsed trace must satisfy.
func checkParsed(t *testing.T, tr *Trace, err error, format TraceFormat) {
	if err != nil {
		if !strings.HasPrefix(err.Error(), "workload: ") {
			t.Fatalf("error without context: %v", err)
		}
		return
	}
	if tr.Format != format || len(tr.Rows) == 0 || tr.Rows[0].At != 0 {
		t.Fatalf("parsed %+v", tr)
	}
	for i, r := range tr.Rows {
		if r.Input < 0 || r.Output < 0 || r.At < 0 || r.At > maxTraceSpan*2 || (i > 0 && r.At < tr.Rows[i-1].At) || r.Line < 1 {
			t.Fatalf("row %d: %+v", i, r)
		}
	}
	// Whatever parses replays without trouble.
	g, err := NewTraceReplay("f", 1, ConstantLadder(1000, 10*time.Millisecond), tr, TraceOptions{MaxModelLen: 64})
	if err != nil {
		t.Fatal(err)
	}
	prev := time.Duration(0)
	for _, r := range Collect(g) {
		if r.At < prev || r.PromptTokens() < 1 || r.MaxTokens < 1 || r.PromptTokens()+r.MaxTokens > 64 {
			t.Fatalf("replayed %+v", r)
		}
		prev = r.At
	}
	if _, err := tr.Summary(TraceOptions{}); err != nil {
		t.Fatal(err)
	}
}

func FuzzParseAzure(f *testing.F) {
	f.Add([]byte("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.9951690,396,109\n"))
	f.Add([]byte("GeneratedTokens,x,TIMESTAMP,ContextTokens\r\n1,,2024-05-10T00:00:00Z,0\r\n"))
	f.Add([]byte("1.5,2,3\n1.25,4,5\n"))
	f.Add([]byte("TIMESTAMP,ContextTokens,GeneratedTokens\n\"2023-11-16 18:15:46\",-1,4\n"))
	f.Add([]byte("\ufeff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, err := ParseAzure(bytes.NewReader(b))
		checkParsed(t, tr, err, FormatAzure)
	})
}

func FuzzParseMooncake(f *testing.F) {
	f.Add([]byte(`{"timestamp": 0, "input_length": 600, "output_length": 6, "hash_ids": [0, 1]}` + "\n" +
		`{"timestamp": 27, "input_length": 513, "output_length": 1, "hash_ids": [0, 2]}` + "\n"))
	f.Add([]byte(`{"timestamp": 5.5, "input_length": 0, "output_length": 0}` + "\n\n" + `{"timestamp": 4}`))
	f.Add([]byte(`{"timestamp": 1e3, "input_length": 1, "output_length": 1, "hash_ids": [-9223372036854775808]}`))
	f.Add([]byte("[]\nnull\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, err := ParseMooncake(bytes.NewReader(b))
		checkParsed(t, tr, err, FormatMooncake)
		// Detection by content agrees on what starts with an object.
		if t2, err2 := ParseTrace(bytes.NewReader(b)); err == nil && (err2 != nil || !reflect.DeepEqual(tr, t2)) &&
			bytes.HasPrefix(bytes.TrimLeft(b, " \t\r\n"), []byte("{")) {
			t.Fatalf("ParseTrace disagrees: %v", err2)
		}
	})
}

func TestTraceReplayStartRow(t *testing.T) {
	tr := loadTrace(t, AzureConvFile)
	n := len(tr.Rows)
	const rate, d = 100, 5 * time.Second
	for _, start := range []int{0, 7, n - 3, n + 7} {
		g, err := NewTraceReplay("a", 1, ConstantLadder(rate, d), tr, TraceOptions{StartRow: start})
		if err != nil {
			t.Fatal(err)
		}
		rs := Collect(g)
		if len(rs) != rate*int(d/time.Second) {
			t.Fatalf("start %d: %d requests, want %d", start, len(rs), rate*int(d/time.Second))
		}
		for i, r := range rs {
			row := tr.Rows[(start+i)%n]
			if r.PromptTokens() != row.Input || r.MaxTokens != row.Output || r.At < 0 || r.At >= d {
				t.Fatalf("start %d, request %d at %v: %d prompt tokens, max_tokens %d; row %+v", start, i, r.At, r.PromptTokens(), r.MaxTokens, row)
			}
		}
	}
	if _, err := NewTraceReplay("a", 1, ConstantLadder(rate, d), tr, TraceOptions{StartRow: -1}); err == nil {
		t.Error("a negative StartRow was accepted")
	}
}
