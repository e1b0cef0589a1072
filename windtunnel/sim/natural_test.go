package sim

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/augur-llm/augur/tokens"
)

func startNaturalServer(t *testing.T, interval int) *httptest.Server {
	t.Helper()
	e := startEngine(t, Config{Model: testModel, Profile: profile(t, "8b-h100"), Seed: 5}, newAutoClock())
	s, err := NewServer(e, ServerOptions{Name: "sim-7", StreamInterval: interval, TokenText: TokenTextNatural})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return ts
}

func TestNaturalVocabulary(t *testing.T) {
	seen := map[string]bool{}
	lengths := map[int]int{}
	total := 0
	for _, p := range naturalVocab {
		if seen[p] {
			t.Errorf("piece %q repeated", p)
		}
		seen[p] = true
		lengths[len(p)]++
		total += len(p)
	}
	for n := 1; n <= 10; n++ {
		if lengths[n] == 0 {
			t.Errorf("no piece of %d bytes", n)
		}
	}
	if len(lengths) != 10 {
		t.Errorf("piece lengths %v, want 1..10 only", lengths)
	}
	if mean := float64(total) / float64(len(naturalVocab)); mean != 4.25 {
		t.Errorf("mean piece length %v, want 4.25 (as documented)", mean)
	}

	// The drawn tokens follow the vocabulary: over many tokens, every piece appears and the
	// mean length is close to the vocabulary's.
	const n = 64 * 400
	pieces := NaturalPieces("some prompt", 0, n)
	drawn := map[string]int{}
	bytes := 0
	for _, p := range pieces {
		drawn[p]++
		bytes += len(p)
	}
	if len(drawn) != len(naturalVocab) {
		t.Errorf("%d distinct pieces drawn, want %d", len(drawn), len(naturalVocab))
	}
	if mean := float64(bytes) / n; mean < 4.15 || mean > 4.35 {
		t.Errorf("mean drawn length %.3f, want about 4.25", mean)
	}
	if got := strings.Join(pieces, ""); got != NaturalText("some prompt", 0, n) {
		t.Error("NaturalText is not NaturalPieces joined")
	}
	if NaturalText("some prompt", 0, 50) == NaturalText("some prompt", 1, 50) ||
		NaturalText("some prompt", 0, 50) == NaturalText("other prompt", 0, 50) {
		t.Error("choices and prompts do not get texts of their own")
	}
	if NaturalText("", 0, 20) != NaturalText(tokens.EchoFallback, 0, 20) {
		t.Error(`"" does not seed as tokens.EchoFallback`)
	}
}

func TestTokenTextNames(t *testing.T) {
	for _, tt := range []TokenText{TokenTextEcho, TokenTextNatural} {
		b, err := tt.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var back TokenText
		if err := back.UnmarshalText(b); err != nil || back != tt {
			t.Errorf("%v: round trip gives %v, %v", tt, back, err)
		}
	}
	if _, err := ParseTokenText("words"); err == nil {
		t.Error("unknown name accepted")
	}
	e := startEngine(t, Config{Model: testModel, Profile: profile(t, "8b-h100")}, newAutoClock())
	if _, err := NewServer(e, ServerOptions{TokenText: TokenText(7)}); err == nil {
		t.Error("NewServer accepted an unknown TokenText")
	}
}

// TestNaturalStreaming: one natural token per chunk, the text NaturalPieces predicts (with
// the newline and quote pieces escaped correctly, or the chunks would not parse), usage the true
// count, and the token rule over the text off from it.
func TestNaturalStreaming(t *testing.T) {
	ts := startNaturalServer(t, 1)
	const n = 200
	user := "tell me a story"
	body := `{"model":"sim-test","stream":true,"stream_options":{"include_usage":true},"max_tokens":200,
		"messages":[{"role":"user","content":"` + user + `"}]}`
	chunks := parseChunks(t, readSSE(t, post(t, ts.URL+"/v1/chat/completions", body).Body))
	if len(chunks) != n+2 { // role chunk, n tokens, usage
		t.Fatalf("got %d chunks, want %d", len(chunks), n+2)
	}
	want := NaturalPieces(user, 0, n)
	var text strings.Builder
	for i, c := range chunks[1 : n+1] {
		if got := *c.Choices[0].Delta.Content; got != want[i] {
			t.Errorf("token %d: %q, want %q", i, got, want[i])
		}
		text.WriteString(*c.Choices[0].Delta.Content)
	}
	if u := chunks[n+1].Usage; u == nil || u.CompletionTokens != n {
		t.Errorf("usage %+v, want %d completion tokens", u, n)
	}
	if c := tokens.Count(text.String()); c == n {
		t.Errorf("the token rule counts the natural text exactly (%d): not natural", c)
	}
	if !strings.Contains(text.String(), "\n") || !strings.Contains(text.String(), `"`) {
		t.Error("200 tokens without a newline or a quote: escaping untested")
	}

	// Same request, same text; completions with several prompts, one text per choice; chunks
	// of 3 tokens after the first.
	ts3 := startNaturalServer(t, 3)
	again := parseChunks(t, readSSE(t, post(t, ts3.URL+"/v1/chat/completions", body).Body))
	var text3 strings.Builder
	for _, c := range again[1 : len(again)-1] {
		text3.WriteString(*c.Choices[0].Delta.Content)
	}
	if text3.String() != text.String() || len(again) != 2+1+(n-1+2)/3 {
		t.Errorf("interval 3: %d chunks, same text %v", len(again), text3.String() == text.String())
	}
	resp := post(t, ts3.URL+"/v1/completions", `{"model":"sim-test","prompt":["alpha","beta gamma"],"max_tokens":5,"stream":true}`)
	texts := map[int]string{}
	for _, c := range parseChunks(t, readSSE(t, resp.Body)) {
		texts[c.Choices[0].Index] += *c.Choices[0].Text
	}
	if texts[0] != NaturalText("alpha", 0, 5) || texts[1] != NaturalText("beta gamma", 1, 5) {
		t.Errorf("texts %v", texts)
	}
}

func TestNaturalNonStreaming(t *testing.T) {
	ts := startNaturalServer(t, 0)
	var out struct {
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
			Text string `json:"text"`
		} `json:"choices"`
		Usage usageJSON `json:"usage"`
	}
	decode(t, post(t, ts.URL+"/v1/chat/completions", `{"model":"sim-test","max_tokens":30,"messages":[{"role":"user","content":"hi"}]}`), 200, &out)
	if out.Choices[0].Message.Content != NaturalText("hi", 0, 30) || out.Usage.CompletionTokens != 30 {
		t.Errorf("chat: %+v", out)
	}
	decode(t, post(t, ts.URL+"/v1/completions", `{"model":"sim-test","max_tokens":9,"prompt":[1,2,3]}`), 200, &out)
	if out.Choices[0].Text != NaturalText(tokens.EchoFallback, 0, 9) || out.Usage.CompletionTokens != 9 {
		t.Errorf("token-id completion: %+v", out)
	}
}
