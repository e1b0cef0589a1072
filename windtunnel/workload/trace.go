package workload

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// TraceFormat names the file format of a request trace.
type TraceFormat string

const (
	// FormatAzure is the CSV of the Azure LLM inference traces: a header
	// TIMESTAMP,ContextTokens,GeneratedTokens (columns found by name, in any order, others
	// ignored; a file without a header has them in that order) and one request a row. The
	// timestamp is wall-clock time ("2023-11-16 18:15:46.6805900", with or without a "T"
	// and a zone) or a plain number of seconds.
	FormatAzure TraceFormat = "azure"
	// FormatMooncake is the JSONL of the Mooncake traces: one object a line with timestamp
	// (milliseconds), input_length, output_length and optionally hash_ids, the ids of the
	// prompt's blocks of MooncakeBlockTokens tokens in order (equal ids, equal content).
	// Other fields are ignored.
	FormatMooncake TraceFormat = "mooncake"
)

const (
	// MooncakeBlockTokens is the number of prompt tokens one Mooncake hash id stands for.
	MooncakeBlockTokens = 512
	// TraceReorderTolerance is how far a row's timestamp may fall behind an earlier row's.
	// Logged traces are sometimes slightly out of order (requests stamped by concurrent
	// writers); such rows are sorted into place. A larger step back is more likely two files
	// joined or a corrupt one, so parsing fails rather than guess.
	TraceReorderTolerance = time.Second
	// maxTraceTokens bounds a row's token counts: far beyond any context window, low enough
	// that sums over millions of rows cannot overflow.
	maxTraceTokens = 1 << 30
	// maxTraceLine bounds a JSONL line (a million-token prompt's ids take ~16 KiB).
	maxTraceLine = 4 << 20
	// maxTraceSpan bounds the time a trace covers so that offsets stay within a Duration.
	maxTraceSpan = 100 * 365 * 24 * time.Hour
)

// TraceRow is one request of a trace.
type TraceRow struct {
	Line   int           // the file's line the row came from (1-based), for messages
	At     time.Duration // arrival, relative to the earliest row of the trace
	Input  int           // prompt tokens
	Output int           // generated tokens
	// HashIDs are the ids of the prompt's blocks of Trace.BlockTokens tokens, in order
	// (Mooncake); nil for a trace without prefix structure. Read-only.
	HashIDs []int64
}

// Trace is a parsed request trace: rows in arrival order, the first at offset 0. A Trace
// is read-only once parsed, so one may feed any number of replays at once.
type Trace struct {
	Format TraceFormat
	Rows   []TraceRow
	// BlockTokens is the number of prompt tokens a hash id stands for
	// (MooncakeBlockTokens); 0 for a trace without hash ids.
	BlockTokens int
	// Reordered counts rows that were behind an earlier row (within TraceReorderTolerance)
	// and were sorted into place.
	Reordered int
}

// Span is the time from the first row's arrival to the last's.
func (t *Trace) Span() time.Duration {
	if len(t.Rows) == 0 {
		return 0
	}
	return t.Rows[len(t.Rows)-1].At
}

// MeanRate is the trace's own mean arrival rate in requests per second: the gaps between
// its rows per second of its span; 0 when all rows arrive at one instant.
func (t *Trace) MeanRate() float64 {
	if span := t.Span(); span > 0 {
		return float64(len(t.Rows)-1) / span.Seconds()
	}
	return 0
}

// LoadTrace reads and parses a trace file (see ParseTrace).
func LoadTrace(path string) (*Trace, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("workload: trace: %w", err)
	}
	defer f.Close()
	t, err := ParseTrace(f)
	if err != nil {
		return nil, fmt.Errorf("%w (file %s)", err, path)
	}
	return t, nil
}

