package extproc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/augur-llm/augur/tokens"
)

// API is the OpenAI endpoint a request targets.
type API uint8

// The OpenAI APIs the picker understands.
const (
	APIChat API = iota + 1
	APICompletions
)

// Body is what the picker reads from an OpenAI request body.
type Body struct {
	API   API
	Model string
	// Prompt is the prompt as one text: the rendered chat (tokens.RenderChat) or the
	// completion prompt(s) concatenated. Token-id prompts contribute no text.
	Prompt       []byte
	PromptTokens int
	// MaxTokens is max_completion_tokens or max_tokens; 0 when absent.
	MaxTokens    int
	Stream       bool
	IncludeUsage bool
}

// BodyError is a client error in the request body; its message is safe to return to the client.
type BodyError struct{ Msg string }

func (e *BodyError) Error() string { return e.Msg }

func bodyErrorf(format string, a ...any) error { return &BodyError{Msg: fmt.Sprintf(format, a...)} }

type rawBody struct {
	Model         *string         `json:"model"`
	Messages      json.RawMessage `json:"messages"`
	Prompt        json.RawMessage `json:"prompt"`
	Stream        *bool           `json:"stream"`
	StreamOptions *struct {
		IncludeUsage *bool `json:"include_usage"`
	} `json:"stream_options"`
	MaxTokens           *int64 `json:"max_tokens"`
	MaxCompletionTokens *int64 `json:"max_completion_tokens"`
}

type rawMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// maxOutputTokens bounds max_tokens; anything larger is a client mistake, not a request.
const maxOutputTokens = 1 << 24

// ParseBody parses an OpenAI chat or completions request body. The path chooses the API;
// on other paths the presence of "messages" or "prompt" does. Errors are *BodyError.
func ParseBody(path string, body []byte) (Body, error) {
	var raw rawBody
	if err := json.Unmarshal(body, &raw); err != nil {
		return Body{}, bodyErrorf("request body is not valid JSON: %s", jsonErrText(err))
	}
	var b Body
	switch {
	case strings.HasSuffix(trimQuery(path), "/chat/completions"):
		b.API = APIChat
	case strings.HasSuffix(trimQuery(path), "/completions"):
		b.API = APICompletions
	case raw.Messages != nil:
		b.API = APIChat
	default:
		b.API = APICompletions
	}
	if raw.Model == nil || *raw.Model == "" {
		return Body{}, bodyErrorf("request body has no \"model\"")
	}
	b.Model = *raw.Model
	if raw.Stream != nil {
		b.Stream = *raw.Stream
	}
	if raw.StreamOptions != nil && raw.StreamOptions.IncludeUsage != nil {
		b.IncludeUsage = *raw.StreamOptions.IncludeUsage
	}
	for _, mt := range []struct {
		name string
		v    *int64
	}{{"max_completion_tokens", raw.MaxCompletionTokens}, {"max_tokens", raw.MaxTokens}} {
		if mt.v == nil {
			continue
		}
		if *mt.v < 1 || *mt.v > maxOutputTokens {
			return Body{}, bodyErrorf("%q is %d; it must be between 1 and %d", mt.name, *mt.v, maxOutputTokens)
		}
		if b.MaxTokens == 0 {
			b.MaxTokens = int(*mt.v)
		}
	}
	var err error
	if b.API == APIChat {
		err = b.parseMessages(raw.Messages)
	} else {
		err = b.parsePrompt(raw.Prompt)
	}
	if err != nil {
		return Body{}, err
	}
	return b, nil
}

func (b *Body) parseMessages(data json.RawMessage) error {
	if isNull(data) {
		return bodyErrorf("chat request body has no \"messages\"")
	}
	var msgs []rawMessage
	if err := json.Unmarshal(data, &msgs); err != nil {
		return bodyErrorf("\"messages\" must be a list of {role, content}: %s", jsonErrText(err))
	}
	if len(msgs) == 0 {
		return bodyErrorf("\"messages\" is empty")
	}
	for i, m := range msgs {
		if m.Role == "" {
			return bodyErrorf("messages[%d] has no \"role\"", i)
		}
		// The simulator reads content with the same function, so both count the same text.
		text, err := tokens.ContentText(m.Content)
		if err != nil {
			return bodyErrorf("messages[%d].content: %s", i, err.Error())
		}
		b.Prompt = tokens.AppendChatMessage(b.Prompt, m.Role, text)
	}
	b.PromptTokens = tokens.CountBytes(b.Prompt)
	return nil
}

func (b *Body) parsePrompt(data json.RawMessage) error {
	data = bytes.TrimSpace(data)
	if isNull(data) {
		return bodyErrorf("completions request body has no \"prompt\"")
	}
	switch data[0] {
	case '"':
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return bodyErrorf("\"prompt\" is not a valid string: %s", jsonErrText(err))
		}
		b.Prompt = []byte(s)
		b.PromptTokens = tokens.Count(s)
	case '[':
		// A string, a list of strings, a list of token ids, or a list of lists of token ids.
		var items []json.RawMessage
		if err := json.Unmarshal(data, &items); err != nil {
			return bodyErrorf("\"prompt\" is not a valid list: %s", jsonErrText(err))
		}
		for i, it := range items {
			it = bytes.TrimSpace(it)
			if len(it) == 0 {
				return bodyErrorf("prompt[%d] is empty", i)
			}
			switch it[0] {
			case '"':
				var s string
				if err := json.Unmarshal(it, &s); err != nil {
					return bodyErrorf("prompt[%d] is not a valid string", i)
				}
				b.Prompt = append(b.Prompt, s...)
				b.PromptTokens += tokens.Count(s)
			case '[':
				var ids []int64
				if err := json.Unmarshal(it, &ids); err != nil {
					return bodyErrorf("prompt[%d] must be a list of token ids", i)
				}
				b.PromptTokens += len(ids)
			default:
				var id int64
				if err := json.Unmarshal(it, &id); err != nil {
					return bodyErrorf("prompt[%d] must be a string or a token id", i)
				}
				b.PromptTokens++
			}
		}
	default:
		return bodyErrorf("\"prompt\" must be a string, a list of strings or a list of token ids")
	}
	if b.PromptTokens == 0 {
		return bodyErrorf("\"prompt\" is empty")
	}
	return nil
}

func isNull(d json.RawMessage) bool {
	d = bytes.TrimSpace(d)
	return len(d) == 0 || string(d) == "null"
}

func trimQuery(p string) string {
	if i := strings.IndexByte(p, '?'); i >= 0 {
		return p[:i]
	}
	return p
}

// jsonErrText turns encoding/json errors into a short message without Go type names.
func jsonErrText(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field := te.Field
		if field == "" {
			field = "value"
		}
		return fmt.Sprintf("%s has the wrong type (got JSON %s)", field, te.Value)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%s at byte %d", se.Error(), se.Offset)
	}
	return err.Error()
}
