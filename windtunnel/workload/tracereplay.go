package workload

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/augur-llm/augur/tokens"
)

// DefaultMaxModelLen is the default context limit of a trace replay: the max_model_len of
// the simulator's 32b-tp2-h100 profile, the bench's default and the smallest built-in one.
const DefaultMaxModelLen = 32768

// maxReplayModelLen bounds TraceOptions.MaxModelLen: a prompt is built in memory, 4 bytes a
// token, so the limit keeps one request below 64 MiB.
const maxReplayModelLen = 1 << 24

// TraceOptions configure a trace replay.
type TraceOptions struct {
	// Path is the trace file. The generic "trace" workload needs it; the named traces
	// read it instead of their file of the shared traces directory (FindTrace) when set.
	Path string
	// MaxModelLen is what the replicas the trace is replayed on accept, prompt plus output
	// (the simulator's Profile.MaxModelLen); default DefaultMaxModelLen. Longer requests
	// are fitted to it (see NewTraceReplay) rather than sent to be refused.
	MaxModelLen int
	// StartRow is the row the replay begins at, taken modulo the trace's length; default 0.
	// Runs that train models start at seeded rows, so that they see the whole trace rather
	// than its first minutes again and again.
	StartRow int
	// Classes is the SLO class mix the requests are spread over; default DefaultClasses.
	// Only a class's share, objectives, objective name, priority and tenants are used: the
	// API and every length come from the trace.
	Classes MixedSLOOptions
}

func (o TraceOptions) maxModelLen() (int, error) {
	n := orDefault(o.MaxModelLen, DefaultMaxModelLen)
	if n < 2 || n > maxReplayModelLen {
		return 0, fmt.Errorf("workload: trace MaxModelLen %d outside [2, %d]", n, maxReplayModelLen)
	}
	return n, nil
}

// fitRow fits a row's token counts to the context limit. An empty prompt or a zero output
// is raised to one token (a server refuses either, and max_tokens 0 would be left out of the
// body and replaced by the server's default). Then the output is kept and the prompt cut to
// maxLen minus the output, as a client truncating its context would; only an output of
// maxLen or more is itself cut, to maxLen-1, leaving one prompt token. For a trace with hash
// ids the cut drops blocks from the end, so the prefixes requests share stay shared.
func fitRow(in, out, maxLen int) (fitIn, fitOut int, clamped, raised bool) {
	if in < 1 || out < 1 {
		in, out, raised = max(in, 1), max(out, 1), true
	}
	if out > maxLen-1 {
		out, clamped = maxLen-1, true
	}
	if in+out > maxLen {
		in, clamped = maxLen-out, true
	}
	return in, out, clamped, raised
}

// TraceStats count what a replay has sent so far.
type TraceStats struct {
	Requests     int
	Clamped      int   // requests cut to fit MaxModelLen
	Raised       int   // requests whose empty prompt or zero output was raised to one token
	InputTokens  int64 // prompt tokens sent, after fitting
	OutputTokens int64 // max_tokens sent, after fitting
	Passes       int   // times the replay has started over from the trace's first row
}

// TraceReplay replays a request trace: the trace's rows in order, at its relative arrival
// times scaled to the ladder's rates, with prompts that have exactly the trace's token
// counts and, for a trace with hash ids, exactly its prefix reuse.
//
// Arrivals. Stage s of the ladder takes the next n_s rows, n_s being its expected count
// (rate x duration, rounded cumulatively so that the ladder's total is kept), and maps the
// trace time from its first row to the next stage's first row linearly onto the stage. So
// every stage runs at exactly its rate on average while the trace's burstiness within the
// stage is kept: a constant ladder of rate R for D is the first R*D rows at mean rate R.
// A stage of rate 0 is a pause. When the trace runs out the replay starts over from its
// first row, shifted to follow the last row by the trace's mean gap, so passes join
// without a burst or a hole. The arrival times depend on the trace and the ladder only, not
// on the seed: two runs of one trace see the same arrival pattern.
//
// Prompts are completions (a chat would add role markers to the count and shift the
// prompt's text against the cache blocks), with text made of the package's four-byte
// words. A row without hash ids gets text of its own, unique to its place in the stream. A
// row with hash ids is the concatenation of one block of text per id, the block a function
// of the seed, the id and the pass only: every request naming the id carries the same
// BlockTokens tokens (a last, partial block is that text's beginning), so the simulator's
// and the picker's prefix caches see the trace's reuse exactly, and a prompt of whole blocks
// falls on the caches' 16-token boundaries. Tokens beyond the ids' blocks (a file whose ids
// do not cover input_length) are text of the request's own; ids beyond input_length are
// ignored. Later passes use blocks of their own, so a replay's second pass reuses prefixes
// as the trace does rather than hitting what the first pass left in the caches.
//
// Outputs are max_tokens of the trace's output count with ignore_eos, streamed, so the
// simulator generates exactly that many. Rows too long for the replicas are fitted, not
// dropped (see TraceOptions.MaxModelLen and Stats): the output is kept and the prompt cut.
//
// Classes. Traces carry no objectives, so each request is given a class of the mix, drawn
// by share, and a tenant of the class (the noisy one weighing NoisyFactor), by a draw keyed
// by the seed and the request's place in the stream only. The class sets the SLO headers,
// objective, priority and fairness id, never the tokens.
type TraceReplay struct {
	trace   *Trace
	prefix  string
	seed    uint64
	ladder  Ladder
	maxLen  int
	classes []traceClass
	cum     []float64 // cumulative class shares
	period  float64   // seconds of trace time one pass takes, the gap to the next included

	pcg  rand.PCG   // reseeded for every request: draws keyed by position
	rng  *rand.Rand // draws from pcg
	salt uint64     // the seed's part in every text key
	pool []byte     // random words prompts are cut from (see appendText)
	buf  []byte

	stage    int     // the current stage; len(ladder) once the ladder has ended
	planned  float64 // expected arrivals of the stages up to the current one
	end      int     // the first row of the next stage
	base     float64 // trace time of the current stage's first row
	window   float64 // trace time from the current stage's first row to the next stage's
	start    time.Duration
	duration time.Duration

	row   int // the next row, counted across passes
	stats TraceStats
}

