package extproc

import (
	"bytes"
	"encoding/json"
	"time"

	"github.com/augur-llm/augur/tokens"
)

// Usage is the token accounting a server reports.
type Usage struct {
	PromptTokens     int
	CompletionTokens int
	CachedTokens     int
}

type usageJSON struct {
	PromptTokens        int `json:"prompt_tokens"`
	CompletionTokens    int `json:"completion_tokens"`
	PromptTokensDetails *struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
}

func (u *usageJSON) usage() Usage {
	out := Usage{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens}
	if u.PromptTokensDetails != nil {
		out.CachedTokens = u.PromptTokensDetails.CachedTokens
	}
	return out
}

type streamChunk struct {
	Choices []struct {
		Text  string `json:"text"`
		Delta struct {
			Content          string          `json:"content"`
			ReasoningContent string          `json:"reasoning_content"`
			Reasoning        string          `json:"reasoning"`
			ToolCalls        json.RawMessage `json:"tool_calls"`
		} `json:"delta"`
	} `json:"choices"`
	Usage *usageJSON `json:"usage"`
}

// maxSSELine bounds how much of one unterminated SSE line is kept; a longer line is skipped,
// so a broken upstream cannot grow the picker's memory without limit.
const maxSSELine = 1 << 20

// SSEReader follows an OpenAI streaming response as its bytes pass through, recording when
// generated tokens arrive. It never changes the stream. Feed it chunks in order.
type SSEReader struct {
	line     []byte
	skipping bool // inside an over-long line

	// FirstToken and LastToken are when the first and last chunks carrying generated
	// output arrived; zero until then.
	FirstToken time.Time
	LastToken  time.Time
	// OutputChunks counts, per choice, the events that carried generated output (text or a
	// tool-call delta); OutputBytes is the generated text in them.
	OutputChunks int
	OutputBytes  int
	// Usage is the usage the server reported, when HasUsage.
	Usage    Usage
	HasUsage bool
	// Done is set once "data: [DONE]" arrived.
	Done bool
	// BadEvents counts data lines that were not valid JSON.
	BadEvents int
}

// Feed consumes the next bytes of the stream, which arrived at now.
func (r *SSEReader) Feed(b []byte, now time.Time) {
	for len(b) > 0 {
		i := bytes.IndexAny(b, "\r\n")
		if i < 0 {
			if !r.skipping {
				if len(r.line)+len(b) > maxSSELine {
					r.skipping, r.line = true, r.line[:0]
				} else {
					r.line = append(r.line, b...)
				}
			}
			return
		}
		if r.skipping {
			r.skipping = false
		} else if len(r.line) > 0 {
			r.line = append(r.line, b[:i]...)
			r.handleLine(r.line, now)
			r.line = r.line[:0]
		} else {
			r.handleLine(b[:i], now)
		}
		b = b[i+1:]
	}
}

// Close handles a final line that had no terminator.
func (r *SSEReader) Close(now time.Time) {
	if len(r.line) > 0 && !r.skipping {
		r.handleLine(r.line, now)
	}
	r.line = r.line[:0]
}

func (r *SSEReader) handleLine(line []byte, now time.Time) {
	data, ok := bytes.CutPrefix(line, []byte("data:"))
	if !ok {
		return // comments, event names, ids, blank separators
	}
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return
	}
	if string(data) == "[DONE]" {
		r.Done = true
		return
	}
	var c streamChunk
	if err := json.Unmarshal(data, &c); err != nil {
		r.BadEvents++
		return
	}
	generated := false
	for _, ch := range c.Choices {
		n := len(ch.Text) + len(ch.Delta.Content) + len(ch.Delta.ReasoningContent) + len(ch.Delta.Reasoning)
		if n > 0 || len(ch.Delta.ToolCalls) > 0 && string(ch.Delta.ToolCalls) != "null" {
			r.OutputChunks++
			r.OutputBytes += n
			generated = true
		}
	}
	if generated {
		if r.FirstToken.IsZero() {
			r.FirstToken = now
		}
		r.LastToken = now
	}
	if c.Usage != nil {
		r.Usage, r.HasUsage = c.Usage.usage(), true
	}
}

// OutputTokens is the number of generated tokens: the server's count when it reported usage
// (the picker asks for it, see requestUsage), otherwise CountedTokens.
func (r *SSEReader) OutputTokens() int {
	if r.HasUsage {
		return r.Usage.CompletionTokens
	}
	return r.CountedTokens()
}

// CountedTokens is the generated tokens counted from the stream, for servers that ignore
// include_usage: max(OutputChunks, the token rule over all generated text). Every chunk with
// output carries at least one token, and vLLM streams one token per chunk by default, so the
// chunk count is exact there whatever the tokens' lengths; the token rule over the whole text
// (not per chunk, which would count a 5-byte token as 2) covers servers that pack several
// tokens per chunk (--stream-interval, speculative decoding).
func (r *SSEReader) CountedTokens() int {
	return max(r.OutputChunks, (r.OutputBytes+tokens.BytesPerToken-1)/tokens.BytesPerToken)
}

// parseCompletionUsage reads usage from a complete non-streaming response body.
func parseCompletionUsage(body []byte) (Usage, bool) {
	var v struct {
		Usage *usageJSON `json:"usage"`
	}
	if json.Unmarshal(body, &v) != nil || v.Usage == nil {
		return Usage{}, false
	}
	return v.Usage.usage(), true
}
