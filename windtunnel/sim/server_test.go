package sim

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/clock"

	"github.com/augur-llm/augur/tokens"
)

const testModel = "sim-test"

func startServer(t testing.TB, interval int, prof Profile) (*httptest.Server, *Engine) {
	t.Helper()
	e := startEngine(t, Config{Model: testModel, Profile: prof, Seed: 5}, newAutoClock())
	s, err := NewServer(e, ServerOptions{Name: "sim-7", StreamInterval: interval})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return ts, e
}

func post(t testing.TB, url, body string) *http.Response {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// sseChunk is the union of the streamed chunk shapes.
type sseChunk struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	Model   string `json:"model"`
	Choices []struct {
		Index int `json:"index"`
		Delta *struct {
			Role    *string `json:"role"`
			Content *string `json:"content"`
		} `json:"delta"`
		Text         *string `json:"text"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *usageJSON `json:"usage"`
}

// readSSE returns the data payloads of a stream, checking the framing of every event.
func readSSE(t *testing.T, r io.Reader) []string {
	t.Helper()
	var events []string
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	expectBlank := false
	for sc.Scan() {
		line := sc.Text()
		if expectBlank {
			if line != "" {
				t.Fatalf("event not followed by a blank line: %q", line)
			}
			expectBlank = false
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			t.Fatalf("unexpected SSE line %q", line)
		}
		events = append(events, data)
		expectBlank = true
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(events) == 0 || events[len(events)-1] != "[DONE]" {
		t.Fatalf("stream does not end with [DONE]: %q", events)
	}
	return events
}

func parseChunks(t *testing.T, events []string) []sseChunk {
	t.Helper()
	var out []sseChunk
	for _, ev := range events[:len(events)-1] {
		var c sseChunk
		if err := json.Unmarshal([]byte(ev), &c); err != nil {
			t.Fatalf("chunk %q: %v", ev, err)
		}
		out = append(out, c)
	}
	return out
}

func TestChatStreamingFollowsEchoRuleAndInterval(t *testing.T) {
	ts, _ := startServer(t, 3, profile(t, "8b-h100"))
	user := "héllo, \"world\"\n<tag>" // multi-byte runes, quotes, newline and HTML characters
	msgs := []tokens.Message{{Role: "system", Text: "be brief"}, {Role: "user", Text: "first"},
		{Role: "assistant", Text: "ok"}, {Role: "user", Text: user}}
	body := `{"model":"sim-test","stream":true,"stream_options":{"include_usage":true},"max_completion_tokens":11,
		"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"first"},
		{"role":"assistant","content":"ok"},{"role":"user","content":[{"type":"text","text":` + jsonString(user) + `}]}]}`
	resp := post(t, ts.URL+"/v1/chat/completions", body)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if got := resp.Header.Get(HeaderReplica); got != "sim-7" {
		t.Errorf("%s = %q", HeaderReplica, got)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Errorf("content type %q", ct)
	}
	chunks := parseChunks(t, readSSE(t, resp.Body))

	// role chunk, then 1 + 3 + 3 + 3 + 1 tokens, then usage.
	if len(chunks) != 7 {
		t.Fatalf("got %d chunks, want 7: %+v", len(chunks), chunks)
	}
	var content strings.Builder
	var sizes []int
	for i, c := range chunks {
		if c.Object != "chat.completion.chunk" || c.Model != testModel || c.ID != chunks[0].ID || !strings.HasPrefix(c.ID, "chatcmpl-") {
			t.Errorf("chunk %d header: %+v", i, c)
		}
		if i == 0 {
			if len(c.Choices) != 1 || c.Choices[0].Delta == nil || c.Choices[0].Delta.Role == nil || *c.Choices[0].Delta.Role != "assistant" {
				t.Errorf("first chunk is not the role chunk: %+v", c)
			}
			continue
		}
		if i == len(chunks)-1 {
			if len(c.Choices) != 0 || c.Usage == nil {
				t.Fatalf("last chunk is not the usage chunk: %s", mustJSON(c))
			}
			continue
		}
		d := c.Choices[0].Delta.Content
		content.WriteString(*d)
		sizes = append(sizes, tokens.Count(*d))
		last := i == len(chunks)-2
		if fr := c.Choices[0].FinishReason; (fr != nil) != last || (last && *fr != "length") {
			t.Errorf("chunk %d finish_reason %v", i, fr)
		}
	}
	if want := tokens.EchoText(user, 11); content.String() != want {
		t.Errorf("content %q, want %q", content.String(), want)
	}
	if want := []int{1, 3, 3, 3, 1}; !equalInts(sizes, want) {
		t.Errorf("tokens per chunk %v, want %v", sizes, want)
	}
	u := chunks[len(chunks)-1].Usage
	wantPrompt := tokens.CountBytes(tokens.RenderChat(msgs))
	if u.PromptTokens != wantPrompt || u.CompletionTokens != 11 || u.TotalTokens != wantPrompt+11 {
		t.Errorf("usage %+v, want prompt %d completion 11", u, wantPrompt)
	}
}

func TestCompletionStreamingWithoutUsage(t *testing.T) {
	ts, _ := startServer(t, 0, profile(t, "8b-h100"))
	resp := post(t, ts.URL+"/v1/completions", `{"model":"sim-test","prompt":"The quick brown fox","max_tokens":7,"stream":true}`)
	chunks := parseChunks(t, readSSE(t, resp.Body))
	if len(chunks) != 7 {
		t.Fatalf("got %d chunks, want one per token", len(chunks))
	}
	var got strings.Builder
	for i, c := range chunks {
		if c.Usage != nil || c.Object != "text_completion" || len(c.Choices) != 1 || c.Choices[0].Text == nil {
			t.Fatalf("chunk %d: %s", i, mustJSON(c))
		}
		got.WriteString(*c.Choices[0].Text)
	}
	if want := tokens.EchoText("The quick brown fox", 7); got.String() != want {
		t.Errorf("text %q, want %q", got.String(), want)
	}
}

func TestCompletionBatchAndTokenIDs(t *testing.T) {
	ts, _ := startServer(t, 2, profile(t, "8b-h100"))
	resp := post(t, ts.URL+"/v1/completions", `{"model":"sim-test","prompt":["alpha","beta gamma"],"max_tokens":5,"stream":true,"stream_options":{"include_usage":true}}`)
	chunks := parseChunks(t, readSSE(t, resp.Body))
	texts := map[int]string{}
	for _, c := range chunks[:len(chunks)-1] {
		texts[c.Choices[0].Index] += *c.Choices[0].Text
	}
	if texts[0] != tokens.EchoText("alpha", 5) || texts[1] != tokens.EchoText("beta gamma", 5) {
		t.Errorf("texts %v", texts)
	}
	u := chunks[len(chunks)-1].Usage
	if u.PromptTokens != tokens.Count("alpha")+tokens.Count("beta gamma") || u.CompletionTokens != 10 {
		t.Errorf("usage %+v", u)
	}

	var out struct {
		Object  string `json:"object"`
		Choices []struct {
			Text string `json:"text"`
		} `json:"choices"`
		Usage usageJSON `json:"usage"`
	}
	resp = post(t, ts.URL+"/v1/completions", `{"model":"sim-test","prompt":[1,2,3,4,5],"max_tokens":3}`)
	decode(t, resp, 200, &out)
	if out.Object != "text_completion" || out.Choices[0].Text != tokens.EchoText(tokens.EchoFallback, 3) || out.Usage.PromptTokens != 5 {
		t.Errorf("token-id completion: %+v", out)
	}
	resp = post(t, ts.URL+"/v1/completions", `{"model":"sim-test","prompt":[[1,2],[3,4,5]],"max_tokens":2}`)
	decode(t, resp, 200, &out)
	if len(out.Choices) != 2 || out.Usage.PromptTokens != 5 || out.Usage.CompletionTokens != 4 {
		t.Errorf("batched token ids: %+v", out)
	}
}

func TestNonStreamingResponses(t *testing.T) {
	ts, _ := startServer(t, 0, profile(t, "8b-h100"))
	long := strings.Repeat("0123456789abcdef", 100) // 400 tokens, cached on the repeat
	var chat struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Model   string `json:"model"`
		Choices []struct {
			Index   int `json:"index"`
			Message struct {
				Role    string `json:"role"`
				Content string `json:"content"`
			} `json:"message"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
		Usage usageJSON `json:"usage"`
	}
	body := `{"model":"sim-test","messages":[{"role":"user","content":"` + long + `"}],"ignore_eos":true}`
	resp := post(t, ts.URL+"/v1/chat/completions", body)
	decode(t, resp, 200, &chat)
	rendered := tokens.RenderChat([]tokens.Message{{Role: "user", Text: long}})
	if chat.Object != "chat.completion" || chat.Model != testModel || chat.Choices[0].Message.Role != "assistant" ||
		chat.Choices[0].FinishReason != "length" {
		t.Errorf("chat: %+v", chat)
	}
	if chat.Choices[0].Message.Content != tokens.EchoText(long, DefaultMaxTokens) {
		t.Errorf("content does not follow the echo rule: %q", chat.Choices[0].Message.Content)
	}
	if u := chat.Usage; u.PromptTokens != tokens.CountBytes(rendered) || u.CompletionTokens != DefaultMaxTokens ||
		u.PromptTokensDetails.CachedTokens != 0 {
		t.Errorf("usage %+v", u)
	}
	if resp.Header.Get(HeaderReplica) != "sim-7" {
		t.Error("missing replica header")
	}

	req, _ := http.NewRequest("POST", ts.URL+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("x-request-id", "abc")
	resp2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	decode(t, resp2, 200, &chat)
	if chat.ID != "chatcmpl-abc" {
		t.Errorf("id %q, want chatcmpl-abc", chat.ID)
	}
	if got, want := chat.Usage.PromptTokensDetails.CachedTokens, (tokens.CountBytes(rendered)-1)/16*16; got != want {
		t.Errorf("cached tokens on repeat = %d, want %d", got, want)
	}
}