// traceClass is a class with its tenants' fairness ids.
type traceClass struct {
	Class
	tenants []string
	cum     []float64 // cumulative tenant weights
}

// Keys of the position-keyed draws of a replay (the PCG's second word, mixed with the
// position), apart from each other so that, say, classes do not correlate with text.
const (
	keyTraceClass uint64 = 0x636c6173 // "clas"
	keyTraceText  uint64 = 0x74657874 // "text"
	keyTraceBlock uint64 = 0x626c6b73 // "blks"
	keyTracePool  uint64 = 0x706f6f6c // "pool"
)

// NewTraceReplay returns the replay of t for seed over ladder. prefix starts the request
// ids ("mc" gives "mc-000000", ...). t is only read, so one trace may feed many replays.
func NewTraceReplay(prefix string, seed uint64, ladder Ladder, t *Trace, o TraceOptions) (*TraceReplay, error) {
	if t == nil || len(t.Rows) == 0 {
		return nil, fmt.Errorf("workload: trace replay of an empty trace")
	}
	if t.BlockTokens < 0 {
		return nil, fmt.Errorf("workload: trace block of %d tokens", t.BlockTokens)
	}
	if o.StartRow < 0 {
		return nil, fmt.Errorf("workload: trace replay StartRow %d is negative", o.StartRow)
	}
	if err := ladder.Validate(); err != nil {
		return nil, err
	}
	maxLen, err := o.maxModelLen()
	if err != nil {
		return nil, err
	}
	classes, err := o.Classes.classes()
	if err != nil {
		return nil, err
	}
	g := &TraceReplay{trace: t, prefix: prefix, seed: seed, ladder: ladder, maxLen: maxLen, stage: -1}
	g.row, g.end = o.StartRow%len(t.Rows), o.StartRow%len(t.Rows)
	g.rng = rand.New(&g.pcg)
	g.salt = mix64(seed ^ keyTraceText)
	g.pcg.Seed(seed, keyTracePool)
	g.pool = appendWords(make([]byte, 0, textPoolTokens*tokens.BytesPerToken), g.rng, textPoolTokens)
	total := 0.0
	for _, c := range classes {
		tc := traceClass{Class: c}
		w := 0.0
		for k := range c.Tenants {
			id, weight := fmt.Sprintf("%s-t%d", c.Name, k), 1.0
			if k == 0 {
				id, weight = c.Name+"-noisy", c.NoisyFactor
			}
			tc.tenants = append(tc.tenants, id)
			w += weight
			tc.cum = append(tc.cum, w)
		}
		g.classes = append(g.classes, tc)
		total += c.Share
		g.cum = append(g.cum, total)
	}
	// One pass lasts the trace's span plus its mean gap, the gap before the next pass's first
	// row. A trace of one instant has no gaps to go by; its passes are a second apart.
	span := t.Span().Seconds()
	gap := 1.0
	if n := len(t.Rows); n > 1 && span > 0 {
		gap = span / float64(n-1)
	}
	g.period = span + gap
	return g, nil
}

