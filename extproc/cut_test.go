package extproc

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/augur-llm/augur/pool"
	"github.com/augur-llm/augur/requestcontrol"
	"github.com/augur-llm/augur/scheduler"
)

// TestCutStreamOutcome: a stream reset in the middle of a response is an upstream error when
// the replica that served fails its probe (it died), and a cancel when it passes (the client
// left); the replica probed is the one serving, and the measured tokens are kept either way.
func TestCutStreamOutcome(t *testing.T) {
	for _, tc := range []struct {
		name     string
		probeErr error
		want     requestcontrol.Outcome
	}{
		{"replica died", errors.New("connection refused"), requestcontrol.OutcomeUpstreamError},
		{"client left", nil, requestcontrol.OutcomeCancelled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			probed := make(chan string, 10)
			h := newHarnessWith(t, 2, scheduler.DefaultProfileConfig(), func(c *requestcontrol.Config) {
				c.Probe = func(_ context.Context, r *pool.Replica) error {
					probed <- r.Address()
					return tc.probeErr
				}
			})
			s, cancel := h.stream()
			hdrs, _, _ := decision(t, s, reqHeaders(false), reqBody(chatBody, true))
			send(t, s, respHeaders(200, "text/event-stream", ""))
			recv(t, s)
			send(t, s, respBody(`data: {"choices":[{"delta":{"content":"abcd"}}]}`+"\n\n"+
				`data: {"choices":[{"delta":{"content":"efgh"}}]}`+"\n\n", false))
			recv(t, s)
			cancel()
			c := h.completion()
			if c.Outcome != tc.want || c.OutputTokens != 2 {
				t.Errorf("outcome %q with %d tokens, want %q with 2", c.Outcome, c.OutputTokens, tc.want)
			}
			select {
			case addr := <-probed:
				if primary, _, _ := strings.Cut(hdrs[HeaderDestination], ","); addr != primary {
					t.Errorf("probed %s, want the serving replica %s", addr, primary)
				}
			default:
				t.Error("the serving replica was not probed")
			}
			for _, r := range h.pool.Replicas() {
				if l := r.Load(); !l.Idle() {
					t.Errorf("%s in flight after the cut: %+v", r.Name, l)
				}
			}
		})
	}
}

// TestCompletedStreamIsNotProbed: a response that reached its end is not probed when the
// stream closes afterwards.
func TestCompletedStreamIsNotProbed(t *testing.T) {
	probed := make(chan string, 10)
	h := newHarnessWith(t, 1, scheduler.DefaultProfileConfig(), func(c *requestcontrol.Config) {
		c.Probe = func(_ context.Context, r *pool.Replica) error { probed <- r.Name; return nil }
	})
	s, cancel := h.stream()
	decision(t, s, reqHeaders(false), reqBody(chatBody, true))
	send(t, s, respHeaders(200, "text/event-stream", ""))
	recv(t, s)
	send(t, s, respBody(`data: {"choices":[{"delta":{"content":"abcd"}}]}`+"\n\ndata: [DONE]\n\n", true))
	recv(t, s)
	if c := h.completion(); c.Outcome != requestcontrol.OutcomeOK {
		t.Errorf("outcome %q, want ok", c.Outcome)
	}
	cancel()
	select {
	case name := <-probed:
		t.Errorf("%s probed after a complete response", name)
	default:
	}
}
