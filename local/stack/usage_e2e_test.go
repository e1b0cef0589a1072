package stack

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/ssestream"

	"github.com/augur-llm/augur/requestcontrol"
)

// noUsageStream is a streaming response read by a client that did not ask for usage.
type noUsageStream struct {
	chunks      int // chunks with generated text
	usageChunks int // chunks with no choices or a usage object: the client must see none
	first, last time.Time
	err         error
}

func readNoUsage[T any](stream *ssestream.Stream[T], text func(T) string, raw func(T) string, choices func(T) int) noUsageStream {
	defer stream.Close()
	var r noUsageStream
	for stream.Next() {
		now := time.Now()
		ch := stream.Current()
		if choices(ch) == 0 || strings.Contains(raw(ch), `"usage":{`) {
			r.usageChunks++
		}
		if text(ch) != "" {
			if r.first.IsZero() {
				r.first = now
			}
			r.last = now
			r.chunks++
		}
	}
	r.err = stream.Err()
	return r
}

// TestStreamWithoutUsage: a streaming client that does not ask for usage gets the stream it
// asked for, without a usage chunk, while the picker records the server's own token count.
// The simulator never stops before max_tokens and streams one token per chunk, so its truth is
// max_tokens tokens in max_tokens chunks.
func TestStreamWithoutUsage(t *testing.T) {
	s, obs := startStack(t, Config{Replicas: 2})
	client := s.NewClient()
	ctx := context.Background()
	const maxTokens = 37
	var pickerTPOT, clientTPOT []time.Duration
	var sumErr float64
	for i := range 6 {
		id := fmt.Sprintf("e2e-no-usage-%d", i)
		opts := []option.RequestOption{option.WithHeader("x-request-id", id)}
		var r noUsageStream
		if i%2 == 0 {
			r = readNoUsage(client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
				Model: "sim-llama-8b", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt(300+i, 50))},
				MaxTokens: openai.Int(maxTokens),
			}, opts...),
				func(c openai.ChatCompletionChunk) string {
					if len(c.Choices) == 0 {
						return ""
					}
					return c.Choices[0].Delta.Content
				},
				func(c openai.ChatCompletionChunk) string { return c.RawJSON() },
				func(c openai.ChatCompletionChunk) int { return len(c.Choices) })
		} else {
			r = readNoUsage(client.Completions.NewStreaming(ctx, openai.CompletionNewParams{
				Model: "sim-llama-8b", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(prompt(300+i, 50))},
				MaxTokens: openai.Int(maxTokens),
			}, opts...),
				func(c openai.Completion) string {
					if len(c.Choices) == 0 {
						return ""
					}
					return c.Choices[0].Text
				},
				func(c openai.Completion) string { return c.RawJSON() },
				func(c openai.Completion) int { return len(c.Choices) })
		}
		if r.err != nil {
			t.Fatalf("request %d: %v", i, r.err)
		}
		if r.usageChunks != 0 || r.chunks != maxTokens {
			t.Errorf("request %d: the client saw %d usage chunks and %d text chunks; want none and %d", i, r.usageChunks, r.chunks, maxTokens)
		}
		c := obs.wait(t, id)
		if c.Outcome != requestcontrol.OutcomeOK || !c.HasUsage || c.OutputTokens != maxTokens || c.Usage.CompletionTokens != maxTokens || c.Usage.PromptTokens < 50 {
			t.Errorf("request %d: outcome %v, usage %v %+v, output tokens %d; want the server's usage with %d output tokens",
				i, c.Outcome, c.HasUsage, c.Usage, c.OutputTokens, maxTokens)
		}
		ct := r.last.Sub(r.first) / time.Duration(max(r.chunks-1, 1))
		pickerTPOT, clientTPOT = append(pickerTPOT, c.TPOT), append(clientTPOT, ct)
		errPct := 100 * math.Abs(float64(c.TPOT-ct)) / float64(ct)
		sumErr += errPct
		t.Logf("request %d: output tokens picker %d sim %d; TPOT picker %v client %v (%.1f%% apart)", i, c.OutputTokens, r.chunks, c.TPOT, ct, errPct)
	}
	t.Logf("mean TPOT error picker vs client: %.1f%%", sumErr/float64(len(pickerTPOT)))
	if p, c := median(pickerTPOT), median(clientTPOT); !within(p, c) {
		t.Errorf("TPOT median: picker %v, client %v: more than 10 ms and 10%% apart", p, c)
	}
}
