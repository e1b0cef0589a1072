package sim

import (
	"strings"
	"unicode/utf8"

	"github.com/augur-llm/augur/tokens"
)

// FallbackEchoSource is echoed when a request has no text to echo: a prompt given as token
// ids, or a chat without a non-empty user message.
const FallbackEchoSource = "echo"

// echoPieces cuts source into the simulator's output tokens: runes are packed greedily into
// pieces of at most 4 bytes, each padded with spaces to exactly 4 bytes. Cutting at rune
// boundaries keeps every streamed delta valid UTF-8 (so JSON carries it unchanged), and the
// fixed width keeps tokens.Count of the generated text equal to the completion tokens.
func echoPieces(source string) []string {
	if source == "" {
		source = FallbackEchoSource
	}
	var pieces []string
	for len(source) > 0 {
		n := 0
		for n < len(source) {
			_, size := utf8.DecodeRuneInString(source[n:])
			if n+size > tokens.BytesPerToken {
				break
			}
			n += size
		}
		piece := source[:n]
		if n < tokens.BytesPerToken {
			piece += strings.Repeat(" ", tokens.BytesPerToken-n)
		}
		pieces = append(pieces, piece)
		source = source[n:]
	}
	return pieces
}

// EchoText is the text the simulator generates for n tokens when echoing source (the last
// user message of a chat, the prompt text of a completion, FallbackEchoSource when there is
// nothing to echo): source cut into 4-byte tokens as described above, repeated cyclically
// until n tokens are produced. tokens.Count(EchoText(s, n)) == n for every s and n >= 0.
func EchoText(source string, n int) string {
	pieces := echoPieces(source)
	var b strings.Builder
	b.Grow(n * tokens.BytesPerToken)
	for i := range n {
		b.WriteString(pieces[i%len(pieces)])
	}
	return b.String()
}