func TestErrors(t *testing.T) {
	ts, _ := startServer(t, 0, profile(t, "8b-h100"))
	for _, tc := range []struct {
		name, path, body string
		status           int
	}{
		{"bad json", "/v1/chat/completions", `{"model":`, 400},
		{"no model", "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}]}`, 400},
		{"no messages", "/v1/chat/completions", `{"model":"sim-test"}`, 400},
		{"no role", "/v1/chat/completions", `{"model":"sim-test","messages":[{"content":"hi"}]}`, 400},
		{"bad content", "/v1/chat/completions", `{"model":"sim-test","messages":[{"role":"user","content":5}]}`, 400},
		{"zero max tokens", "/v1/chat/completions", `{"model":"sim-test","max_tokens":0,"messages":[{"role":"user","content":"hi"}]}`, 400},
		{"n=2", "/v1/chat/completions", `{"model":"sim-test","n":2,"messages":[{"role":"user","content":"hi"}]}`, 400},
		{"stream not bool", "/v1/chat/completions", `{"model":"sim-test","stream":"yes","messages":[{"role":"user","content":"hi"}]}`, 400},
		{"no prompt", "/v1/completions", `{"model":"sim-test"}`, 400},
		{"empty prompt", "/v1/completions", `{"model":"sim-test","prompt":""}`, 400},
		{"empty list", "/v1/completions", `{"model":"sim-test","prompt":[]}`, 400},
		{"bad prompt", "/v1/completions", `{"model":"sim-test","prompt":{"a":1}}`, 400},
		{"mixed list", "/v1/completions", `{"model":"sim-test","prompt":["a",1]}`, 400},
		{"too long", "/v1/completions", `{"model":"sim-test","prompt":"hi","max_tokens":200000}`, 400},
		{"unknown model", "/v1/completions", `{"model":"gpt-9","prompt":"hi"}`, 404},
		{"unknown model chat", "/v1/chat/completions", `{"model":"gpt-9","messages":[{"role":"user","content":"hi"}]}`, 404},
		{"unknown route", "/v1/embeddings", `{}`, 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := post(t, ts.URL+tc.path, tc.body)
			var e struct {
				Error *struct {
					Message string `json:"message"`
					Type    string `json:"type"`
					Code    int    `json:"code"`
				} `json:"error"`
			}
			decode(t, resp, tc.status, &e)
			if e.Error == nil || e.Error.Message == "" || e.Error.Type == "" || e.Error.Code != tc.status {
				t.Errorf("error body %+v", e.Error)
			}
			if resp.Header.Get(HeaderReplica) != "sim-7" {
				t.Error("missing replica header")
			}
		})
	}
}