// traceTime is the trace time of row k of the endless sequence of passes, in seconds.
func (g *TraceReplay) traceTime(k int) float64 {
	n := len(g.trace.Rows)
	return g.trace.Rows[k%n].At.Seconds() + float64(k/n)*g.period
}

// maxPlanned bounds the expected arrivals counted, so that rounding them to an int is
// defined for any valid ladder; no run gets near it.
const maxPlanned = 1e15

// nextStage moves to the next stage and plans its rows; false once the ladder has ended.
func (g *TraceReplay) nextStage() bool {
	g.stage++
	if g.stage >= len(g.ladder) {
		g.stage = len(g.ladder)
		return false
	}
	s := g.ladder[g.stage]
	before := math.Round(g.planned)
	g.planned = min(g.planned+s.Rate*s.Duration.Seconds(), maxPlanned)
	n := int(math.Round(g.planned) - before)
	g.end = g.row + n
	g.base = g.traceTime(g.row)
	g.window = g.traceTime(g.end) - g.base
	g.start, g.duration = g.ladder.Start(g.stage), s.Duration
	return true
}

// Next returns the next request.
func (g *TraceReplay) Next() (Request, bool) {
	for g.row >= g.end {
		if !g.nextStage() {
			return Request{}, false
		}
	}
	k := g.row
	g.row++
	at := g.start
	if g.window > 0 {
		frac := (g.traceTime(k) - g.base) / g.window
		at += time.Duration(frac * float64(g.duration))
	}
	// Rows sharing the next stage's first row's time would land on the stage's end.
	at = min(at, g.start+g.duration-1)

	n := len(g.trace.Rows)
	row := &g.trace.Rows[k%n]
	pass := k / n
	if pass > g.stats.Passes {
		g.stats.Passes = pass
	}
	in, out, clamped, raised := fitRow(row.Input, row.Output, g.maxLen)

	g.pcg.Seed(g.seed, mix64(keyTraceClass^mix64(uint64(k))))
	c := &g.classes[draw(g.rng, g.cum)]
	tenant := c.tenants[draw(g.rng, c.cum)]

	r := Request{
		Seq:        k,
		At:         at,
		Stage:      g.stage,
		ID:         requestID(g.prefix, k),
		API:        Completions,
		Prompt:     g.prompt(k, pass, row, in),
		MaxTokens:  out,
		IgnoreEOS:  true,
		Stream:     true,
		Class:      c.Name,
		SLOTTFT:    c.SLOTTFT,
		SLOTPOT:    c.SLOTPOT,
		Objective:  c.Objective,
		Priority:   c.Priority,
		FairnessID: tenant,
	}
	g.stats.Requests++
	g.stats.InputTokens += int64(in)
	g.stats.OutputTokens += int64(out)
	if clamped {
		g.stats.Clamped++
	}
	if raised {
		g.stats.Raised++
	}
	return r, true
}

// prompt builds the text of in tokens for row k (see TraceReplay).
func (g *TraceReplay) prompt(k, pass int, row *TraceRow, in int) string {
	b := g.buf[:0]
	if need := in * tokens.BytesPerToken; cap(b) < need {
		b = make([]byte, 0, need)
	}
	left := in
	if bt := g.trace.BlockTokens; bt > 0 {
		passKey := mix64(keyTraceBlock ^ mix64(uint64(pass)))
		for _, id := range row.HashIDs {
			if left == 0 {
				break
			}
			m := min(bt, left)
			b = g.appendText(b, passKey^uint64(id), m)
			left -= m
		}
	}
	if left > 0 {
		b = g.appendText(b, keyTraceText^mix64(uint64(k)), left)
	}
	g.buf = b
	return string(b)
}

// Text of a key: textSegment-token segments, each textHeaderWords words drawn from the key
// and the segment's index followed by a run of the pool's words at an offset drawn from
// them. Distinct keys differ within their first four words (56 bits of the key: a
// coincidence is out of reach), the text of n tokens is the beginning of the text of more,
// and building it is mostly copying, which keeps replays of 15k-token prompts cheap (random
// words cost 100 ns a token under the race detector). That pool words recur at other
// offsets does not matter: caches hash blocks chained from the prompt's start, so only
// equal prefixes match.
const (
	textSegment     = 512
	textHeaderWords = 4
	textPoolTokens  = 1 << 15
)

// appendText appends n tokens of the text of key.
func (g *TraceReplay) appendText(dst []byte, key uint64, n int) []byte {
	for j := uint64(0); n > 0; j++ {
		h := mix64(g.salt ^ key ^ mix64(j))
		m := min(n, textSegment)
		for w := range min(m, textHeaderWords) {
			v := uint32(h>>(16*w)) & 0xffff
			a, b, c := v%26, v/26%26, v/(26*26)%26
			dst = append(dst, ' ', byte('a'+a), byte('a'+b), byte('a'+c))
		}
		if rest := m - textHeaderWords; rest > 0 {
			off := int(mix64(h)%uint64(textPoolTokens-textSegment+1)) * tokens.BytesPerToken
			dst = append(dst, g.pool[off:off+rest*tokens.BytesPerToken]...)
		}
		n -= m
	}
	return dst
}

