package tokens

import (
	"bytes"
	"testing"
)

func TestCount(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
	}{{"", 0}, {"a", 1}, {"abcd", 1}, {"abcde", 2}, {"abcdefgh", 2}, {"héllo", 2}} {
		if got := Count(tc.in); got != tc.want {
			t.Errorf("Count(%q) = %d, want %d", tc.in, got, tc.want)
		}
		if got := CountBytes([]byte(tc.in)); got != tc.want {
			t.Errorf("CountBytes(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestRenderChatIsPrefixStable(t *testing.T) {
	turn1 := []Message{{"system", "be brief"}, {"user", "hi"}}
	turn2 := append(append([]Message{}, turn1...), Message{"assistant", "hello"}, Message{"user", "more"})
	a, b := RenderChat(turn1), RenderChat(turn2)
	if !bytes.HasPrefix(b, a) {
		t.Fatalf("turn 2 rendering %q does not start with turn 1 rendering %q", b, a)
	}
	if want := "<|system|>\nbe brief\n<|user|>\nhi\n"; string(a) != want {
		t.Fatalf("RenderChat = %q, want %q", a, want)
	}
}
