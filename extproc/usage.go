package extproc

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
)

// Streaming usage the client did not ask for.
//
// A streaming OpenAI response reports its token counts only when the request set
// stream_options.include_usage. Without them the picker would have to guess the output tokens
// of every streaming request whose client did not ask, and TPOT with them. So the picker asks
// on the client's behalf (requestUsage), reads the usage chunk the server then sends, and
// removes that chunk from the stream (usageFilter), so the client receives exactly the stream
// it asked for.

// usagePaths are the APIs whose streams the picker asks usage for.
var usagePaths = []string{"/v1/chat/completions", "/v1/completions"}

// wantsUsage reports whether the picker should add include_usage to a request: a streaming
// chat or completions request whose client did not ask for usage itself.
func wantsUsage(path string, b Body) bool {
	if !b.Stream || b.IncludeUsage {
		return false
	}
	p := trimQuery(path)
	for _, s := range usagePaths {
		if strings.HasSuffix(p, s) {
			return true
		}
	}
	return false
}

var (
	jsonTrue            = []byte("true")
	insertStreamOptions = []byte(`"stream_options":{"include_usage":true}`)
	streamOptionsValue  = []byte(`{"include_usage":true}`)
	insertIncludeUsage  = []byte(`"include_usage":true`)
)

// requestUsage rewrites a valid JSON request body so that stream_options.include_usage is
// true, changing as few bytes as it can: it inserts the missing member or replaces the one
// value, and leaves every other byte as the client sent it. It reports whether it changed the
// body, which it does only when the top-level "stream" is exactly true (the picker's parser
// matches names case-insensitively, the servers do not). The result may share body's memory.
func requestUsage(body []byte) ([]byte, bool) {
	obj := skipSpace(body, 0)
	if obj >= len(body) || body[obj] != '{' {
		return body, false
	}
	if st, ok := member(body, obj, "stream"); !ok || !bytes.Equal(body[st.val:st.end], jsonTrue) {
		return body, false
	}
	so, ok := member(body, obj, "stream_options")
	if !ok {
		return insertMember(body, obj, insertStreamOptions), true
	}
	switch body[so.val] {
	case 'n': // null
		return slices.Replace(body, so.val, so.end, streamOptionsValue...), true
	case '{':
		iu, ok := member(body, so.val, "include_usage")
		if !ok {
			return insertMember(body, so.val, insertIncludeUsage), true
		}
		if bytes.Equal(body[iu.val:iu.end], jsonTrue) {
			return body, false
		}
		return slices.Replace(body, iu.val, iu.end, jsonTrue...), true
	default:
		return body, false // not an object: the server rejects it as the client sent it
	}
}

// insertMember inserts m as the first member of the object starting at obj.
func insertMember(body []byte, obj int, m []byte) []byte {
	at := obj + 1
	if body[skipSpace(body, at)] == '}' {
		return slices.Insert(body, at, m...)
	}
	body = slices.Insert(body, at, m...)
	return slices.Insert(body, at+len(m), ',')
}

// span is where a member's value lies in a body: [val, end).
type span struct{ val, end int }

// member finds the member name of the valid JSON object starting at obj. As encoding/json and
// Python's json do, the last of repeated names counts.
func member(b []byte, obj int, name string) (span, bool) {
	var found span
	ok := false
	i := skipSpace(b, obj+1)
	for i < len(b) && b[i] == '"' {
		kEnd := skipString(b, i)
		key := b[i+1 : kEnd-1]
		i = skipSpace(b, kEnd)
		i = skipSpace(b, i+1) // the colon
		end := skipValue(b, i)
		if keyIs(key, name) {
			found, ok = span{i, end}, true
		}
		i = skipSpace(b, end)
		if i < len(b) && b[i] == ',' {
			i = skipSpace(b, i+1)
		}
	}
	return found, ok
}

// keyIs reports whether the raw (still escaped) member name key is name.
func keyIs(key []byte, name string) bool {
	if bytes.IndexByte(key, '\\') < 0 {
		return string(key) == name
	}
	var s string
	q := make([]byte, 0, len(key)+2)
	q = append(append(append(q, '"'), key...), '"')
	return json.Unmarshal(q, &s) == nil && s == name
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string starting at i.
func skipString(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return len(b)
}

// skipValue returns the index after the valid JSON value starting at i.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				j = skipString(b, j) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return len(b)
	default: // number, true, false, null
		j := i
		for j < len(b) && !strings.ContainsRune(",}] \t\r\n", rune(b[j])) {
			j++
		}
		return j
	}
}