// Stats returns what the replay has sent so far.
func (g *TraceReplay) Stats() TraceStats { return g.stats }

// Trace returns the trace being replayed (shared; read-only).
func (g *TraceReplay) Trace() *Trace { return g.trace }

// mix64 is SplitMix64's finaliser: it spreads consecutive keys (rows, ids) over the PCG's
// seed space so that neighbouring positions start unrelated streams.
func mix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// TraceSummary describes one pass of a trace as a replay sends it.
type TraceSummary struct {
	Requests   int
	Span       time.Duration
	MeanRate   float64 // the trace's own requests per second (Trace.MeanRate)
	MeanInput  float64 // prompt tokens, after fitting to MaxModelLen
	MeanOutput float64 // output tokens, after fitting
	Clamped    int     // rows cut to fit MaxModelLen
	Raised     int     // rows whose empty prompt or zero output was raised to one token
	// SharedPrefix is the fraction of prompt tokens (after fitting) that are a prefix shared
	// with an earlier request of the pass: what an unbounded prefix cache would hit. 0 for a
	// trace without hash ids.
	SharedPrefix float64
	// MismatchedIDs counts rows whose hash ids are not exactly the blocks their input
	// length needs (ceil(input/BlockTokens)): a sign of a different block size.
	MismatchedIDs int
}

// Summary describes one pass of t replayed with o (only o.MaxModelLen matters).
func (t *Trace) Summary(o TraceOptions) (TraceSummary, error) {
	maxLen, err := o.maxModelLen()
	if err != nil {
		return TraceSummary{}, err
	}
	s := TraceSummary{Requests: len(t.Rows), Span: t.Span(), MeanRate: t.MeanRate()}
	// A trie of the block sequences seen: a node is a prefix of blocks, and holds the most
	// tokens of its last block any request carried (a partial block's text is the beginning
	// of the full one, so a request shares min(its tokens, those) of it).
	type edge struct {
		parent int32
		id     int64
	}
	children := map[edge]int32{}
	most := []int{0} // node 0 is the empty prefix
	var in, out, shared int64
	for _, r := range t.Rows {
		fi, fo, clamped, raised := fitRow(r.Input, r.Output, maxLen)
		in, out = in+int64(fi), out+int64(fo)
		if clamped {
			s.Clamped++
		}
		if raised {
			s.Raised++
		}
		bt := t.BlockTokens
		if bt <= 0 {
			continue
		}
		if len(r.HashIDs) != (r.Input+bt-1)/bt {
			s.MismatchedIDs++
		}
		node, left, sharing := int32(0), fi, true
		for _, id := range r.HashIDs {
			if left == 0 {
				break
			}
			m := min(bt, left)
			left -= m
			child, ok := children[edge{node, id}]
			if !ok {
				child = int32(len(most))
				children[edge{node, id}] = child
				most = append(most, 0)
			}
			if sharing {
				shared += int64(min(m, most[child]))
				sharing = ok && m <= most[child]
			}
			most[child] = max(most[child], m)
			node = child
		}
	}
	n := float64(len(t.Rows))
	s.MeanInput, s.MeanOutput = float64(in)/n, float64(out)/n
	if in > 0 {
		s.SharedPrefix = float64(shared) / float64(in)
	}
	return s, nil
}

// newNamedReplay is New for the trace workloads: the named traces read their file of the
// shared traces directory unless o.Path says otherwise; "trace" needs o.Path.
func newNamedReplay(name string, seed uint64, ladder Ladder, o TraceOptions) (*TraceReplay, error) {
	var file, prefix string
	switch name {
	case NameAzureConv:
		file, prefix = AzureConvFile, "azconv"
	case NameAzureCode:
		file, prefix = AzureCodeFile, "azcode"
	case NameMooncake:
		file, prefix = MooncakeFile, "mc"
	default:
		prefix = "tr"
	}
	path := o.Path
	if path == "" {
		if file == "" {
			return nil, fmt.Errorf("workload: %s needs the trace file's path (TraceOptions.Path; cmd/bench's --trace)", name)
		}
		var err error
		if path, err = FindTrace(file); err != nil {
			return nil, err
		}
	}
	t, err := LoadTrace(path)
	if err != nil {
		return nil, err
	}
	return NewTraceReplay(prefix, seed, ladder, t, o)
}
