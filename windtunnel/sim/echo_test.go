package sim

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/augur-llm/augur/tokens"
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
	} {
		if got := EchoText(tc.source, tc.n); got != tc.want {
			t.Errorf("EchoText(%q, %d) = %q, want %q", tc.source, tc.n, got, tc.want)
		}
	}
}

func TestEchoPiecesAreWholeTokensOfValidUTF8(t *testing.T) {
	for _, source := range []string{"héllo wörld", "日本語のテキスト", "a\u00e9\U0001F600b\nc\"d", strings.Repeat("é", 7)} {
		for _, p := range echoPieces(source) {
			if len(p) != tokens.BytesPerToken || !utf8.ValidString(p) {
				t.Errorf("piece %q of %q", p, source)
			}
		}
		for n := range 40 {
			if got := tokens.Count(EchoText(source, n)); got != n {
				t.Errorf("tokens.Count(EchoText(%q, %d)) = %d", source, n, got)
			}
		}
	}
}

func TestAppendEscapedMatchesJSON(t *testing.T) {
	s := "q\"b\\n\n\r\t\x01\x1f<>&é😀"
	got := string(appendJSONString(nil, s))
	// encoding/json also escapes HTML characters, which JSON does not require.
	want := strings.NewReplacer(`\u003c`, "<", `\u003e`, ">", `\u0026`, "&").Replace(jsonString(s))
	if got != want {
		t.Errorf("escaped %s, want %s", got, want)
	}
}
