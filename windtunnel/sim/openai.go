package sim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/augur-llm/augur/tokens"
)

// DefaultMaxTokens is generated when a request names neither max_tokens nor
// max_completion_tokens.
const DefaultMaxTokens = 64

// apiRequest holds the fields of /v1/chat/completions and /v1/completions bodies that the
// simulator reads; everything else (sampling parameters, tools, ...) is accepted and ignored.
type apiRequest struct {
	Model               string          `json:"model"`
	Messages            []chatMessage   `json:"messages"`
	Prompt              json.RawMessage `json:"prompt"`
	MaxTokens           *int            `json:"max_tokens"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	Stream              bool            `json:"stream"`
	StreamOptions       *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	IgnoreEOS bool `json:"ignore_eos"` // always true in effect: the simulator never stops early
	N         *int `json:"n"`
}

type chatMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// promptInput is one prompt to generate for (a completions request may batch several) and
// the text its output echoes.
type promptInput struct {
	prompt Prompt
	echo   string
}

// errBadRequest marks request errors that are the client's fault (HTTP 400).
var errBadRequest = errors.New("bad request")

func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errBadRequest, fmt.Sprintf(format, args...))
}

func (r *apiRequest) maxTokens() (int, error) {
	n := DefaultMaxTokens
	switch {
	case r.MaxCompletionTokens != nil:
		n = *r.MaxCompletionTokens
	case r.MaxTokens != nil:
		n = *r.MaxTokens
	}
	if n < 1 {
		return 0, badRequest("max_tokens must be at least 1, got %d", n)
	}
	return n, nil
}

func (r *apiRequest) validateCommon() error {
	if r.Model == "" {
		return badRequest("model is required")
	}
	if r.N != nil && *r.N != 1 {
		return badRequest("n=%d is not supported, only n=1", *r.N)
	}
	return nil
}

// chatInput renders the conversation with the token rule's chat rendering and picks the last
// user message as the text to echo.
func (r *apiRequest) chatInput() (promptInput, error) {
	if len(r.Messages) == 0 {
		return promptInput{}, badRequest("messages must be a non-empty list")
	}
	msgs := make([]tokens.Message, len(r.Messages))
	echo := ""
	for i, m := range r.Messages {
		if m.Role == "" {
			return promptInput{}, badRequest("messages[%d].role is required", i)
		}
		text, err := tokens.ContentText(m.Content)
		if err != nil {
			return promptInput{}, badRequest("messages[%d].content: %v", i, err)
		}
		msgs[i] = tokens.Message{Role: m.Role, Text: text}
		if m.Role == "user" && text != "" {
			echo = text
		}
	}
	return promptInput{prompt: TextPrompt(tokens.RenderChat(msgs)), echo: echo}, nil
}

// completionInputs reads prompt: a string, a list of strings, a list of token ids, or a list
// of lists of token ids. Each list element is a separate prompt with its own choice, as in
// the OpenAI API.
func (r *apiRequest) completionInputs() ([]promptInput, error) {
	raw := bytes.TrimSpace(r.Prompt)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, badRequest("prompt is required")
	}
	var out []promptInput
	addText := func(s string) error {
		if s == "" {
			return badRequest("prompt must not be empty")
		}
		out = append(out, promptInput{prompt: TextPrompt([]byte(s)), echo: s})
		return nil
	}
	addIDs := func(ids []int) error {
		if len(ids) == 0 {
			return badRequest("prompt must not be empty")
		}
		out = append(out, promptInput{prompt: TokenIDPrompt(ids), echo: tokens.EchoFallback})
		return nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, badRequest("prompt: %v", err)
		}
		return out, addText(s)
	}
	if raw[0] != '[' {
		return nil, badRequest("prompt must be a string, a list of strings or a list of token ids")
	}
	var elems []json.RawMessage
	if err := json.Unmarshal(raw, &elems); err != nil {
		return nil, badRequest("prompt: %v", err)
	}
	if len(elems) == 0 {
		return nil, badRequest("prompt must not be empty")
	}
	switch first := bytes.TrimSpace(elems[0]); {
	case len(first) > 0 && first[0] == '"':
		var ss []string
		if err := json.Unmarshal(raw, &ss); err != nil {
			return nil, badRequest("prompt: %v", err)
		}
		for _, s := range ss {
			if err := addText(s); err != nil {
				return nil, err
			}
		}
	case len(first) > 0 && first[0] == '[':
		var lists [][]int
		if err := json.Unmarshal(raw, &lists); err != nil {
			return nil, badRequest("prompt: %v", err)
		}
		for _, ids := range lists {
			if err := addIDs(ids); err != nil {
				return nil, err
			}
		}
	default:
		var ids []int
		if err := json.Unmarshal(raw, &ids); err != nil {
			return nil, badRequest("prompt: %v", err)
		}
		if err := addIDs(ids); err != nil {
			return nil, err
		}
	}
	return out, nil
}
