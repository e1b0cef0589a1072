package stack

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/augur-llm/augur/picker"
	"github.com/augur-llm/augur/requestcontrol"
	"github.com/augur-llm/augur/tokens"
)

type observed struct {
	mu sync.Mutex
	m  map[string]requestcontrol.Completion
}

func (o *observed) add(c requestcontrol.Completion) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.m[c.ID] = c
}

// wait returns the picker's completion for a request id; the picker records it when the
// response's end passes through, which can be just after the client has read it.
func (o *observed) wait(t *testing.T, id string) requestcontrol.Completion {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		o.mu.Lock()
		c, ok := o.m[id]
		o.mu.Unlock()
		if ok {
			return c
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("the picker never completed request %s", id)
	return requestcontrol.Completion{}
}

func startStack(t *testing.T, cfg Config) (*Stack, *observed) {
	t.Helper()
	obs := &observed{m: map[string]requestcontrol.Completion{}}
	cfg.Observe = obs.add
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("stack stopped with: %v", err)
		}
	})
	return s, obs
}

// prompt returns a user message of about n tokens that differs per i, so requests do not share
// a cache prefix beyond the system message.
func prompt(i, n int) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "question %d:", i)
	for sb.Len() < 4*n {
		fmt.Fprintf(&sb, " w%d", (sb.Len()*7+i)%997)
	}
	return sb.String()
}

func within(a, b time.Duration) bool {
	d := a - b
	if d < 0 {
		d = -d
	}
	return d <= 10*time.Millisecond || float64(d) <= 0.1*float64(max(a, b))
}

