package extproc

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestRequestUsage(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string // want "" means unchanged
	}{
		{"include_usage absent",
			`{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`,
			`{"stream_options":{"include_usage":true},"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`},
		{"spaces and newlines are kept",
			"{ \"model\" : \"m\",\n  \"stream\" : true }",
			"{\"stream_options\":{\"include_usage\":true}, \"model\" : \"m\",\n  \"stream\" : true }"},
		{"stream_options with other fields",
			`{"model":"m","stream":true,"stream_options":{"continuous_usage_stats":false},"prompt":"x"}`,
			`{"model":"m","stream":true,"stream_options":{"include_usage":true,"continuous_usage_stats":false},"prompt":"x"}`},
		{"empty stream_options",
			`{"model":"m","stream":true,"stream_options":{ }}`,
			`{"model":"m","stream":true,"stream_options":{"include_usage":true }}`},
		{"null stream_options",
			`{"model":"m","stream":true,"stream_options":null,"prompt":"x"}`,
			`{"model":"m","stream":true,"stream_options":{"include_usage":true},"prompt":"x"}`},
		{"include_usage false",
			`{"model":"m","stream":true,"stream_options":{"include_usage":false,"x":1}}`,
			`{"model":"m","stream":true,"stream_options":{"include_usage":true,"x":1}}`},
		{"include_usage null",
			`{"model":"m","stream":true,"stream_options":{"include_usage": null}}`,
			`{"model":"m","stream":true,"stream_options":{"include_usage": true}}`},
		{"names inside strings and nested objects are not members",
			`{"model":"m","messages":[{"role":"user","content":"\"stream_options\":{}"}],"tools":[{"stream_options":null}],"stream":true}`,
			`{"stream_options":{"include_usage":true},"model":"m","messages":[{"role":"user","content":"\"stream_options\":{}"}],"tools":[{"stream_options":null}],"stream":true}`},
		{"escaped name", `{"model":"m","stream":true,"stream\u005foptions":{"include_usage":false}}`,
			`{"model":"m","stream":true,"stream\u005foptions":{"include_usage":true}}`},
		{"the last repeated member counts", `{"stream":true,"stream_options":{"include_usage":true},"stream_options":{"include_usage":false}}`,
			`{"stream":true,"stream_options":{"include_usage":true},"stream_options":{"include_usage":true}}`},
		{"already true", `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`, ""},
		{"not streaming", `{"model":"m","messages":[]}`, ""},
		{"stream false", `{"model":"m","stream":false}`, ""},
		{"stream spelled in another case", `{"model":"m","STREAM":true}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, changed := requestUsage([]byte(tc.in))
			want := tc.want
			if want == "" {
				want = tc.in
			}
			if string(got) != want || changed != (tc.want != "") {
				t.Fatalf("requestUsage(%s)\n = %s (changed %v)\nwant %s", tc.in, got, changed, want)
			}
			if changed {
				var v struct {
					StreamOptions struct {
						IncludeUsage bool `json:"include_usage"`
					} `json:"stream_options"`
				}
				if err := json.Unmarshal(got, &v); err != nil || !v.StreamOptions.IncludeUsage {
					t.Fatalf("rewritten body %s: %v, include_usage %v", got, err, v.StreamOptions.IncludeUsage)
				}
			}
		})
	}
}

func TestWantsUsage(t *testing.T) {
	stream := Body{Stream: true}
	for _, tc := range []struct {
		path string
		b    Body
		want bool
	}{
		{"/v1/chat/completions", stream, true},
		{"/v1/completions?x=1", stream, true},
		{"/v1/chat/completions", Body{Stream: true, IncludeUsage: true}, false},
		{"/v1/chat/completions", Body{}, false},
		{"/v1/responses", stream, false},
		{"/other", stream, false},
	} {
		if got := wantsUsage(tc.path, tc.b); got != tc.want {
			t.Errorf("wantsUsage(%q, %+v) = %v", tc.path, tc.b, got)
		}
	}
}

const (
	sseContent1 = `data: {"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}` + "\n\n"
	sseContent2 = `data: {"id":"c","choices":[{"index":0,"delta":{"content":"usage"}}],"usage":null}` + "\r\n\r\n"
	sseComment  = ": keep-alive\n\n"
	sseUsage    = `data: {"id":"c","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}` + "\n\n"
	sseDone     = "data: [DONE]\n\n"
)

// filterAll runs a stream through a usageFilter in the given pieces and returns what passed.
func filterAll(pieces ...string) string {
	var f usageFilter
	var out bytes.Buffer
	for i, p := range pieces {
		out.Write(f.filter([]byte(p), i == len(pieces)-1))
	}
	return out.String()
}

func TestUsageFilterEverySplit(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"chat", sseContent1 + sseContent2 + sseComment + sseUsage + sseDone, sseContent1 + sseContent2 + sseComment + sseDone},
		{"CR only", strings.ReplaceAll(sseContent1+sseUsage+sseDone, "\n", "\r"), strings.ReplaceAll(sseContent1+sseDone, "\n", "\r")},
		{"CRLF usage", sseContent1 + strings.ReplaceAll(sseUsage, "\n", "\r\n") + sseDone, sseContent1 + sseDone},
		{"usage split over data lines", sseContent1 + "data: {\"choices\":[],\ndata: \"usage\":{\"completion_tokens\":1}}\n\n" + sseDone, sseContent1 + sseDone},
		{"no usage", sseContent1 + sseContent2 + sseDone, sseContent1 + sseContent2 + sseDone},
		{"usage with choices is kept", `data: {"choices":[{"delta":{"content":"x"}}],"usage":{"completion_tokens":1}}` + "\n\n",
			`data: {"choices":[{"delta":{"content":"x"}}],"usage":{"completion_tokens":1}}` + "\n\n"},
		{"unterminated usage at the end", sseContent1 + strings.TrimSuffix(sseUsage, "\n\n"), sseContent1},
		{"unterminated content at the end", sseContent1 + "data: {\"choices\":[{\"text\":\"a\"}]}", sseContent1 + "data: {\"choices\":[{\"text\":\"a\"}]}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := filterAll(tc.in); got != tc.want {
				t.Fatalf("whole: got %q, want %q", got, tc.want)
			}
			for i := 0; i <= len(tc.in); i++ {
				if got := filterAll(tc.in[:i], tc.in[i:]); got != tc.want {
					t.Fatalf("split at %d (%q | %q): got %q, want %q", i, tc.in[:i], tc.in[i:], got, tc.want)
				}
			}
			// Byte by byte: every boundary at once.
			pieces := strings.Split(tc.in, "")
			if got := filterAll(append(pieces, "")...); got != tc.want {
				t.Fatalf("byte by byte: got %q, want %q", got, tc.want)
			}
		})
	}
}

