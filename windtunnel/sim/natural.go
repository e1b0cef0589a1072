package sim

import (
	"fmt"
	"hash/fnv"
	"strings"

	"github.com/augur-llm/augur/tokens"
)

// TokenText chooses the text a Server generates. The token count never depends on it: the
// engine generates max_tokens tokens and usage reports them; only the bytes of each token
// differ.
type TokenText int

const (
	// TokenTextEcho is the echo rule (see the package documentation): every token is a 4-byte
	// piece of the prompt, so tokens.Count of the text equals the tokens generated. The default.
	TokenTextEcho TokenText = iota
	// TokenTextNatural generates tokens of natural lengths, as a real tokenizer's are: each
	// token is a word-piece of English drawn from naturalVocab (1 to 10 bytes, mean 4.25),
	// deterministically for a given prompt (see NaturalText). Counting the text by the token
	// rule does not give the number of tokens, which only usage reports; this mode exists to
	// measure what a client (or the picker) that counts text gets wrong.
	TokenTextNatural
)

var tokenTextNames = [...]string{TokenTextEcho: "echo", TokenTextNatural: "natural"}

func (t TokenText) String() string {
	if t >= 0 && int(t) < len(tokenTextNames) {
		return tokenTextNames[t]
	}
	return fmt.Sprintf("TokenText(%d)", int(t))
}

// ParseTokenText reads a TokenText by name: "echo" or "natural".
func ParseTokenText(s string) (TokenText, error) {
	for t, name := range tokenTextNames {
		if s == name {
			return TokenText(t), nil
		}
	}
	return 0, fmt.Errorf("sim: unknown token text %q (want one of %s)", s, strings.Join(tokenTextNames[:], ", "))
}

// MarshalText implements encoding.TextMarshaler.
func (t TokenText) MarshalText() ([]byte, error) {
	if t < 0 || int(t) >= len(tokenTextNames) {
		return nil, fmt.Errorf("sim: unknown token text %d", int(t))
	}
	return []byte(t.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler, so that a TokenText can be a flag.
func (t *TokenText) UnmarshalText(b []byte) error {
	v, err := ParseTokenText(string(b))
	if err != nil {
		return err
	}
	*t = v
	return nil
}

// naturalVocab is the word-pieces natural tokens are drawn from, with and without leading
// spaces as in byte-level BPE vocabularies. Its 64 entries have every length from 1 to 10
// bytes and a mean of 4.25 bytes, near the 4-4.5 bytes a token that BPE tokenizers average on
// English prose: 7 of 1 byte, 10 of 2, 12 of 3, 9 of 4, 9 of 5, 6 of 6, 3 of 7, 4 of 8, 1 of 9,
// 3 of 10. It holds a newline and a quote, so the JSON escaping of streamed tokens is exercised.
var naturalVocab = [64]string{
	"\n", ",", ".", "s", ")", ":", "-",
	" a", "'s", " I", " (", "ed", "ly", "er", ` "`, "re", "al",
	" to", " of", " in", " is", " it", "ing", " on", " be", " as", " we", " by", "ent",
	" the", " and", " for", " are", " was", " can", " not", "tion", " all",
	" that", " with", " this", " from", " have", " more", " time", " when", " they",
	" model", " which", " other", " first", " would", " token",
	" system", " number", " server",
	" because", " request", " between", " through",
	" question",
	" different", " generated", " inference",
}

// naturalEscaped is naturalVocab escaped for the inside of a JSON string.
var naturalEscaped = func() (out [len(naturalVocab)]string) {
	for i, p := range naturalVocab {
		out[i] = string(appendEscaped(nil, p))
	}
	return out
}()

// naturalTokens is the natural-length text of one choice: token t is a pure function of the
// seed and t, so a stream can cut it anywhere.
type naturalTokens struct{ seed uint64 }

// newNaturalTokens seeds a choice's tokens from the text it would echo and its index, so the
// same request always gets the same text (like greedy decoding) and choices differ.
func newNaturalTokens(echo string, choice int) naturalTokens {
	if echo == "" {
		echo = tokens.EchoFallback
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(echo))
	return naturalTokens{seed: h.Sum64() ^ uint64(choice)*0x9e3779b97f4a7c15}
}

// piece returns the vocabulary index of token t (splitmix64 of the seed and t).
func (nt naturalTokens) piece(t int) uint64 {
	z := nt.seed + uint64(t+1)*0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return (z ^ z>>31) % uint64(len(naturalVocab))
}

func (nt naturalTokens) appendTokens(dst []byte, from, to int) []byte {
	for t := from; t < to; t++ {
		dst = append(dst, naturalEscaped[nt.piece(t)]...)
	}
	return dst
}

func (nt naturalTokens) text(n int) string {
	var b strings.Builder
	for t := range n {
		b.WriteString(naturalVocab[nt.piece(t)])
	}
	return b.String()
}

// NaturalText is the text a TokenTextNatural server generates for n tokens of choice choice
// (0 for chat and a single prompt) whose echo source is echo: the last non-empty user message
// of a chat, a completion's prompt string, or tokens.EchoFallback, as for the echo rule.
// NaturalPieces gives the same text cut into its tokens.
func NaturalText(echo string, choice, n int) string {
	return newNaturalTokens(echo, choice).text(n)
}

// NaturalPieces is NaturalText's n tokens, one string each: what a TokenTextNatural server
// streams, one per SSE chunk at stream interval 1.
func NaturalPieces(echo string, choice, n int) []string {
	nt := newNaturalTokens(echo, choice)
	out := make([]string, n)
	for t := range out {
		out[t] = naturalVocab[nt.piece(t)]
	}
	return out
}