// ParseTrace parses a trace in either format, told apart by content rather than by file
// name: a Mooncake file's first non-blank character is '{', an Azure CSV's never is.
func ParseTrace(r io.Reader) (*Trace, error) {
	const window = 64 << 10
	br := bufio.NewReaderSize(r, window)
	// Peek rather than read, so that the parsers see every line and number them right.
	b, err := br.Peek(window)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
		return nil, fmt.Errorf("workload: trace: %w", err)
	}
	b = bytes.TrimPrefix(b, utf8BOM)
	i := bytes.IndexFunc(b, func(r rune) bool { return r != ' ' && r != '\t' && r != '\r' && r != '\n' })
	switch {
	case i >= 0 && b[i] == '{':
		return parseMooncake(br)
	case i < 0 && len(b) < window-len(utf8BOM):
		return nil, errors.New("workload: trace is empty")
	}
	return parseAzure(br)
}

var utf8BOM = []byte("\ufeff")

// ParseAzure parses a trace in FormatAzure.
func ParseAzure(r io.Reader) (*Trace, error) { return parseAzure(r) }

// ParseMooncake parses a trace in FormatMooncake.
func ParseMooncake(r io.Reader) (*Trace, error) { return parseMooncake(r) }

// timestampLayouts are the wall-clock forms an Azure timestamp may take; any fraction of a
// second after the seconds is accepted by time.Parse without being in the layout.
var timestampLayouts = [...]string{
	"2006-01-02 15:04:05",
	"2006-01-02 15:04:05Z07:00",
	"2006-01-02T15:04:05",
	"2006-01-02T15:04:05Z07:00",
}

// stampParser turns the timestamps of one file into offsets from its first row's. The
// first timestamp fixes the form (a number of seconds, or one of the layouts) that every
// other row must use: a file mixing forms has no single clock.
type stampParser struct {
	set     bool
	numeric bool
	layout  string
	t0      time.Time
	x0      float64
}

func (p *stampParser) parse(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if !p.set {
		if x, err := strconv.ParseFloat(s, 64); err == nil {
			if math.IsNaN(x) || math.IsInf(x, 0) {
				return 0, fmt.Errorf("timestamp %q is not a finite number", s)
			}
			p.set, p.numeric, p.x0 = true, true, x
			return 0, nil
		}
		for _, l := range timestampLayouts {
			if t, err := time.Parse(l, s); err == nil {
				p.set, p.layout, p.t0 = true, l, t
				return 0, nil
			}
		}
		return 0, fmt.Errorf("timestamp %q is neither a date-time like 2023-11-16 18:15:46.6805900 nor a number of seconds", s)
	}
	if p.numeric {
		x, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(x) || math.IsInf(x, 0) {
			return 0, fmt.Errorf("timestamp %q is not a number of seconds like the first row's", s)
		}
		return spanOffset((x-p.x0)*float64(time.Second), s)
	}
	t, err := time.Parse(p.layout, s)
	if err != nil {
		return 0, fmt.Errorf("timestamp %q is not a date-time like the first row's (%s)", s, p.layout)
	}
	// Sub saturates rather than overflows; the bound below catches the saturated values.
	return spanOffset(float64(t.Sub(p.t0)), s)
}

// spanOffset converts an offset in nanoseconds, refusing one beyond maxTraceSpan.
func spanOffset(ns float64, s string) (time.Duration, error) {
	if !(math.Abs(ns) <= float64(maxTraceSpan)) {
		return 0, fmt.Errorf("timestamp %q is more than %v from the first row's", s, maxTraceSpan)
	}
	return time.Duration(ns), nil
}

// parseTokens reads a token count.
func parseTokens(s, what string) (int, error) {
	s = strings.TrimSpace(s)
	n, err := strconv.ParseInt(s, 10, 64)
	switch {
	case err != nil:
		return 0, fmt.Errorf("%s %q is not a whole number", what, s)
	case n < 0:
		return 0, fmt.Errorf("%s %d is negative", what, n)
	case n > maxTraceTokens:
		return 0, fmt.Errorf("%s %d is beyond the limit of %d", what, n, maxTraceTokens)
	}
	return int(n), nil
}

// lineError is a parse error at a line of the file.
func lineError(format TraceFormat, line int, err error) error {
	return fmt.Errorf("workload: %s trace: line %d: %w", format, line, err)
}

