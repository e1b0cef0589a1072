package tokens

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestContentText(t *testing.T) {
	for _, tc := range []struct {
		raw, want string
	}{
		{`"hello"`, "hello"},
		{` "a\nb\u00e9" `, "a\nbé"},
		{`""`, ""},
		{`[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"u"}},{"type":"text","text":"b"}]`, "a\nb"},
		{`[{"type":"image_url","image_url":{"url":"u"}}]`, ""},
		{`[{"type":"text","text":""},{"type":"text","text":"x"}]`, "\nx"},
		{`[]`, ""},
		{`null`, ""},
		{` null `, ""},
		{``, ""},
	} {
		got, err := ContentText(json.RawMessage(tc.raw))
		if err != nil || got != tc.want {
			t.Errorf("ContentText(%s) = %q, %v; want %q", tc.raw, got, err, tc.want)
		}
	}
}

func TestContentTextErrors(t *testing.T) {
	for _, tc := range []struct {
		raw, want string
	}{
		{`5`, "must be a string, a list of parts or null"},
		{`{"type":"text"}`, "must be a string, a list of parts or null"},
		{`true`, "must be a string, a list of parts or null"},
		{`"unterminated`, "is not a valid JSON string"},
		{`[{"type":"text","text":"a"}`, "is not a valid JSON list"},
		{`["a"]`, "part 0 must be an object, not JSON string"},
		{`[{"type":"text","text":"a"},{"type":"text","text":5}]`, `part 1: "text" must be a string, not JSON number`},
		{`[{"type":7}]`, `part 0: "type" must be a string, not JSON number`},
	} {
		got, err := ContentText(json.RawMessage(tc.raw))
		if err == nil {
			t.Errorf("ContentText(%s) = %q, want an error", tc.raw, got)
			continue
		}
		if err.Error() != tc.want {
			t.Errorf("ContentText(%s) error %q, want %q", tc.raw, err, tc.want)
		}
		if strings.Contains(err.Error(), "Go ") || strings.Contains(err.Error(), "struct") {
			t.Errorf("ContentText(%s) error %q names Go types", tc.raw, err)
		}
	}
}
