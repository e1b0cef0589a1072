package extproc

import (
	"strings"
	"testing"

	"github.com/augur-llm/augur/pool"
)

// TestModelNoReplicaServes: a request for a model that every replica's list leaves out is
// answered 404 by the picker with the served models named; a served model goes only to the
// replicas serving it, and a replica whose models are not known yet stays eligible.
func TestModelNoReplicaServes(t *testing.T) {
	h := newHarness(t, 3)
	eps := []pool.Endpoint{
		{Name: "r0", Address: "10.0.0.1:8000", Models: []string{"m", "m-lora"}},
		{Name: "r1", Address: "10.0.0.1:8001", Models: []string{"other"}},
		{Name: "r2", Address: "10.0.0.1:8002", Models: []string{"m"}},
	}
	if err := h.pool.Set(eps); err != nil {
		t.Fatal(err)
	}
	h.freshen()

	s, _ := h.stream()
	body := strings.Replace(chatBody, `"model":"m"`, `"model":"gpt-4o"`, 1)
	code, hdrs, msg := immediate(t, s, reqHeaders(false), reqBody(body, true))
	if code != 404 || hdrs[HeaderDroppedReason] != "model-not-found" {
		t.Fatalf("unserved model: got %d %v %q, want 404 model-not-found", code, hdrs, msg)
	}
	if !strings.Contains(msg, `"gpt-4o"`) || !strings.Contains(msg, "m, m-lora, other") {
		t.Errorf("message %q should name the model asked for and those served", msg)
	}

	for range 20 {
		s, _ := h.stream()
		hdrs, _, _ := decision(t, s, reqHeaders(false), reqBody(chatBody, true))
		if d := hdrs[HeaderDestination]; d == "10.0.0.1:8001" {
			t.Fatalf("model m routed to %s, which serves only %q", d, "other")
		}
	}

	// r1's models become unknown: it may serve gpt-4o, so the request is routed to it.
	eps[1].Models = nil
	if err := h.pool.Set(eps); err != nil {
		t.Fatal(err)
	}
	h.freshen()
	s, _ = h.stream()
	hdrs, _, _ = decision(t, s, reqHeaders(false), reqBody(body, true))
	if d := hdrs[HeaderDestination]; d != "10.0.0.1:8001" {
		t.Fatalf("gpt-4o routed to %q, want the replica whose models are unknown", d)
	}
}