func TestModelsAndHealth(t *testing.T) {
	ts, _ := startServer(t, 0, profile(t, "8b-h100"))
	resp, err := http.Get(ts.URL + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("/health %d", resp.StatusCode)
	}
	resp, err = http.Get(ts.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct {
		Object string `json:"object"`
		Data   []struct {
			ID     string `json:"id"`
			Object string `json:"object"`
		} `json:"data"`
	}
	decode(t, resp, 200, &list)
	if list.Object != "list" || len(list.Data) != 1 || list.Data[0].ID != testModel || list.Data[0].Object != "model" {
		t.Errorf("models %+v", list)
	}
}

func decode(t *testing.T, resp *http.Response, status int, v any) {
	t.Helper()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d: %s", resp.StatusCode, status, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
}

func jsonString(s string) string { b, _ := json.Marshal(s); return string(b) }
func mustJSON(v any) string      { b, _ := json.Marshal(v); return string(b) }

func equalInts(a, b []int) bool {
	return bytes.Equal([]byte(mustJSON(a)), []byte(mustJSON(b)))
}

func TestClientDisconnectFreesTheRequest(t *testing.T) {
	e := startEngine(t, Config{Model: testModel, Profile: profile(t, "8b-h100")}, clock.RealClock{})
	s, err := NewServer(e, ServerOptions{Name: "sim-0"})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	defer ts.Close()
	resp := post(t, ts.URL+"/v1/completions", `{"model":"sim-test","prompt":"hello","max_tokens":100000,"stream":true}`)
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "data: {") {
		t.Fatalf("first line %q, %v", line, err)
	}
	if s := e.Snapshot(); s.Running != 1 {
		t.Fatalf("running = %d while streaming", s.Running)
	}
	resp.Body.Close()
	deadline := time.Now().Add(10 * time.Second)
	for e.Snapshot().Running != 0 {
		if time.Now().After(deadline) {
			t.Fatal("request still running 10s after the client left")
		}
		time.Sleep(time.Millisecond)
	}
	if s := e.Snapshot(); s.FreeBlocks != s.NumGPUBlocks-1 {
		t.Errorf("free blocks %d of %d after disconnect", s.FreeBlocks, s.NumGPUBlocks-1)
	}
}

func TestAppendEscapedMatchesJSON(t *testing.T) {
	s := "q\"b\\n\n\r\t\x01\x1f<>&é😀"
	got := string(appendJSONString(nil, s))
	// encoding/json also escapes HTML characters, which JSON does not require.
	want := strings.NewReplacer(`\u003c`, "<", `\u003e`, ">", `\u0026`, "&").Replace(jsonString(s))
	if got != want {
		t.Errorf("escaped %s, want %s", got, want)
	}
}
