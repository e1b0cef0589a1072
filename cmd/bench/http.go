package main

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/augur-llm/augur/local/stack"
	"github.com/augur-llm/augur/windtunnel/report"
	"github.com/augur-llm/augur/windtunnel/workload"
)

// drive sends the workload as real streaming OpenAI requests to a gateway, each at its
// arrival time (open loop: a slow server does not slow the arrivals), and measures every
// request from the client's side.
func drive(ctx context.Context, baseURL, model string, g workload.Generator, bar *progress) ([]report.Outcome, error) {
	// Enough idle connections that an open loop does not open a new one per request.
	client := openai.NewClient(option.WithBaseURL(baseURL), option.WithAPIKey("augur-bench"), option.WithMaxRetries(0),
		option.WithHTTPClient(&http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024}}))
	var (
		mu       sync.Mutex
		outcomes []report.Outcome
		wg       sync.WaitGroup
		arrived  int
	)
	start := time.Now()
	stop := make(chan struct{})
	go func() { // the progress bar follows wall time while requests are in flight
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				mu.Lock()
				a, c := arrived, len(outcomes)
				mu.Unlock()
				bar.update(time.Since(start), a, c)
			}
		}
	}()
	defer close(stop)
	for {
		w, ok := g.Next()
		if !ok {
			break
		}
		if d := time.Until(start.Add(w.At)); d > 0 {
			select {
			case <-ctx.Done():
				wg.Wait()
				return outcomes, ctx.Err()
			case <-time.After(d):
			}
		}
		mu.Lock()
		arrived++
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			sent := time.Since(start)
			r := send(ctx, client, model, w)
			o := report.Outcome{
				Class: w.Class, Stage: w.Stage, Replica: r.Replica, SLOTTFT: w.SLOTTFT, SLOTPOT: w.SLOTPOT,
				Start: sent, End: sent + r.E2E, Status: r.Status, TTFT: r.TTFT, TPOT: r.TPOT, E2E: r.E2E,
				PromptTokens: r.PromptTokens, CachedTokens: r.CachedTokens, OutputTokens: r.CompletionTokens,
			}
			if r.Err == nil && o.Status == 0 {
				o.Status = http.StatusOK
			}
			if r.Status == http.StatusTooManyRequests {
				o.ShedReason = r.ShedReason
			}
			mu.Lock()
			outcomes = append(outcomes, o)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return outcomes, nil
}

func send(ctx context.Context, c openai.Client, model string, w workload.Request) stack.Result {
	var opts []option.RequestOption
	for k, v := range w.Headers() {
		opts = append(opts, option.WithHeader(k, v))
	}
	if w.IgnoreEOS {
		opts = append(opts, option.WithJSONSet("ignore_eos", true))
	}
	if w.API == workload.Chat {
		msgs := make([]openai.ChatCompletionMessageParamUnion, 0, len(w.Messages))
		for _, m := range w.Messages {
			switch m.Role {
			case "system":
				msgs = append(msgs, openai.SystemMessage(m.Text))
			case "assistant":
				msgs = append(msgs, openai.AssistantMessage(m.Text))
			default:
				msgs = append(msgs, openai.UserMessage(m.Text))
			}
		}
		return stack.StreamChat(ctx, c, openai.ChatCompletionNewParams{Model: model, Messages: msgs, MaxTokens: openai.Int(int64(w.MaxTokens))}, opts...)
	}
	return stack.StreamCompletion(ctx, c, openai.CompletionNewParams{Model: openai.CompletionNewParamsModel(model),
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(w.Prompt)}, MaxTokens: openai.Int(int64(w.MaxTokens))}, opts...)
}
