package stack

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/ssestream"

	"github.com/augur-llm/augur/windtunnel/sim"
)

// NewClient returns an OpenAI client for the stack's gateway. Retries are off so every call is
// exactly one request through the gateway.
func (s *Stack) NewClient() openai.Client {
	return openai.NewClient(option.WithBaseURL(s.GatewayURL), option.WithAPIKey("augur-local"), option.WithMaxRetries(0))
}

// Result is one request as the client saw it.
type Result struct {
	// Replica is the simulated replica that answered (its x-sim-replica header).
	Replica string
	Status  int
	Content string
	// TTFT is from sending the request to the first chunk with generated text (streaming only).
	TTFT time.Duration
	// TPOT is (last token time - first token time) / (completion tokens - 1) (streaming only).
	TPOT time.Duration
	E2E  time.Duration
	// Sent and FirstToken are when the request was sent and its first generated text arrived
	// (streaming only), on the process's clock, which the picker of an in-process stack shares.
	Sent, FirstToken time.Time
	// ErrMessage is the error message the server sent, when it answered with an error.
	ErrMessage string
	// ShedReason is the x-llm-d-request-dropped-reason of a rejected request.
	ShedReason       string
	PromptTokens     int
	CompletionTokens int
	CachedTokens     int
	Err              error
}

// StreamChat sends a streaming chat request and measures it from the client's side.
func StreamChat(ctx context.Context, c openai.Client, p openai.ChatCompletionNewParams, opts ...option.RequestOption) Result {
	var resp *http.Response
	p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	start := time.Now()
	stream := c.Chat.Completions.NewStreaming(ctx, p, append(opts, option.WithResponseInto(&resp))...)
	return readStream(start, stream, &resp, func(ch openai.ChatCompletionChunk) (string, openai.CompletionUsage) {
		var text string
		for _, choice := range ch.Choices {
			text += choice.Delta.Content
		}
		return text, ch.Usage
	})
}

// Chat sends a non-streaming chat request.
func Chat(ctx context.Context, c openai.Client, p openai.ChatCompletionNewParams, opts ...option.RequestOption) Result {
	var r Result
	var resp *http.Response
	start := time.Now()
	out, err := c.Chat.Completions.New(ctx, p, append(opts, option.WithResponseInto(&resp))...)
	r.E2E = time.Since(start)
	r.Err = err
	r.fromResponse(resp)
	if err == nil {
		if len(out.Choices) > 0 {
			r.Content = out.Choices[0].Message.Content
		}
		r.PromptTokens = int(out.Usage.PromptTokens)
		r.CompletionTokens = int(out.Usage.CompletionTokens)
		r.CachedTokens = int(out.Usage.PromptTokensDetails.CachedTokens)
	}
	return r
}

// Complete sends a non-streaming completions request.
func Complete(ctx context.Context, c openai.Client, p openai.CompletionNewParams, opts ...option.RequestOption) Result {
	var r Result
	var resp *http.Response
	start := time.Now()
	out, err := c.Completions.New(ctx, p, append(opts, option.WithResponseInto(&resp))...)
	r.E2E = time.Since(start)
	r.Err = err
	r.fromResponse(resp)
	if err == nil {
		if len(out.Choices) > 0 {
			r.Content = out.Choices[0].Text
		}
		r.PromptTokens = int(out.Usage.PromptTokens)
		r.CompletionTokens = int(out.Usage.CompletionTokens)
	}
	return r
}

func (r *Result) fromResponse(resp *http.Response) {
	var apiErr *openai.Error
	if errors.As(r.Err, &apiErr) {
		r.Status, r.ErrMessage = apiErr.StatusCode, apiErr.Message
		if apiErr.Response != nil {
			r.ShedReason = apiErr.Response.Header.Get("x-llm-d-request-dropped-reason")
		}
	}
	if resp != nil {
		r.Status = resp.StatusCode
		r.Replica = resp.Header.Get(sim.HeaderReplica)
	}
}

// StreamCompletion sends a streaming completions request and measures it from the client's side.
func StreamCompletion(ctx context.Context, c openai.Client, p openai.CompletionNewParams, opts ...option.RequestOption) Result {
	var resp *http.Response
	p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	start := time.Now()
	stream := c.Completions.NewStreaming(ctx, p, append(opts, option.WithResponseInto(&resp))...)
	return readStream(start, stream, &resp, func(ch openai.Completion) (string, openai.CompletionUsage) {
		var text string
		for _, choice := range ch.Choices {
			text += choice.Text
		}
		return text, ch.Usage
	})
}

// readStream reads a streamed response to its end, timing the chunks that carry generated
// text; parse gives a chunk's text and usage.
func readStream[T any](start time.Time, stream *ssestream.Stream[T], resp **http.Response, parse func(T) (string, openai.CompletionUsage)) Result {
	defer stream.Close()
	var r Result
	var sb strings.Builder
	var first, last time.Time
	for stream.Next() {
		now := time.Now()
		text, u := parse(stream.Current())
		if text != "" {
			if first.IsZero() {
				first = now
			}
			last = now
			sb.WriteString(text)
		}
		if u.CompletionTokens > 0 || u.PromptTokens > 0 {
			r.PromptTokens, r.CompletionTokens = int(u.PromptTokens), int(u.CompletionTokens)
			r.CachedTokens = int(u.PromptTokensDetails.CachedTokens)
		}
	}
	r.E2E = time.Since(start)
	r.Err = stream.Err()
	r.fromResponse(*resp)
	r.Content = sb.String()
	r.measure(start, first, last)
	return r
}

// measure sets TTFT and TPOT from the arrival times of the first and last generated text.
func (r *Result) measure(start, first, last time.Time) {
	if first.IsZero() {
		return
	}
	r.TTFT = first.Sub(start)
	r.Sent, r.FirstToken = start, first
	if r.CompletionTokens > 1 {
		r.TPOT = last.Sub(first) / time.Duration(r.CompletionTokens-1)
	}
}
