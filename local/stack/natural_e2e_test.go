package stack

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/ssestream"

	"github.com/augur-llm/augur/requestcontrol"
	"github.com/augur-llm/augur/tokens"
	"github.com/augur-llm/augur/windtunnel/sim"
)

// naturalStream is a streamed response as a client that did not ask for usage reads it.
type naturalStream struct {
	pieces      []string // the generated text of each chunk that had some
	usageChunks int
	first, last time.Time
	err         error
}

func readNatural[T any](stream *ssestream.Stream[T], text func(T) (string, int), raw func(T) string) naturalStream {
	defer stream.Close()
	var r naturalStream
	for stream.Next() {
		now := time.Now()
		ch := stream.Current()
		s, choices := text(ch)
		if choices == 0 || strings.Contains(raw(ch), `"usage":{`) {
			r.usageChunks++
		}
		if s != "" {
			if r.first.IsZero() {
				r.first = now
			}
			r.last = now
			r.pieces = append(r.pieces, s)
		}
	}
	r.err = stream.Err()
	return r
}

func pct(got, want float64) float64 { return 100 * (got - want) / want }

// TestStreamWithoutUsageNaturalTokens: replicas generating tokens of natural lengths (English
// word-pieces of 1-10 bytes, mean 4.25), one per chunk, and streaming clients that do not ask
// for usage. The picker's output tokens must be the true count (max_tokens: the simulator
// never stops early), which only the server's usage gives: counting the text by the token
// rule, as the picker did before it asked for usage, is off by the tokens' length mix. It
// logs the picker's output tokens and TPOT against the truth and the client's TPOT, and what
// the two counting rules give for the same text, for docs/benchmarks.md.
func TestStreamWithoutUsageNaturalTokens(t *testing.T) {
	s, obs := startStack(t, Config{Replicas: 2, TokenText: sim.TokenTextNatural})
	client := s.NewClient()
	ctx := context.Background()
	const requests, maxTokens = 8, 64
	var pickerTokens, perChunkRule, totalRule, trueTokens int
	var sumTPOTErr, sumAbsTPOTErr, sumPerChunkTPOTErr, sumTotalTPOTErr float64
	var pickerTPOT, clientTPOT []time.Duration
	for i := range requests {
		id := fmt.Sprintf("e2e-natural-%d", i)
		opts := []option.RequestOption{option.WithHeader("x-request-id", id)}
		var r naturalStream
		if i%2 == 0 {
			r = readNatural(client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
				Model: "sim-llama-8b", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt(500+i, 50))},
				MaxTokens: openai.Int(maxTokens),
			}, opts...),
				func(c openai.ChatCompletionChunk) (string, int) {
					if len(c.Choices) == 0 {
						return "", 0
					}
					return c.Choices[0].Delta.Content, len(c.Choices)
				},
				func(c openai.ChatCompletionChunk) string { return c.RawJSON() })
		} else {
			r = readNatural(client.Completions.NewStreaming(ctx, openai.CompletionNewParams{
				Model: "sim-llama-8b", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(prompt(500+i, 50))},
				MaxTokens: openai.Int(maxTokens),
			}, opts...),
				func(c openai.Completion) (string, int) {
					if len(c.Choices) == 0 {
						return "", 0
					}
					return c.Choices[0].Text, len(c.Choices)
				},
				func(c openai.Completion) string { return c.RawJSON() })
		}
		if r.err != nil {
			t.Fatalf("request %d: %v", i, r.err)
		}
		if r.usageChunks != 0 || len(r.pieces) != maxTokens {
			t.Errorf("request %d: the client saw %d usage chunks and %d text chunks; want none and %d", i, r.usageChunks, len(r.pieces), maxTokens)
		}
		// The counting rules over what the client received: per chunk (the picker before
		// 3fe4754) and max(chunks, the rule over the whole text) (SSEReader.CountedTokens).
		perChunk, text := 0, strings.Join(r.pieces, "")
		for _, p := range r.pieces {
			perChunk += tokens.Count(p)
		}
		total := max(len(r.pieces), tokens.Count(text))

		c := obs.wait(t, id)
		if c.Outcome != requestcontrol.OutcomeOK || !c.HasUsage || c.OutputTokens != maxTokens || c.Usage.CompletionTokens != maxTokens {
			t.Errorf("request %d: outcome %v, usage %v %+v, output tokens %d; want the server's usage with %d output tokens",
				i, c.Outcome, c.HasUsage, c.Usage, c.OutputTokens, maxTokens)
		}
		span := r.last.Sub(r.first)
		ct := span / time.Duration(maxTokens-1)
		pickerTPOT, clientTPOT = append(pickerTPOT, c.TPOT), append(clientTPOT, ct)
		e := pct(float64(c.TPOT), float64(ct))
		sumTPOTErr += e
		sumAbsTPOTErr += max(e, -e)
		sumPerChunkTPOTErr += pct(float64(span/time.Duration(perChunk-1)), float64(ct))
		sumTotalTPOTErr += pct(float64(span/time.Duration(total-1)), float64(ct))
		pickerTokens += c.OutputTokens
		perChunkRule += perChunk
		totalRule += total
		trueTokens += maxTokens
		t.Logf("request %d: output tokens picker %d (usage %v) true %d, text %d bytes (rules: per chunk %d, whole text %d); TPOT picker %v client %v (%+.1f%%)",
			i, c.OutputTokens, c.HasUsage, maxTokens, len(text), perChunk, total, c.TPOT, ct, e)
	}
	n := float64(requests)
	t.Logf("picker: output tokens %d of %d true (%+.1f%%); TPOT vs client mean %+.1f%%, mean |error| %.1f%%",
		pickerTokens, trueTokens, pct(float64(pickerTokens), float64(trueTokens)), sumTPOTErr/n, sumAbsTPOTErr/n)
	t.Logf("per-chunk token rule over the same text: %d tokens (%+.1f%%), TPOT %+.1f%%", perChunkRule,
		pct(float64(perChunkRule), float64(trueTokens)), sumPerChunkTPOTErr/n)
	t.Logf("max(chunks, rule over whole text): %d tokens (%+.1f%%), TPOT %+.1f%%", totalRule,
		pct(float64(totalRule), float64(trueTokens)), sumTotalTPOTErr/n)
	if perChunkRule == trueTokens && totalRule == trueTokens {
		t.Error("the counting rules are exact on this text: the replicas do not generate natural tokens, so the test shows nothing")
	}
	if p, c := median(pickerTPOT), median(clientTPOT); !within(p, c) {
		t.Errorf("TPOT median: picker %v, client %v: more than 10 ms and 10%% apart", p, c)
	}
}
