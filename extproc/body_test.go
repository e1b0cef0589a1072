package extproc

import (
	"errors"
	"testing"

	"github.com/augur-llm/augur/tokens"
)

func TestParseBody(t *testing.T) {
	for _, tc := range []struct {
		name, path, body string
		want             Body
	}{
		{"chat string content", "/v1/chat/completions",
			`{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true},"max_completion_tokens":7,"max_tokens":9}`,
			Body{API: APIChat, Model: "m", Prompt: tokens.RenderChat([]tokens.Message{{Role: "system", Text: "be brief"}, {Role: "user", Text: "hi"}}), Stream: true, IncludeUsage: true, MaxTokens: 7}},
		{"chat parts and null content", "/v1/chat/completions?x=1",
			`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"u"}},{"type":"text","text":"b"}]},{"role":"assistant","content":null}]}`,
			Body{API: APIChat, Model: "m", Prompt: tokens.RenderChat([]tokens.Message{{Role: "user", Text: "a\nb"}, {Role: "assistant"}})}},
		{"completion string", "/v1/completions", `{"model":"m","prompt":"abcdefgh","max_tokens":3}`,
			Body{API: APICompletions, Model: "m", Prompt: []byte("abcdefgh"), MaxTokens: 3}},
		{"completion list of strings", "/v1/completions", `{"model":"m","prompt":["abcd","e"]}`,
			Body{API: APICompletions, Model: "m", Prompt: []byte("abcde")}},
		{"completion token ids", "/v1/completions", `{"model":"m","prompt":[1,2,3]}`,
			Body{API: APICompletions, Model: "m"}},
		{"completion nested token ids", "/v1/completions", `{"model":"m","prompt":[[1,2],[3]]}`,
			Body{API: APICompletions, Model: "m"}},
		{"api from body on other paths", "/other", `{"model":"m","messages":[{"role":"user","content":"x"}]}`,
			Body{API: APIChat, Model: "m", Prompt: tokens.RenderChat([]tokens.Message{{Role: "user", Text: "x"}})}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseBody(tc.path, []byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			want := tc.want
			if want.PromptTokens == 0 {
				want.PromptTokens = tokens.CountBytes(want.Prompt)
			}
			if tc.name == "completion token ids" || tc.name == "completion nested token ids" {
				want.PromptTokens = 3
			}
			if got.API != want.API || got.Model != want.Model || string(got.Prompt) != string(want.Prompt) ||
				got.PromptTokens != want.PromptTokens || got.MaxTokens != want.MaxTokens ||
				got.Stream != want.Stream || got.IncludeUsage != want.IncludeUsage {
				t.Errorf("got %+v (prompt %q)\nwant %+v (prompt %q)", got, got.Prompt, want, want.Prompt)
			}
		})
	}
}

func TestParseBodyErrors(t *testing.T) {
	for _, body := range []string{
		``, `null`, `"x"`, `{"model":1}`, `{"model":"m","messages":"x"}`, `{"model":"m","messages":[{"content":"x"}]}`,
		`{"model":"m","messages":[{"role":"user","content":5}]}`, `{"model":"m","prompt":""}`, `{"model":"m","prompt":{}}`,
		`{"model":"m","prompt":[true]}`, `{"model":"m","prompt":"x","max_tokens":0}`, `{"model":"m","prompt":"x","max_tokens":1.5}`,
		`{"model":"m","prompt":"x","stream":"yes"}`,
	} {
		_, err := ParseBody("/v1/completions", []byte(body))
		var be *BodyError
		if !errors.As(err, &be) || be.Msg == "" {
			t.Errorf("ParseBody(%q) = %v, want a BodyError", body, err)
		}
	}
}

func FuzzParseBody(f *testing.F) {
	f.Add("/v1/chat/completions", []byte(chatBody))
	f.Add("/v1/completions", []byte(`{"model":"m","prompt":["a",[1,2],3],"max_tokens":4}`))
	f.Add("/v1/chat/completions", []byte(`{"model":"m","messages":[{"role":"u","content":[{"type":"text","text":"x"}]}]}`))
	f.Fuzz(func(t *testing.T, path string, body []byte) {
		b, err := ParseBody(path, body)
		if err != nil {
			var be *BodyError
			if !errors.As(err, &be) {
				t.Fatalf("error %v is not a BodyError", err)
			}
			return
		}
		if b.Model == "" || b.PromptTokens <= 0 || b.MaxTokens < 0 || b.MaxTokens > maxOutputTokens {
			t.Fatalf("accepted an invalid body: %+v", b)
		}
		if b.PromptTokens < tokens.CountBytes(b.Prompt) {
			t.Fatalf("prompt tokens %d below the count of the prompt text %d", b.PromptTokens, tokens.CountBytes(b.Prompt))
		}
	})
}