// usageFilter removes from a streamed response the usage-only events (no choices, a usage)
// that the picker asked for on the client's behalf. Everything else passes on byte for byte
// and at once; only the unfinished last event of a chunk waits for the next chunk, which costs
// the client nothing, as an event is used only once its blank line has arrived.
type usageFilter struct {
	pending []byte // the start of an event whose end has not arrived
	// passing is set while an event too long to hold (over maxSSELine) passes through
	// unexamined until its end.
	passing bool
}

// filter returns what of the next chunk b to pass on; eos marks the stream's last chunk. The
// result may share b's memory.
func (f *usageFilter) filter(b []byte, eos bool) []byte {
	data := b
	if len(f.pending) > 0 {
		data = append(f.pending, b...)
		f.pending = nil
	}
	var out outRuns
	pos, keep := 0, 0 // pos: the next event's start; keep: the start of the bytes kept so far
	if f.passing {
		e := eventEnd(data, 0, eos)
		if e < 0 {
			return data
		}
		pos, f.passing = e, false
	}
	for {
		e := eventEnd(data, pos, eos)
		if e < 0 {
			break
		}
		if usageOnly(data[pos:e]) {
			out.add(data, data[keep:pos])
			keep = e
		}
		pos = e
	}
	switch tail := data[pos:]; {
	case len(tail) == 0:
	case eos:
		// An event the stream ended in before its blank line: clients drop it, so dropping a
		// usage one changes nothing they see.
		if usageOnly(tail) {
			out.add(data, data[keep:pos])
			keep = len(data)
		}
		pos = len(data)
	case len(tail) > maxSSELine:
		f.passing, pos = true, len(data)
	default:
		f.pending = append([]byte(nil), tail...)
	}
	out.add(data, data[keep:pos])
	return out.bytes()
}

// outRuns collects the kept pieces of a chunk, copying only when there are several.
type outRuns struct {
	first []byte
	more  []byte
	n     int
}

func (o *outRuns) add(data, r []byte) {
	if len(r) == 0 {
		return
	}
	switch o.n {
	case 0:
		o.first = r
	case 1:
		o.more = append(append(make([]byte, 0, len(data)), o.first...), r...)
	default:
		o.more = append(o.more, r...)
	}
	o.n++
}

func (o *outRuns) bytes() []byte {
	if o.n > 1 {
		return o.more
	}
	return o.first
}

// eventEnd returns the index after the blank line that ends the event starting at pos, or -1
// when it has not arrived. A CR at the end of an unfinished stream might be the first half of
// a CRLF, so it does not end a line yet.
func eventEnd(b []byte, pos int, eos bool) int {
	line := pos
	for line < len(b) {
		j := bytes.IndexAny(b[line:], "\r\n")
		if j < 0 {
			return -1
		}
		j += line
		next := j + 1
		if b[j] == '\r' {
			if next == len(b) && !eos {
				return -1
			}
			if next < len(b) && b[next] == '\n' {
				next++
			}
		}
		if j == line {
			return next
		}
		line = next
	}
	return -1
}

var usageKey = []byte(`"usage"`)

// usageOnly reports whether the SSE event ev is a usage-only chunk: JSON data with an empty
// "choices" and a "usage" object. Events without the text "usage" are not parsed.
func usageOnly(ev []byte) bool {
	if !bytes.Contains(ev, usageKey) {
		return false
	}
	var data []byte
	lines := 0
	for len(ev) > 0 {
		i := bytes.IndexAny(ev, "\r\n")
		line := ev
		if i >= 0 {
			line, ev = ev[:i], ev[i+1:]
		} else {
			ev = nil
		}
		d, ok := bytes.CutPrefix(line, []byte("data:"))
		if !ok {
			continue
		}
		d = bytes.TrimPrefix(d, []byte(" "))
		if lines > 0 {
			data = append(append(slices.Clip(data), '\n'), d...)
		} else {
			data = d
		}
		lines++
	}
	var c struct {
		Choices *[]json.RawMessage `json:"choices"`
		Usage   json.RawMessage    `json:"usage"`
	}
	if json.Unmarshal(data, &c) != nil || c.Choices == nil || len(*c.Choices) != 0 {
		return false
	}
	u := bytes.TrimSpace(c.Usage)
	return len(u) > 0 && u[0] == '{'
}
