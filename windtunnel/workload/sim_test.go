package workload_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/augur-llm/augur/windtunnel/sim"
	"github.com/augur-llm/augur/windtunnel/workload"
)

// The history a session resends is what a replica generated: the session workloads' requests
// are served, turn after turn, by a real simulator (engine and OpenAI server, in virtual
// time), and the text it returns for each turn must be, byte for byte, the assistant message
// the workload put into the session's next request. Half the requests are sent without
// streaming, so both of the simulator's output paths are checked.
func TestHistoryIsWhatTheSimulatorGenerates(t *testing.T) {
	srv := newSimServer(t)
	ladder := workload.ConstantLadder(4, 60*time.Second)
	for _, tc := range []struct {
		name string
		gen  func() (workload.Generator, error)
	}{
		{"multi-turn", func() (workload.Generator, error) {
			// Answers both shorter and longer than the user turn they echo.
			return workload.NewMultiTurn(7, ladder, workload.MultiTurnOptions{MinTurns: 3, MaxTurns: 5,
				MinUser: 2, MaxUser: 40, MinAnswer: 1, MaxAnswer: 90, SystemPrompts: 2, SystemTokens: 20})
		}},
		{"agentic", func() (workload.Generator, error) {
			return workload.NewAgentic(7, ladder, workload.AgenticOptions{ToolBlocks: 2, MinToolBlock: 20, MaxToolBlock: 60,
				MinTask: 2, MaxTask: 30, MinIterations: 3, MaxIterations: 5, MinOutput: 1, MaxOutput: 70, MinResult: 5, MaxResult: 30})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := tc.gen()
			if err != nil {
				t.Fatal(err)
			}
			// The first requests of the stream, by session, in turn order.
			sessions := map[string][]workload.Request{}
			var order []string
			for range 80 {
				r, ok := g.Next()
				if !ok {
					break
				}
				if _, seen := sessions[r.SessionID]; !seen {
					order = append(order, r.SessionID)
				}
				sessions[r.SessionID] = append(sessions[r.SessionID], r)
			}
			checked, streamed := 0, 0
			for _, id := range order {
				turns := sessions[id]
				for k, r := range turns {
					r.Stream = (checked+k)%2 == 0
					got, usage := complete(t, srv, r)
					if usage.PromptTokens != r.PromptTokens() || usage.CompletionTokens != r.MaxTokens {
						t.Fatalf("%s turn %d: usage %+v, want %d prompt and %d completion tokens",
							id, k, usage, r.PromptTokens(), r.MaxTokens)
					}
					if k+1 == len(turns) {
						continue // the next turn is beyond the sample (or the session's end)
					}
					next := turns[k+1]
					answer := next.Messages[len(r.Messages)]
					if answer.Role != "assistant" || answer.Text != got {
						t.Fatalf("%s turn %d: the simulator generated %q (streamed %v), but the next turn resends %s %q",
							id, k, got, r.Stream, answer.Role, answer.Text)
					}
					checked++
					if r.Stream {
						streamed++
					}
				}
			}
			if checked < 20 || streamed == 0 || streamed == checked {
				t.Fatalf("checked %d turns (%d streamed); the sample is too small", checked, streamed)
			}
			t.Logf("%d turns' answers checked against the next turn's history (%d streamed)", checked, streamed)
		})
	}
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
}

// complete sends r as a client would and returns the generated text and the usage.
func complete(t *testing.T, srv http.Handler, r workload.Request) (string, usage) {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, r.Path(), bytes.NewReader(r.Body(testModel)))
	req.Header.Set("content-type", "application/json")
	for k, v := range r.Headers() {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("%s: status %d: %s", r.ID, rec.Code, rec.Body)
	}
	type choice struct {
		Message struct {
			Content string `json:"content"`
		} `json:"message"`
		Delta struct {
			Content string `json:"content"`
		} `json:"delta"`
	}
	type response struct {
		Choices []choice `json:"choices"`
		Usage   *usage   `json:"usage"`
	}
	if !r.Stream {
		var out response
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || len(out.Choices) != 1 || out.Usage == nil {
			t.Fatalf("%s: response %s (%v)", r.ID, rec.Body, err)
		}
		return out.Choices[0].Message.Content, *out.Usage
	}
	var text strings.Builder
	var u *usage
	sc := bufio.NewScanner(rec.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok || data == "[DONE]" {
			continue
		}
		var chunk response
		if err := json.Unmarshal([]byte(data), &chunk); err != nil {
			t.Fatalf("%s: chunk %s: %v", r.ID, data, err)
		}
		for _, c := range chunk.Choices {
			text.WriteString(c.Delta.Content)
		}
		if chunk.Usage != nil {
			u = chunk.Usage
		}
	}
	if u == nil {
		t.Fatalf("%s: stream without usage: %s", r.ID, rec.Body)
	}
	return text.String(), *u
}

const testModel = "m"

// newSimServer runs one simulated replica on a virtual clock.
func newSimServer(t *testing.T) *sim.Server {
	t.Helper()
	prof, err := sim.LookupProfile("8b-h100")
	if err != nil {
		t.Fatal(err)
	}
	e, err := sim.New(sim.Config{Model: testModel, Profile: prof, Seed: 1}, sim.NewAutoClock(time.Unix(0, 0)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := e.Run(ctx); err != nil {
			t.Errorf("engine: %v", err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	s, err := sim.NewServer(e, sim.ServerOptions{Name: "sim-0"})
	if err != nil {
		t.Fatal(err)
	}
	return s
}
