package extproc

import (
	"testing"
	"time"
)

func TestSSEReaderSplitsAndUsage(t *testing.T) {
	stream := "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\r\n\r\n" +
		": keep-alive comment\n\n" +
		"data: {\"choices\":[{\"delta\":{\"content\":\"abcdefgh\"}}]}\n\n" +
		"data: not json\n\n" +
		"data: {\"choices\":[{\"text\":\"ijkl\"}]}\n\n" +
		"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":3,\"prompt_tokens_details\":{\"cached_tokens\":8}}}\n\n" +
		"data: [DONE]\n\n"
	t0 := time.Unix(0, 0)
	for split := 0; split <= len(stream); split++ {
		var r SSEReader
		r.Feed([]byte(stream[:split]), t0)
		r.Feed([]byte(stream[split:]), t0.Add(time.Second))
		r.Close(t0.Add(2 * time.Second))
		if !r.Done || !r.HasUsage || r.Usage != (Usage{10, 3, 8}) || r.CountedTokens() != 3 || r.BadEvents != 1 {
			t.Fatalf("split %d: %+v", split, r)
		}
		if r.OutputTokens() != 3 {
			t.Fatalf("split %d: output tokens %d", split, r.OutputTokens())
		}
	}
}

func TestSSEReaderTimes(t *testing.T) {
	var r SSEReader
	t0 := time.Unix(100, 0)
	r.Feed([]byte("data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n"), t0)
	if !r.FirstToken.IsZero() {
		t.Fatal("a role-only chunk is not a token")
	}
	r.Feed([]byte("data: {\"choices\":[{\"delta\":{\"content\":\"ab\"}}]}\n\n"), t0.Add(time.Second))
	r.Feed([]byte("data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0}]}}]}\n\n"), t0.Add(3*time.Second))
	if r.FirstToken != t0.Add(time.Second) || r.LastToken != t0.Add(3*time.Second) || r.OutputTokens() != 2 {
		t.Fatalf("%+v", r)
	}
}

func TestSSEReaderBoundsLongLines(t *testing.T) {
	var r SSEReader
	chunk := make([]byte, 64<<10)
	for i := range chunk {
		chunk[i] = 'x'
	}
	for range 40 { // 2.5 MiB without a newline
		r.Feed(chunk, time.Time{})
	}
	if cap(r.line) > 2*maxSSELine {
		t.Fatalf("line buffer grew to %d bytes", cap(r.line))
	}
	r.Feed([]byte("\ndata: {\"choices\":[{\"text\":\"abcd\"}]}\n"), time.Unix(1, 0))
	if r.CountedTokens() != 1 {
		t.Fatalf("reader did not recover after an over-long line: %+v", r)
	}
}

func FuzzSSEReader(f *testing.F) {
	f.Add([]byte("data: {\"choices\":[{\"delta\":{\"content\":\"abcd\"}}]}\n\ndata: [DONE]\n\n"), uint16(5))
	f.Add([]byte("data: {\"choices\":[],\"usage\":{\"completion_tokens\":2}}\r\n\r\n"), uint16(0))
	f.Fuzz(func(t *testing.T, data []byte, split uint16) {
		// Feeding the stream whole or in two pieces must give the same reading.
		t0 := time.Unix(0, 0)
		var whole, parts SSEReader
		whole.Feed(data, t0)
		whole.Close(t0)
		s := int(split) % (len(data) + 1)
		parts.Feed(data[:s], t0)
		parts.Feed(data[s:], t0)
		parts.Close(t0)
		if whole.CountedTokens() != parts.CountedTokens() || whole.Usage != parts.Usage || whole.HasUsage != parts.HasUsage ||
			whole.Done != parts.Done || whole.BadEvents != parts.BadEvents {
			t.Fatalf("whole %+v != split at %d %+v", whole, s, parts)
		}
		// Every counted token needs at least one byte of generated text or a tool-call delta.
		if whole.CountedTokens() > len(data) {
			t.Fatalf("%d tokens counted from %d bytes", whole.CountedTokens(), len(data))
		}
		if (whole.CountedTokens() > 0) != !whole.FirstToken.IsZero() {
			t.Fatalf("tokens %d but first-token time %v", whole.CountedTokens(), whole.FirstToken)
		}
	})
}

// BenchmarkSSEReaderChunk is the picker's cost per streamed chunk of a vLLM chat response
// (one token per chunk, as vLLM streams by default).
func BenchmarkSSEReaderChunk(b *testing.B) {
	chunk := []byte(`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":" the"},"logprobs":null,"finish_reason":null}]}` + "\n\n")
	var r SSEReader
	now := time.Unix(0, 0)
	b.ReportAllocs()
	for b.Loop() {
		r.Feed(chunk, now)
	}
}