func TestEndToEnd(t *testing.T) {
	s, obs := startStack(t, Config{Replicas: 4, Profile: "32b-tp2-h100"})
	client := s.NewClient()
	ctx := context.Background()
	served := map[string]int{}

	// Warm up every hop (client, gateway and upstream connections, the picker's stream) so the
	// measured requests compare latency, not connection set-up.
	for i := range len(s.Replicas) {
		if r := Chat(ctx, client, openai.ChatCompletionNewParams{Model: "sim-llama-8b",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt(1000+i, 10))}, MaxTokens: openai.Int(1)}); r.Err != nil {
			t.Fatalf("warm-up: %v", r.Err)
		}
	}

	t.Run("streaming chat", func(t *testing.T) {
		// The picker's TTFT runs from dispatch to the first token reaching it; the client's
		// from its send to the first token reaching it. The difference is the request's way in
		// (the body through gateway and picker, the decision), which on a CPU-starved machine
		// grows to tens of milliseconds while the measurement is right. So the first-token
		// instant is what is compared: the client's, taken from the picker's dispatch (one
		// process, one clock), against the picker's TTFT, as medians over the run, beside
		// per-request orderings no load can break.
		var pickerTTFT, clientTTFT, pickerTPOT, clientTPOT []time.Duration
		for i := range 8 {
			id := fmt.Sprintf("e2e-stream-%d", i)
			user := prompt(i, 6000) // a long prefill makes TTFT large against scheduling noise
			r := StreamChat(ctx, client, openai.ChatCompletionNewParams{
				Model:     "sim-llama-8b",
				Messages:  []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("You are terse."), openai.UserMessage(user)},
				MaxTokens: openai.Int(24),
			}, option.WithHeader("x-request-id", id), option.WithHeader("x-slo-ttft-ms", "800"), option.WithHeader("x-slo-tpot-ms", "60"))
			if r.Err != nil {
				t.Fatalf("request %d: %v", i, r.Err)
			}
			if want := tokens.EchoText(user, 24); r.Content != want {
				t.Fatalf("request %d: content %q, want %q", i, r.Content, want)
			}
			if r.CompletionTokens != 24 || r.PromptTokens < 6000 {
				t.Errorf("request %d: usage %d prompt / %d completion", i, r.PromptTokens, r.CompletionTokens)
			}
			c := obs.wait(t, id)
			t.Logf("request %d: TTFT picker %v client %v; TPOT picker %v client %v; decision %v", i, c.TTFT, r.TTFT, c.TPOT, r.TPOT, c.DecisionLatency())
			if c.Target.Name != r.Replica || r.Replica == "" {
				t.Errorf("request %d: picker routed to %q, replica %q answered", i, c.Target.Name, r.Replica)
			}
			if c.TTFT <= 0 || c.FirstToken.After(r.FirstToken) || c.Dispatched.Before(r.Sent) {
				t.Errorf("request %d: client sent at %v, picker dispatched at +%v and saw the first token at +%v, client at +%v: out of order",
					i, r.Sent.Format(time.StampMicro), c.Dispatched.Sub(r.Sent), c.FirstToken.Sub(r.Sent), r.FirstToken.Sub(r.Sent))
			}
			if c.TPOT <= 0 {
				t.Errorf("request %d: picker TPOT %v", i, c.TPOT)
			}
			pickerTTFT, clientTTFT = append(pickerTTFT, c.TTFT), append(clientTTFT, r.FirstToken.Sub(c.Dispatched))
			pickerTPOT, clientTPOT = append(pickerTPOT, c.TPOT), append(clientTPOT, r.TPOT)
			if c.SLO.TTFT != 800*time.Millisecond || c.SLO.TPOT != 60*time.Millisecond || c.Outcome != requestcontrol.OutcomeOK || c.OutputTokens != 24 {
				t.Errorf("request %d: completion %+v", i, c)
			}
			served[r.Replica]++
		}
		if p, c := median(pickerTTFT), median(clientTTFT); !within(p, c) {
			t.Errorf("TTFT median: picker %v, client (from the picker's dispatch) %v: more than 10 ms and 10%% apart", p, c)
		}
		if p, c := median(pickerTPOT), median(clientTPOT); !within(p, c) {
			t.Errorf("TPOT median: picker %v, client %v: more than 10 ms and 10%% apart", p, c)
		}
	})

	t.Run("non-streaming chat and completions", func(t *testing.T) {
		for i := range 4 {
			id := fmt.Sprintf("e2e-chat-%d", i)
			user := prompt(100+i, 200)
			r := Chat(ctx, client, openai.ChatCompletionNewParams{
				Model: "sim-llama-8b", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(user)},
				MaxCompletionTokens: openai.Int(10),
			}, option.WithHeader("x-request-id", id), option.WithHeader("x-llm-d-slo-ttft-ms", "2000"))
			if r.Err != nil || r.Content != tokens.EchoText(user, 10) || r.CompletionTokens != 10 {
				t.Fatalf("chat %d: %+v", i, r)
			}
			c := obs.wait(t, id)
			if c.Target.Name != r.Replica || c.Stream || c.OutputTokens != 10 || c.SLO.TTFT != 2*time.Second {
				t.Errorf("chat %d: completion %+v, replica %q", i, c, r.Replica)
			}
			served[r.Replica]++

			id = fmt.Sprintf("e2e-completion-%d", i)
			text := prompt(200+i, 100)
			r = Complete(ctx, client, openai.CompletionNewParams{
				Model: "sim-llama-8b", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(text)}, MaxTokens: openai.Int(5),
			}, option.WithHeader("x-request-id", id))
			if r.Err != nil || r.Content != tokens.EchoText(text, 5) {
				t.Fatalf("completion %d: %+v", i, r)
			}
			if c := obs.wait(t, id); c.Target.Name != r.Replica {
				t.Errorf("completion %d routed to %q, served by %q", i, c.Target.Name, r.Replica)
			}
			served[r.Replica]++
		}
	})
	if len(served) < 2 {
		t.Errorf("every request went to one replica: %v", served)
	}
	for _, r := range s.Picker.Pool.Replicas() {
		if l := r.Load(); l.Requests != 0 || l.PrefillTokens != 0 {
			t.Errorf("%s: in-flight %+v after every request finished", r.Name, l)
		}
	}
}

