package tokens

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// ContentText returns the text of an OpenAI chat message's content, the text that
// AppendChatMessage renders: a string as is; a list of parts as its text parts joined by "\n"
// (as vLLM joins them for string-format chat templates), other parts (images, audio)
// ignored; null or absent (an assistant turn with only tool calls) as "".
//
// Errors describe the content in words, without Go type names, so that a server can return
// them to the client after naming the message (e.g. "messages[2].content: ...").
func ContentText(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", errors.New("is not a valid JSON string")
		}
		return s, nil
	case '[':
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return "", errors.New("is not a valid JSON list")
		}
		var sb strings.Builder
		n := 0
		for i, item := range items {
			var part struct {
				Type string `json:"type"`
				Text string `json:"text"`
			}
			if err := json.Unmarshal(item, &part); err != nil {
				return "", partError(i, err)
			}
			if part.Type != "text" {
				continue
			}
			if n > 0 {
				sb.WriteByte('\n')
			}
			sb.WriteString(part.Text)
			n++
		}
		return sb.String(), nil
	}
	return "", errors.New("must be a string, a list of parts or null")
}

// partError describes why part i of a content list did not decode.
func partError(i int, err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field != "" {
			return fmt.Errorf("part %d: %q must be a string, not JSON %s", i, te.Field, te.Value)
		}
		return fmt.Errorf("part %d must be an object, not JSON %s", i, te.Value)
	}
	return fmt.Errorf("part %d is not valid JSON", i)
}
