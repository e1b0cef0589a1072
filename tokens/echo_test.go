package tokens

import (
	"strings"
	"testing"
	"unicode/utf8"
	"unsafe"
)

func TestEchoText(t *testing.T) {
	for _, tc := range []struct {
		source string
		n      int
		want   string
	}{
		{"héllo", 3, "hél" + "lo  " + "hél"},
		{"abcdefgh", 3, "abcdefghabcd"},
		{"ab", 2, "ab  ab  "},
		{"", 2, "echoecho"},
		{"x😀y", 4, "x   😀y   x   "}, // a 4-byte rune fits no piece that already holds a byte
		{"anything", 0, ""},
		{"anything", -1, ""},
		{" abc def", 1, " abc"},
		{" abc def", 2, " abc def"},
		{" abc def", 5, " abc def abc def abc"},
		{"abcde", 3, "abcde   abcd"},
	} {
		if got := EchoText(tc.source, tc.n); got != tc.want {
			t.Errorf("EchoText(%q, %d) = %q, want %q", tc.source, tc.n, got, tc.want)
		}
	}
}

// EchoText's shortcut for unpadded sources (plain repetition) agrees with repeating the
// pieces, and shares the source's memory when the output fits in it.
func TestEchoTextIsThePiecesRepeated(t *testing.T) {
	for _, source := range []string{" abc def ghi", "abcd", "abcde", "héllo wörld", "日本語のテキスト",
		"a\u00e9\U0001F600b\nc\"d", strings.Repeat("é", 7), "abc\xffdefg", ""} {
		pieces := EchoPieces(source)
		for n := range 40 {
			var want strings.Builder
			for i := range n {
				want.WriteString(pieces[i%len(pieces)])
			}
			if got := EchoText(source, n); got != want.String() {
				t.Errorf("EchoText(%q, %d) = %q, want the pieces repeated %q", source, n, got, want.String())
			}
		}
	}
	src := " abc def ghi"
	if got := EchoText(src, 2); unsafe.StringData(got) != unsafe.StringData(src) {
		t.Error("an output within an unpadded source does not share its memory")
	}
}

func TestEchoPiecesAreWholeTokensOfValidUTF8(t *testing.T) {
	for _, source := range []string{"héllo wörld", "日本語のテキスト", "a\u00e9\U0001F600b\nc\"d", strings.Repeat("é", 7)} {
		for _, p := range EchoPieces(source) {
			if len(p) != BytesPerToken || !utf8.ValidString(p) {
				t.Errorf("piece %q of %q", p, source)
			}
		}
		for n := range 40 {
			if got := Count(EchoText(source, n)); got != n {
				t.Errorf("Count(EchoText(%q, %d)) = %d", source, n, got)
			}
		}
	}
	if got := EchoPieces(""); len(got) != 1 || got[0] != EchoFallback {
		t.Errorf("EchoPieces(\"\") = %q, want the fallback", got)
	}
}
