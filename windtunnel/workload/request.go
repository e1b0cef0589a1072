package workload

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"

	"github.com/augur-llm/augur/tokens"
)

// API is the OpenAI endpoint a request is sent to.
type API uint8

const (
	Chat        API = iota // /v1/chat/completions
	Completions            // /v1/completions
)

func (a API) String() string {
	switch a {
	case Chat:
		return "chat"
	case Completions:
		return "completions"
	}
	return "api(" + strconv.Itoa(int(a)) + ")"
}

// Path is the request path of the API.
func (a API) Path() string {
	if a == Completions {
		return "/v1/completions"
	}
	return "/v1/chat/completions"
}

// Request headers a client sets (names as in the endpoint-picker protocol).
const (
	HeaderRequestID  = "x-request-id"
	HeaderSessionID  = "x-session-id"
	HeaderSLOTTFT    = "x-slo-ttft-ms"
	HeaderSLOTPOT    = "x-slo-tpot-ms"
	HeaderObjective  = "x-gateway-inference-objective"
	HeaderFairnessID = "x-gateway-inference-fairness-id"
)

// DefaultClass is the SLO class of requests from workloads without classes.
const DefaultClass = "default"

// Request is one request of a stream: when it arrives, what a client sends, and what a
// report groups it by. Strings and message slices may be shared with other requests of the
// same stream (a recurring prompt, a session's history); treat them as read-only.
type Request struct {
	Seq   int           // index in the stream, from 0
	At    time.Duration // arrival offset from the start of the run
	Stage int           // index of the ladder stage At falls in
	ID    string        // unique in the stream, e.g. "sp-000123"; the x-request-id

	API       API
	Messages  []tokens.Message // the prompt of a Chat request
	Prompt    string           // the prompt of a Completions request
	MaxTokens int
	IgnoreEOS bool
	Stream    bool

	Class      string        // SLO class, for reports
	SLOTTFT    time.Duration // 0 = no objective
	SLOTPOT    time.Duration // 0 = no objective
	Objective  string        // names the inference objective (priority band)
	Priority   int           // the objective's priority; negative = sheddable
	FairnessID string        // the tenant (flow) within the band
	SessionID  string        // groups the turns of a conversation or agent run

	// Turn is the request's index within its session (0 for the first, and for requests
	// without a session).
	Turn int
	// Think is the gap between the previous turn of the session and this one. At counts it
	// from the previous turn's arrival, which keeps the offered load independent of the
	// pool under test; a closed-loop runner may count it from the previous turn's completion
	// instead.
	Think time.Duration
}

// PromptText is the prompt as the picker and the simulator count and hash it: the rendered
// chat (tokens.RenderChat) or the completion prompt. It returns a new slice on every call.
func (r Request) PromptText() []byte {
	if r.API == Chat {
		return tokens.RenderChat(r.Messages)
	}
	return []byte(r.Prompt)
}

// PromptTokens is tokens.CountBytes(r.PromptText()), computed without rendering.
func (r Request) PromptTokens() int {
	if r.API != Chat {
		return tokens.Count(r.Prompt)
	}
	n := 0
	for _, m := range r.Messages {
		n += len("<|") + len(m.Role) + len("|>\n") + len(m.Text) + len("\n")
	}
	return (n + tokens.BytesPerToken - 1) / tokens.BytesPerToken
}

// Headers are the HTTP headers a client sends with the request (names in lower case);
// headers without a value (no SLO, no session, ...) are left out.
func (r Request) Headers() map[string]string {
	h := make(map[string]string, 6)
	if r.ID != "" {
		h[HeaderRequestID] = r.ID
	}
	if r.SLOTTFT > 0 {
		h[HeaderSLOTTFT] = formatMillis(r.SLOTTFT)
	}
	if r.SLOTPOT > 0 {
		h[HeaderSLOTPOT] = formatMillis(r.SLOTPOT)
	}
	if r.Objective != "" {
		h[HeaderObjective] = r.Objective
	}
	if r.FairnessID != "" {
		h[HeaderFairnessID] = r.FairnessID
	}
	if r.SessionID != "" {
		h[HeaderSessionID] = r.SessionID
	}
	return h
}

// formatMillis writes d in milliseconds, as an integer when it is one.
func formatMillis(d time.Duration) string {
	if d%time.Millisecond == 0 {
		return strconv.FormatInt(int64(d/time.Millisecond), 10)
	}
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', -1, 64)
}

// Path is the HTTP path the request is sent to.
func (r Request) Path() string { return r.API.Path() }

// Body is the OpenAI request body for model. Streaming requests ask for usage in the last
// chunk, which is where cached-token counts come from; ignore_eos is sent as vLLM's extra
// parameter.
func (r Request) Body(model string) []byte {
	type message struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}
	type streamOptions struct {
		IncludeUsage bool `json:"include_usage"`
	}
	body := struct {
		Model         string         `json:"model"`
		Messages      []message      `json:"messages,omitempty"`
		Prompt        *string        `json:"prompt,omitempty"`
		MaxTokens     int            `json:"max_tokens,omitempty"`
		Stream        bool           `json:"stream,omitempty"`
		StreamOptions *streamOptions `json:"stream_options,omitempty"`
		IgnoreEOS     bool           `json:"ignore_eos,omitempty"`
	}{Model: model, MaxTokens: r.MaxTokens, Stream: r.Stream, IgnoreEOS: r.IgnoreEOS}
	if r.API == Chat {
		body.Messages = make([]message, len(r.Messages))
		for i, m := range r.Messages {
			body.Messages[i] = message{Role: m.Role, Content: m.Text}
		}
	} else {
		body.Prompt = &r.Prompt
	}
	if r.Stream {
		body.StreamOptions = &streamOptions{IncludeUsage: true}
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(body) // cannot fail: strings, ints and bools only
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}