func parseAzure(r io.Reader) (*Trace, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1 // checked here, with a clearer message
	cr.TrimLeadingSpace = true
	cr.ReuseRecord = true
	cols := [3]int{0, 1, 2} // timestamp, context tokens, generated tokens
	var stamps stampParser
	var rows []TraceRow
	first := true
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			// csv's ParseError names the line and column already.
			return nil, fmt.Errorf("workload: %s trace: %w", FormatAzure, err)
		}
		line, _ := cr.FieldPos(0)
		if first {
			first = false
			rec[0] = strings.TrimPrefix(rec[0], "\ufeff")
			var probe stampParser
			if _, err := probe.parse(rec[0]); err != nil {
				// Not a row: it must be the header.
				if cols, err = azureColumns(rec); err != nil {
					return nil, lineError(FormatAzure, line, err)
				}
				continue
			}
		}
		need := max(cols[0], cols[1], cols[2]) + 1
		if len(rec) < need {
			return nil, lineError(FormatAzure, line, fmt.Errorf("%d fields, want at least %d", len(rec), need))
		}
		at, err := stamps.parse(rec[cols[0]])
		if err != nil {
			return nil, lineError(FormatAzure, line, err)
		}
		in, err := parseTokens(rec[cols[1]], "ContextTokens")
		if err != nil {
			return nil, lineError(FormatAzure, line, err)
		}
		out, err := parseTokens(rec[cols[2]], "GeneratedTokens")
		if err != nil {
			return nil, lineError(FormatAzure, line, err)
		}
		rows = append(rows, TraceRow{Line: line, At: at, Input: in, Output: out})
	}
	return finishTrace(FormatAzure, rows, 0)
}

// azureColumns finds the three columns in a header row, by name and case-insensitively.
func azureColumns(header []string) ([3]int, error) {
	names := [3]string{"timestamp", "contexttokens", "generatedtokens"}
	cols := [3]int{-1, -1, -1}
	for i, h := range header {
		h = strings.ToLower(strings.TrimSpace(h))
		for k, n := range names {
			if h == n && cols[k] < 0 {
				cols[k] = i
			}
		}
	}
	for k, c := range cols {
		if c < 0 {
			return cols, fmt.Errorf("the first row is neither a header naming TIMESTAMP, ContextTokens and GeneratedTokens (no %s) nor a row starting with a timestamp", names[k])
		}
	}
	return cols, nil
}

// mooncakeRow is one JSONL line; pointers tell a missing field from a zero.
type mooncakeRow struct {
	Timestamp    *float64 `json:"timestamp"`
	InputLength  *int64   `json:"input_length"`
	OutputLength *int64   `json:"output_length"`
	HashIDs      []int64  `json:"hash_ids"`
}

func parseMooncake(r io.Reader) (*Trace, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxTraceLine)
	var rows []TraceRow
	var t0 float64
	hasIDs := false
	line := 0
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if line == 1 {
			b = bytes.TrimPrefix(b, utf8BOM)
		}
		if len(b) == 0 {
			continue
		}
		var v mooncakeRow
		if err := json.Unmarshal(b, &v); err != nil {
			return nil, lineError(FormatMooncake, line, jsonRowError(err))
		}
		var missing []string
		if v.Timestamp == nil {
			missing = append(missing, "timestamp")
		}
		if v.InputLength == nil {
			missing = append(missing, "input_length")
		}
		if v.OutputLength == nil {
			missing = append(missing, "output_length")
		}
		if len(missing) > 0 {
			return nil, lineError(FormatMooncake, line, fmt.Errorf("missing %s", strings.Join(missing, ", ")))
		}
		if len(rows) == 0 {
			t0 = *v.Timestamp
		}
		at, err := spanOffset((*v.Timestamp-t0)*float64(time.Millisecond), strconv.FormatFloat(*v.Timestamp, 'g', -1, 64))
		if err != nil {
			return nil, lineError(FormatMooncake, line, err)
		}
		in, err := checkTokens(*v.InputLength, "input_length")
		if err != nil {
			return nil, lineError(FormatMooncake, line, err)
		}
		out, err := checkTokens(*v.OutputLength, "output_length")
		if err != nil {
			return nil, lineError(FormatMooncake, line, err)
		}
		hasIDs = hasIDs || len(v.HashIDs) > 0
		rows = append(rows, TraceRow{Line: line, At: at, Input: in, Output: out, HashIDs: v.HashIDs})
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, lineError(FormatMooncake, line+1, fmt.Errorf("longer than %d bytes", maxTraceLine))
		}
		return nil, fmt.Errorf("workload: %s trace: %w", FormatMooncake, err)
	}
	block := 0
	if hasIDs {
		block = MooncakeBlockTokens
	}
	return finishTrace(FormatMooncake, rows, block)
}