// Only the unfinished last event of a chunk is held back: complete events pass at once.
func TestUsageFilterHoldsOnlyThePartialEvent(t *testing.T) {
	var f usageFilter
	in := sseContent1 + sseContent2[:20]
	if got := string(f.filter([]byte(in), false)); got != sseContent1 {
		t.Fatalf("passed %q, want the complete event %q", got, sseContent1)
	}
	if got := string(f.filter([]byte(sseContent2[20:]), false)); got != sseContent2 {
		t.Fatalf("passed %q, want the completed event %q", got, sseContent2)
	}
	if got := string(f.filter([]byte(sseUsage+sseDone), false)); got != sseDone {
		t.Fatalf("passed %q, want %q", got, sseDone)
	}
	if f.pending != nil {
		t.Fatalf("pending %q after complete events", f.pending)
	}
}

func TestUsageFilterBoundsPending(t *testing.T) {
	var f usageFilter
	long := "data: {\"choices\":[{\"text\":\"" + strings.Repeat("x", maxSSELine) + "\"}]}\n\n"
	var out bytes.Buffer
	for i := 0; i < len(long); i += 64 << 10 {
		out.Write(f.filter([]byte(long[i:min(i+64<<10, len(long))]), false))
		if len(f.pending) > maxSSELine+64<<10 {
			t.Fatalf("pending grew to %d bytes", len(f.pending))
		}
	}
	out.Write(f.filter([]byte(sseUsage+sseDone), true))
	if out.String() != long+sseDone {
		t.Fatalf("a long event did not pass intact, or the usage after it was kept (%d bytes out)", out.Len())
	}
}

func TestUsageFilterPassesChunksWithoutCopying(t *testing.T) {
	var f usageFilter
	in := []byte(sseContent1 + `data: {"choices":[{"delta":{"content":" the"}}]}` + "\n\n")
	if got := f.filter(in, false); &got[0] != &in[0] || len(got) != len(in) {
		t.Fatal("a chunk of complete events must pass as it is")
	}
	allocs := testing.AllocsPerRun(100, func() { f.filter(in, false) })
	if allocs != 0 {
		t.Fatalf("%v allocations per chunk, want 0", allocs)
	}
}

func FuzzUsageFilter(f *testing.F) {
	f.Add([]byte(sseContent1+sseContent2+sseUsage+sseDone), uint16(7), uint16(90))
	f.Add([]byte(strings.ReplaceAll(sseContent1+sseUsage, "\n", "\r")), uint16(0), uint16(3))
	f.Fuzz(func(t *testing.T, data []byte, a, b uint16) {
		// Any split gives the output of the whole stream, and what passes is the stream
		// without some of its events: with no usage events it passes unchanged.
		i := int(a) % (len(data) + 1)
		j := i + int(b)%(len(data)-i+1)
		whole := filterAll(string(data))
		split := filterAll(string(data[:i]), string(data[i:j]), string(data[j:]))
		if whole != split {
			t.Fatalf("whole %q != split at %d,%d %q", whole, i, j, split)
		}
		if !bytes.Contains(data, usageKey) && whole != string(data) {
			t.Fatalf("a stream without usage changed: %q -> %q", data, whole)
		}
		if len(whole) > len(data) {
			t.Fatalf("output %d bytes longer than input %d", len(whole), len(data))
		}
	})
}
