package workload

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/augur-llm/augur/tokens"
)

func TestPromptTokensMatchesRendering(t *testing.T) {
	for _, r := range []Request{
		{API: Chat, Messages: []tokens.Message{{Role: "system", Text: "be brief"}, {Role: "user", Text: "hi"}}},
		{API: Chat, Messages: []tokens.Message{{Role: "user", Text: " abc def"}, {Role: "assistant", Text: ""}}},
		{API: Chat},
		{API: Completions, Prompt: "hello world"},
		{API: Completions},
	} {
		text := r.PromptText()
		if got, want := r.PromptTokens(), tokens.CountBytes(text); got != want {
			t.Errorf("PromptTokens(%q) = %d, want %d", text, got, want)
		}
	}
	r := Request{API: Chat, Messages: []tokens.Message{{Role: "user", Text: "x"}}}
	if got, want := string(r.PromptText()), string(tokens.RenderChat(r.Messages)); got != want {
		t.Errorf("PromptText = %q, want %q", got, want)
	}
}

func TestHeaders(t *testing.T) {
	r := Request{
		ID: "ms-000001", SLOTTFT: 500 * time.Millisecond, SLOTPOT: 1500 * time.Microsecond,
		Objective: "interactive", FairnessID: "interactive-noisy", SessionID: "s1",
	}
	want := map[string]string{
		"x-request-id":                    "ms-000001",
		"x-slo-ttft-ms":                   "500",
		"x-slo-tpot-ms":                   "1.5",
		"x-gateway-inference-objective":   "interactive",
		"x-gateway-inference-fairness-id": "interactive-noisy",
		"x-session-id":                    "s1",
	}
	if got := r.Headers(); !reflect.DeepEqual(got, want) {
		t.Errorf("Headers = %v\nwant %v", got, want)
	}
	if got := (Request{ID: "sp-000000"}).Headers(); !reflect.DeepEqual(got, map[string]string{"x-request-id": "sp-000000"}) {
		t.Errorf("Headers without objectives = %v", got)
	}
}

func TestBody(t *testing.T) {
	chat := Request{API: Chat, Messages: []tokens.Message{{Role: "system", Text: "<tools>"}, {Role: "user", Text: "q"}},
		MaxTokens: 7, IgnoreEOS: true, Stream: true}
	var got map[string]any
	if err := json.Unmarshal(chat.Body("m"), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"model": "m",
		"messages": []any{
			map[string]any{"role": "system", "content": "<tools>"},
			map[string]any{"role": "user", "content": "q"},
		},
		"max_tokens": 7.0, "stream": true, "ignore_eos": true,
		"stream_options": map[string]any{"include_usage": true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("chat body = %v\nwant %v", got, want)
	}
	if chat.Path() != "/v1/chat/completions" {
		t.Errorf("chat path %q", chat.Path())
	}
	comp := Request{API: Completions, Prompt: "p", MaxTokens: 3}
	got = nil
	if err := json.Unmarshal(comp.Body("m"), &got); err != nil {
		t.Fatal(err)
	}
	if want := map[string]any{"model": "m", "prompt": "p", "max_tokens": 3.0}; !reflect.DeepEqual(got, want) {
		t.Errorf("completions body = %v, want %v", got, want)
	}
	if comp.Path() != "/v1/completions" {
		t.Errorf("completions path %q", comp.Path())
	}
}

func TestRequestID(t *testing.T) {
	if got := requestID("sp", 123); got != "sp-000123" {
		t.Errorf("requestID = %q", got)
	}
	if got := requestID("sp", 12345678); got != "sp-12345678" {
		t.Errorf("requestID = %q", got)
	}
}