// jsonRowError says what is wrong with a line in words rather than Go types.
func jsonRowError(err error) error {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te) && te.Field == "":
		return fmt.Errorf("want a JSON object, got JSON %s", te.Value)
	case errors.As(err, &te) && te.Field == "timestamp":
		return fmt.Errorf("timestamp must be a number of milliseconds, got JSON %s", te.Value)
	case errors.As(err, &te):
		return fmt.Errorf("%s must hold whole numbers, got JSON %s", te.Field, te.Value)
	case errors.As(err, &se):
		return fmt.Errorf("invalid JSON at byte %d: %v", se.Offset, err)
	}
	return fmt.Errorf("invalid JSON: %v", err)
}

// checkTokens is parseTokens for a number already decoded.
func checkTokens(n int64, what string) (int, error) {
	switch {
	case n < 0:
		return 0, fmt.Errorf("%s %d is negative", what, n)
	case n > maxTraceTokens:
		return 0, fmt.Errorf("%s %d is beyond the limit of %d", what, n, maxTraceTokens)
	}
	return int(n), nil
}

// finishTrace checks the rows' order, sorts the small step backs into place and makes the
// earliest row offset 0.
func finishTrace(format TraceFormat, rows []TraceRow, block int) (*Trace, error) {
	if len(rows) == 0 {
		return nil, fmt.Errorf("workload: %s trace has no requests", format)
	}
	t := &Trace{Format: format, Rows: rows, BlockTokens: block}
	latest := 0 // the row with the latest timestamp so far
	for i, r := range rows {
		if r.At >= rows[latest].At {
			latest = i
			continue
		}
		if back := rows[latest].At - r.At; back > TraceReorderTolerance {
			return nil, lineError(format, r.Line, fmt.Errorf("timestamp is %v before line %d's: rows must be in arrival order (steps back of up to %v are sorted into place)",
				back, rows[latest].Line, TraceReorderTolerance))
		}
		t.Reordered++
	}
	if t.Reordered > 0 {
		sort.SliceStable(rows, func(i, j int) bool { return rows[i].At < rows[j].At })
	}
	// Both offsets are within maxTraceSpan of the first row's, so the difference fits.
	base := rows[0].At
	for i := range rows {
		rows[i].At -= base
	}
	return t, nil
}

// Trace files of the shared traces directory, by workload name.
const (
	AzureConvFile = "azure-llm-2023-conv.csv"
	AzureCodeFile = "azure-llm-2023-code.csv"
	MooncakeFile  = "mooncake-synthetic.jsonl"
)

// TraceDirEnv is the environment variable naming the directory of the shared traces.
const TraceDirEnv = "AUGUR_TRACE_DIR"

// FindTrace locates a file of the shared traces directory: in $AUGUR_TRACE_DIR when that
// is set, else in shared/traces beside the working directory or one of its parents. The
// project keeps shared/ next to the repository (../shared from its root, on CI as on a
// workstation), so the walk up finds it from the repository root, from any package
// directory a test runs in, and from any worktree next to the main one.
func FindTrace(file string) (string, error) {
	if dir := os.Getenv(TraceDirEnv); dir != "" {
		p := filepath.Join(dir, file)
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("workload: trace %s not found in $%s: %w", file, TraceDirEnv, err)
		}
		return p, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("workload: finding trace %s: %w", file, err)
	}
	for dir := wd; ; {
		p := filepath.Join(dir, "shared", "traces", file)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("workload: trace %s not found in shared/traces beside %s or its parents; set $%s or give the file's path",
				file, wd, TraceDirEnv)
		}
		dir = parent
	}
}
