package workload

import (
	"math/rand/v2"

	"github.com/augur-llm/augur/tokens"
)

// appendWords appends n random words of tokens.BytesPerToken bytes each (a space and three
// lowercase letters), i.e. exactly n tokens of text.
func appendWords(dst []byte, r *rand.Rand, n int) []byte {
	for n > 0 {
		// One 64-bit draw yields four words: 16 bits cover the 26^3 = 17,576 three-letter
		// words with a bias that does not matter for filler text, and drawing once per four
		// words keeps generating megabytes of prompts cheap.
		x := r.Uint64()
		for k := 0; k < 4 && n > 0; k++ {
			v := uint32(x & 0xffff)
			x >>= 16
			a := v % 26
			v /= 26
			b := v % 26
			v /= 26
			c := v % 26
			dst = append(dst, ' ', byte('a'+a), byte('a'+b), byte('a'+c))
			n--
		}
	}
	return dst
}

// randomText returns n tokens of random words.
func randomText(r *rand.Rand, n int) string {
	return string(appendWords(make([]byte, 0, n*tokens.BytesPerToken), r, n))
}

// uniformInt draws an integer uniformly from [lo, hi].
func uniformInt(r *rand.Rand, lo, hi int) int {
	if hi <= lo {
		return lo
	}
	return lo + r.IntN(hi-lo+1)
}
