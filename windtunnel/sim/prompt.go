package sim

import (
	"encoding/binary"
	"hash/maphash"
	"slices"

	"github.com/augur-llm/augur/tokens"
)

// blockBytes is the size of one 16-token block of text under the token rule.
const blockBytes = BlockSize * tokens.BytesPerToken

// Prompt is what the engine needs to know about a prompt: its length in tokens and the bytes
// (or ids) its prefix-cache blocks are hashed from. Build it with TextPrompt or TokenIDPrompt.
type Prompt struct {
	text  []byte
	ids   []int
	isIDs bool
}

// TextPrompt is a prompt given as text (a completion prompt, or a chat rendered with
// tokens.RenderChat). It is ceil(len(text)/4) tokens. The engine keeps a reference to text
// and never modifies it.
func TextPrompt(text []byte) Prompt { return Prompt{text: text} }

// TokenIDPrompt is a prompt given as token ids: one token per id.
func TokenIDPrompt(ids []int) Prompt { return Prompt{ids: ids, isIDs: true} }

// Tokens is the prompt length under the token rule.
func (p Prompt) Tokens() int {
	if p.isIDs {
		return len(p.ids)
	}
	return tokens.CountBytes(p.text)
}

// appendBlockHashes appends to out the chained hashes of the prompt's full blocks. Each hash
// covers the block and, through its parent, everything before it, so equal hashes mean equal
// prefixes. Text and id prompts start from different roots so that they never share blocks.
func (p Prompt) appendBlockHashes(out []uint64, seed maphash.Seed) []uint64 {
	var h maphash.Hash
	h.SetSeed(seed)
	var word [8]byte
	if !p.isIDs {
		n := len(p.text) / blockBytes
		out = slices.Grow(out, n)
		parent := uint64(0x7465787400000000) // "text"
		for i := range n {
			h.Reset()
			binary.LittleEndian.PutUint64(word[:], parent)
			_, _ = h.Write(word[:])
			_, _ = h.Write(p.text[i*blockBytes : (i+1)*blockBytes])
			parent = h.Sum64()
			out = append(out, parent)
		}
		return out
	}
	n := len(p.ids) / BlockSize
	out = slices.Grow(out, n)
	parent := uint64(0x6964730000000000) // "ids"
	for i := range n {
		h.Reset()
		binary.LittleEndian.PutUint64(word[:], parent)
		_, _ = h.Write(word[:])
		for _, id := range p.ids[i*BlockSize : (i+1)*BlockSize] {
			binary.LittleEndian.PutUint64(word[:], uint64(id))
			_, _ = h.Write(word[:])
		}
		parent = h.Sum64()
		out = append(out, parent)
	}
	return out
}
