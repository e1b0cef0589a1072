package stack

import (
	"context"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/augur-llm/augur/requestcontrol"
)

// TestReplicaCrashIsAnUpstreamError: a stream cut because its replica died is an upstream
// error, not a cancel, and the dead replica leaves rotation at once: the next requests go to
// the live one without waiting for its metrics to go stale.
func TestReplicaCrashIsAnUpstreamError(t *testing.T) {
	s, obs := startStack(t, Config{Replicas: 2})
	client := s.NewClient()
	stream := client.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
		Model: "sim-llama-8b", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("tell me a long story")},
		MaxTokens: openai.Int(5000),
	}, option.WithHeader("x-request-id", "e2e-crash"))
	defer stream.Close()
	got := 0
	for got < 3 && stream.Next() {
		if len(stream.Current().Choices) > 0 && stream.Current().Choices[0].Delta.Content != "" {
			got++
		}
	}
	if got < 3 {
		t.Fatalf("stream ended early: %v", stream.Err())
	}
	serving := -1
	for i, r := range s.Picker.Pool.Replicas() {
		if r.Load().Requests == 1 {
			serving = i
		}
	}
	if serving < 0 {
		t.Fatal("no replica has the request in flight")
	}
	dead := s.Picker.Pool.Replicas()[serving]
	s.Crash(serving)
	for stream.Next() {
	}
	if stream.Err() == nil {
		t.Error("the client saw a complete stream from a replica that crashed")
	}
	c := obs.wait(t, "e2e-crash")
	if c.Outcome != requestcontrol.OutcomeUpstreamError || c.OutputTokens < 3 {
		t.Errorf("completion outcome %q after %d tokens, want upstream_error after >= 3", c.Outcome, c.OutputTokens)
	}
	if !dead.Failing() {
		t.Errorf("%s still in rotation after it crashed", dead.Name)
	}
	for i := range 10 {
		_, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
			Model: "sim-llama-8b", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt(i, 20))},
			MaxTokens: openai.Int(2),
		})
		if err != nil {
			t.Fatalf("request %d after the crash: %v", i, err)
		}
	}
}