func TestEndToEndErrors(t *testing.T) {
	s, _ := startStack(t, Config{Replicas: 2, Picker: picker.Config{MaxBodyBytes: 64 << 10}})
	client := s.NewClient()
	ctx := context.Background()
	params := openai.ChatCompletionNewParams{Model: "sim-llama-8b", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}}
	for _, tc := range []struct {
		name   string
		params openai.ChatCompletionNewParams
		opts   []option.RequestOption
		status int
		msg    string
	}{
		{"bad SLO header", params, []option.RequestOption{option.WithHeader("x-slo-ttft-ms", "soon")}, 400, "x-slo-ttft-ms"},
		{"negative SLO header", params, []option.RequestOption{option.WithHeader("x-slo-tpot-ms", "-1")}, 400, "out of range"},
		{"missing model", openai.ChatCompletionNewParams{Messages: params.Messages}, nil, 400, "model"},
		{"body too large", openai.ChatCompletionNewParams{Model: "sim-llama-8b",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(strings.Repeat("x", 70<<10))}}, nil, 413, "limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Chat(ctx, client, tc.params, tc.opts...)
			if r.Status != tc.status || r.Err == nil || !strings.Contains(r.ErrMessage, tc.msg) {
				t.Errorf("status %d message %q; want %d mentioning %q", r.Status, r.ErrMessage, tc.status, tc.msg)
			}
		})
	}
}

func TestClientDisconnectReleasesInFlight(t *testing.T) {
	s, obs := startStack(t, Config{Replicas: 1})
	client := s.NewClient()
	ctx, cancel := context.WithCancel(context.Background())
	stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model: "sim-llama-8b", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("tell me a long story")},
		MaxTokens: openai.Int(5000),
	}, option.WithHeader("x-request-id", "e2e-cancel"))
	got := 0
	for got < 3 && stream.Next() {
		if len(stream.Current().Choices) > 0 && stream.Current().Choices[0].Delta.Content != "" {
			got++
		}
	}
	if got < 3 {
		t.Fatalf("stream ended early: %v", stream.Err())
	}
	replica := s.Picker.Pool.Replicas()[0]
	waitUntil(t, "one decoding request in flight", func() bool { l := replica.Load(); return l.Requests == 1 && l.DecodeRequests == 1 && l.Tokens > 5000 })
	cancel()
	stream.Close()
	c := obs.wait(t, "e2e-cancel")
	if c.Outcome != requestcontrol.OutcomeCancelled || c.OutputTokens < 3 {
		t.Errorf("completion %+v, want cancelled after >= 3 tokens", c)
	}
	if l := replica.Load(); l.Requests != 0 || l.DecodeRequests != 0 || l.PrefillTokens != 0 {
		t.Errorf("in-flight after the client left: %+v", l)
	}
	waitUntil(t, "the replica stops generating for a client that left", func() bool { return s.Replicas[0].Engine.Snapshot().Running == 0 })
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not reached in 10 s: %s", what)
		}
	}
}

// TestConnectionReuseAfterRejection alternates requests the picker rejects at the headers
// phase (before the body is read) with good ones on one client: every answer must be the
// right one, whatever the connection went through before.
func TestConnectionReuseAfterRejection(t *testing.T) {
	s, _ := startStack(t, Config{Replicas: 1})
	client := s.NewClient()
	params := openai.ChatCompletionNewParams{Model: "sim-llama-8b", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}, MaxTokens: openai.Int(2)}
	for i := range 150 {
		var r Result
		switch i % 3 {
		case 0:
			r = Chat(context.Background(), client, params, option.WithHeader("x-slo-ttft-ms", "soon"))
			if r.Status != 400 || !strings.Contains(r.ErrMessage, "x-slo-ttft-ms") {
				t.Fatalf("request %d: status %d message %q, want 400 about the header", i, r.Status, r.ErrMessage)
			}
		case 1:
			r = Chat(context.Background(), client, openai.ChatCompletionNewParams{Messages: params.Messages})
			if r.Status != 400 || !strings.Contains(r.ErrMessage, "model") {
				t.Fatalf("request %d: status %d message %q, want 400 about the model", i, r.Status, r.ErrMessage)
			}
		default:
			r = Chat(context.Background(), client, params)
			if r.Err != nil || r.Content != tokens.EchoText("hi", 2) {
				t.Fatalf("request %d: %+v", i, r)
			}
		}
	}
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(ds))
	return (s[(len(s)-1)/2] + s[len(s)/2]) / 2
}
