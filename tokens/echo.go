package tokens

import (
	"strings"
	"unicode/utf8"
)

// EchoFallback is the text echoed when there is nothing to echo: a prompt given as token ids,
// or a chat without a non-empty user message. EchoText and EchoPieces use it for "".
const EchoFallback = "echo"

// The echo rule is how the simulator generates text, kept here because it is defined by the
// token rule and because the workloads must predict it exactly (a conversation's history
// resends what the replica produced): the output for n tokens is source cut into tokens of
// BytesPerToken bytes and repeated cyclically. The cutting packs runes greedily into pieces
// of at most BytesPerToken bytes, each padded with spaces to exactly BytesPerToken bytes.
// Cutting at rune boundaries keeps every streamed token valid UTF-8, and the fixed width
// makes Count of the generated text equal to the number of tokens generated.

// echoCut returns the length of the first piece of a non-empty source: the longest run of
// whole runes of at most BytesPerToken bytes (a rune has at most 4).
func echoCut(source string) int {
	n := 0
	for n < len(source) {
		_, size := utf8.DecodeRuneInString(source[n:])
		if n+size > BytesPerToken {
			break
		}
		n += size
	}
	return n
}

// EchoPieces cuts source (EchoFallback if empty) into the tokens EchoText repeats, each
// exactly BytesPerToken bytes.
func EchoPieces(source string) []string {
	if source == "" {
		source = EchoFallback
	}
	var pieces []string
	for len(source) > 0 {
		n := echoCut(source)
		piece := source[:n]
		if n < BytesPerToken {
			piece += strings.Repeat(" ", BytesPerToken-n)
		}
		pieces = append(pieces, piece)
		source = source[n:]
	}
	return pieces
}

// EchoText is the text generated for n tokens when echoing source (EchoFallback if empty):
// EchoPieces(source) repeated cyclically until n tokens are produced. Count(EchoText(s, n))
// == n for every s and n >= 0. When no piece needs padding (ASCII text whose length is a
// multiple of BytesPerToken, as the workloads generate), the result is source itself
// repeated, and for n tokens within source it shares source's memory.
func EchoText(source string, n int) string {
	if n <= 0 {
		return ""
	}
	if source == "" {
		source = EchoFallback
	}
	size := n * BytesPerToken
	if !echoUnpadded(source) {
		pieces := EchoPieces(source)
		var b strings.Builder
		b.Grow(size)
		for i := range n {
			b.WriteString(pieces[i%len(pieces)])
		}
		return b.String()
	}
	if size <= len(source) {
		return source[:size]
	}
	var b strings.Builder
	b.Grow(size)
	for b.Len()+len(source) <= size {
		b.WriteString(source)
	}
	b.WriteString(source[:size-b.Len()])
	return b.String()
}

// echoUnpadded reports whether every piece of source is BytesPerToken bytes of source, so
// that the pieces concatenated are source itself.
func echoUnpadded(source string) bool {
	for len(source) > 0 {
		n := echoCut(source)
		if n != BytesPerToken {
			return false
		}
		source = source[n:]
	}
	return true
}
