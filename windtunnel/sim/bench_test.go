package sim

import (
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// discardWriter is a flushable ResponseWriter that keeps nothing, so the benchmark measures
// the simulator and not a recorder's buffer.
type discardWriter struct {
	h http.Header
	n int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(b []byte) (int, error) { d.n += len(b); return len(b), nil }
func (d *discardWriter) WriteHeader(int)             {}
func (d *discardWriter) Flush()                      {}

const benchTokens = 256

func reportPerToken(b *testing.B, before runtime.MemStats) {
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	tokens := float64(b.N * benchTokens)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/tokens, "ns/token")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/tokens, "allocs/token")
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/tokens, "B/token")
}

func benchBody(stream bool) string {
	return `{"model":"sim-test","prompt":"` + strings.Repeat("lorem ipsum ", 40) +
		`","max_tokens":` + strconv.Itoa(benchTokens) + `,"stream":` + strconv.FormatBool(stream) + `}`
}

// BenchmarkStreamHandler is the CPU cost of one streamed token through the whole replica
// (engine step, progress hand-off, chunk assembly, write and flush), without a network.
// The engine runs on a virtual clock, so no time is spent waiting for simulated steps.
func BenchmarkStreamHandler(b *testing.B) {
	e := startEngine(b, Config{Model: testModel, Profile: profile(b, "8b-h100")}, newAutoClock())
	s, err := NewServer(e, ServerOptions{Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	body := benchBody(true)
	w := &discardWriter{h: http.Header{}}
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for range b.N {
		r := httptest.NewRequest(http.MethodPost, "/v1/completions", strings.NewReader(body))
		s.ServeHTTP(w, r)
	}
	b.StopTimer()
	reportPerToken(b, before)
}

// BenchmarkStreamLoopback adds a real HTTP/1.1 connection over loopback and a client reading
// the stream.
func BenchmarkStreamLoopback(b *testing.B) {
	ts, _ := startServer(b, 1, profile(b, "8b-h100"))
	body := benchBody(true)
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for range b.N {
		resp, err := http.Post(ts.URL+"/v1/completions", "application/json", strings.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	b.StopTimer()
	reportPerToken(b, before)
}
