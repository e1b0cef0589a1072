package tokens

// BytesPerToken is the number of bytes of text that make one token under Augur's rule.
const BytesPerToken = 4

// Count returns the number of tokens in text: ceil(len(text)/4).
func Count(text string) int { return (len(text) + BytesPerToken - 1) / BytesPerToken }

// CountBytes is Count for a byte slice.
func CountBytes(text []byte) int { return (len(text) + BytesPerToken - 1) / BytesPerToken }

// AppendChatMessage appends one chat message to a rendered prompt. A chat prompt is the
// concatenation, for each message in order, of "<|role|>\n", the message text and "\n".
// Rendering appends only, so a conversation's rendered history is a byte prefix of the next
// turn's, which is what lets prefix caching work across turns.
func AppendChatMessage(dst []byte, role, text string) []byte {
	dst = append(dst, "<|"...)
	dst = append(dst, role...)
	dst = append(dst, "|>\n"...)
	dst = append(dst, text...)
	return append(dst, '\n')
}

// Message is a chat message reduced to what the rule needs.
type Message struct {
	Role string
	Text string
}

// RenderChat renders messages with AppendChatMessage.
func RenderChat(msgs []Message) []byte {
	n := 0
	for _, m := range msgs {
		n += len(m.Role) + len(m.Text) + 5
	}
	out := make([]byte, 0, n)
	for _, m := range msgs {
		out = AppendChatMessage(out, m.Role, m.Text)
	}
	return out
}
