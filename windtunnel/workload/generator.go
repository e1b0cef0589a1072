package workload

import (
	"fmt"
	"strconv"
	"strings"
)

// Generator yields a stream's requests in arrival order. Next returns false once the stream
// has ended (its ladder has run out); it keeps returning false after that. A Generator is not
// safe for concurrent use.
type Generator interface {
	Next() (Request, bool)
}

// Workload names, as Names lists them and New accepts them.
const (
	NameSharedPrefix  = "shared-prefix"
	NameMultiTurn     = "multi-turn"
	NameAgentic       = "agentic"
	NameMixedSLO      = "mixed-slo"
	NameHeterogeneous = "heterogeneous"

	// Replays of the real traces of the shared traces directory (see TraceReplay), and of
	// any trace file (TraceOptions.Path).
	NameAzureConv = "azure-conv"
	NameAzureCode = "azure-code"
	NameMooncake  = "mooncake"
	NameTrace     = "trace"
)

// Names lists the workloads New knows: the reference document's in its order, then the
// trace replays.
func Names() []string {
	return []string{NameSharedPrefix, NameMultiTurn, NameAgentic, NameMixedSLO, NameHeterogeneous,
		NameAzureConv, NameAzureCode, NameMooncake, NameTrace}
}

// Describe is a one-line description of a workload, for command-line help; "" for an
// unknown name.
func Describe(name string) string {
	switch name {
	case NameSharedPrefix:
		return "llm-d's shared-prefix benchmark: 150 groups x 5 prompts of 6000+1200 tokens, 1000 out, completions"
	case NameMultiTurn:
		return "chat conversations of 3-10 turns resending their history, with think time"
	case NameAgentic:
		return "agent loops resending a 4k-12k-token tool block and a growing trajectory, short outputs"
	case NameMixedSLO:
		return "interactive, standard and batch SLO classes with priorities and tenants, one noisy per class"
	case NameHeterogeneous:
		return "mixed-slo traffic, meant for a pool of two replica speed classes (the runner's choice)"
	case NameAzureConv:
		return "replay of Azure's 2023 conversation trace (1155 in / 211 out tokens), SLO classes of mixed-slo"
	case NameAzureCode:
		return "replay of Azure's 2023 code-completion trace (2048 in / 28 out tokens), SLO classes of mixed-slo"
	case NameMooncake:
		return "replay of Mooncake's synthetic trace with its prefix reuse (15k in / 149 out tokens), SLO classes of mixed-slo"
	case NameTrace:
		return "replay of the trace file given as its path (Azure CSV or Mooncake JSONL), SLO classes of mixed-slo"
	}
	return ""
}

// Options configures New. Each workload reads Seed, Ladder and its own options, whose zero
// values stand for the documented defaults.
type Options struct {
	Seed uint64
	// Ladder drives arrivals; nil means SharedPrefixLadder(). For session workloads it is the
	// rate of requests, not of sessions (see MultiTurn and Agentic).
	Ladder Ladder
	// MaxRequests ends the stream after that many requests; 0 = when the ladder ends.
	MaxRequests int

	SharedPrefix SharedPrefixOptions
	MultiTurn    MultiTurnOptions
	Agentic      AgenticOptions
	MixedSLO     MixedSLOOptions // for mixed-slo and heterogeneous
	Trace        TraceOptions    // for the trace replays
}

// New returns the named workload's generator.
func New(name string, o Options) (Generator, error) {
	ladder := o.Ladder
	if ladder == nil {
		ladder = SharedPrefixLadder()
	}
	if o.MaxRequests < 0 {
		return nil, fmt.Errorf("workload: MaxRequests %d is negative", o.MaxRequests)
	}
	var g Generator
	var err error
	switch name {
	case NameSharedPrefix:
		g, err = NewSharedPrefix(o.Seed, ladder, o.SharedPrefix)
	case NameMultiTurn:
		g, err = NewMultiTurn(o.Seed, ladder, o.MultiTurn)
	case NameAgentic:
		g, err = NewAgentic(o.Seed, ladder, o.Agentic)
	case NameMixedSLO:
		g, err = NewMixedSLO(o.Seed, ladder, o.MixedSLO)
	case NameHeterogeneous:
		g, err = NewHeterogeneous(o.Seed, ladder, o.MixedSLO)
	case NameAzureConv, NameAzureCode, NameMooncake, NameTrace:
		g, err = newNamedReplay(name, o.Seed, ladder, o.Trace)
	default:
		return nil, fmt.Errorf("workload: unknown workload %q (known: %s)", name, strings.Join(Names(), ", "))
	}
	if err != nil {
		return nil, err
	}
	if o.MaxRequests > 0 {
		g = Limit(g, o.MaxRequests)
	}
	return g, nil
}

// Limit ends g's stream after n requests.
func Limit(g Generator, n int) Generator { return &limited{g: g, left: n} }

type limited struct {
	g    Generator
	left int
}

func (l *limited) Next() (Request, bool) {
	if l.left <= 0 {
		return Request{}, false
	}
	l.left--
	return l.g.Next()
}

// Collect drains g into a slice. Meant for tests and short runs: a long run should iterate,
// so that only the requests in flight are held.
func Collect(g Generator) []Request {
	var out []Request
	for {
		r, ok := g.Next()
		if !ok {
			return out
		}
		out = append(out, r)
	}
}

// requestID is prefix-NNNNNN: fixed width so that IDs sort in stream order.
func requestID(prefix string, seq int) string {
	var buf [32]byte // on the stack for the usual short prefix: one allocation, the string
	b := append(buf[:0], prefix...)
	b = append(b, '-')
	for p := 100000; p > 1 && seq < p; p /= 10 {
		b = append(b, '0')
	}
	b = strconv.AppendInt(b, int64(seq), 10)
	return string(b)
}

// checkRange validates a [lo, hi] option pair after defaults were applied.
func checkRange(what string, lo, hi int) error {
	if lo < 0 || hi < lo {
		return fmt.Errorf("workload: %s range [%d, %d] is invalid: want 0 <= min <= max", what, lo, hi)
	}
	return nil
}

// orDefault is v, or def when v is the zero value.
func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}
