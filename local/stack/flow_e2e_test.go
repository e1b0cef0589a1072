package stack

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/augur-llm/augur/flowcontrol"
	"github.com/augur-llm/augur/local/pgserver"
	"github.com/augur-llm/augur/picker"
	"github.com/augur-llm/augur/store"
	"github.com/augur-llm/augur/tokens"
)

const (
	headerObjective = "x-gateway-inference-objective"
	headerFairness  = "x-gateway-inference-fairness-id"
	// resultTimeout bounds every wait for a request's outcome: far beyond what any step takes
	// on a loaded machine, short of the gateway's message timeout and flow control's TTL.
	resultTimeout = 60 * time.Second
)

// startFlowStack starts one replica behind a picker with flow control: interactive requests
// (the default) wait while the pool is saturated, batch ones are shed. Stale metrics count as
// saturated, so that a scrape delayed on a busy machine can only make a test wait longer, never
// dispatch what it expects to be held. The pool's own staleness is generous for the same
// reason: a request the test expects served must not find the only replica out of rotation.
func startFlowStack(t *testing.T) (*Stack, *flowcontrol.Controller, *pgserver.Server) {
	t.Helper()
	pg := pgserver.StartForTest(t)
	s, _ := startStack(t, Config{Replicas: 1, Picker: picker.Config{
		DatabaseURL: pg.URL(),
		StaleAfter:  metav1.Duration{Duration: time.Minute},
		FlowControl: &flowcontrol.Config{
			Objectives: map[string]flowcontrol.Objective{
				"interactive": {Priority: 10},
				"batch":       {Priority: -1},
			},
			DefaultObjective: "interactive",
			TTL:              metav1.Duration{Duration: 2 * resultTimeout},
			Saturation:       flowcontrol.Saturation{Stale: flowcontrol.StaleSaturated},
		},
	}})
	fc := s.Picker.FlowControl()
	if fc == nil {
		t.Fatal("the picker runs without flow control")
	}
	return s, fc, pg
}

// recorded waits until every buffered sample is written and returns the samples of ids, by
// id, as Postgres holds them.
func recorded(t *testing.T, s *Stack, pg *pgserver.Server, ids ...string) map[string]store.Sample {
	t.Helper()
	waitUntil(t, "every buffered sample written", func() bool { return s.Picker.Recorder.Stats().Buffered == 0 })
	ctx := context.Background()
	db, err := pgxpool.New(ctx, pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := store.ReadSamples(ctx, db, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]store.Sample{}
	for _, r := range rows {
		out[r.RequestID] = r
	}
	for _, id := range ids {
		if _, ok := out[id]; !ok {
			t.Errorf("no sample of %s in %d rows", id, len(rows))
		}
	}
	return out
}

// saturate starts a stream that leaves the only replica no room until release is called, and
// waits until flow control sees the pool saturated. The stream's TPOT objective, 1 ms, is
// tighter than any step the picker can measure (it counts no gap under pool.MinStepGap, 1
// ms), so from its second token on the room filter's step-share rule finds the replica's
// steps too slow for a newcomer (scheduler.RoomFilter): saturation by the picker's own
// accounting, independent of timing. It runs far longer than any test (100k tokens).
func saturate(t *testing.T, s *Stack, fc *flowcontrol.Controller, client openai.Client) (release func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ended := make(chan error, 1)
	go func() {
		stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
			Model: "sim-llama-8b", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hold the replica")},
			MaxTokens: openai.Int(100_000),
		}, option.WithHeader("x-request-id", "flow-hold"), option.WithHeader("x-slo-tpot-ms", "1"))
		defer stream.Close()
		for stream.Next() {
		}
		ended <- stream.Err()
	}()
	released := false
	release = func() {
		if released {
			return
		}
		released = true
		cancel()
		select {
		case err := <-ended:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("the holding stream ended with %v", err)
			}
		case <-time.After(resultTimeout):
			t.Fatal("the holding stream did not end after its client left")
		}
		waitUntil(t, "the holding stream released", func() bool { return s.Picker.Pool.Replicas()[0].Load().Idle() })
	}
	t.Cleanup(release)
	// Saturated alone is not enough to wait for: a scrape that began before the stream's
	// dispatch and found it waiting in the replica counts it twice until the next scrape or its
	// first token, a passing saturation. The step-share rule holds from the first step the
	// picker measured for as long as the stream runs.
	replica := s.Picker.Pool.Replicas()[0]
	waitUntil(t, "the pool saturated by the holding stream", func() bool {
		select {
		case err := <-ended:
			t.Fatalf("the holding stream ended early: %v", err)
		default:
		}
		l := replica.Load()
		return l.Steps.Fast > 0 && l.TightestTPOTObjective == time.Millisecond && fc.Stats().Saturation.Saturated
	})
	if l := replica.Load(); l.Requests != 1 {
		t.Fatalf("%d requests in flight while saturating, want the holding stream alone", l.Requests)
	}
	return release
}

// send sends a short chat request on its own goroutine; the result arrives on the channel.
func send(ctx context.Context, client openai.Client, i int, opts ...option.RequestOption) (string, <-chan Result) {
	user := prompt(i, 20)
	out := make(chan Result, 1)
	go func() {
		out <- Chat(ctx, client, openai.ChatCompletionNewParams{
			Model: "sim-llama-8b", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(user)}, MaxTokens: openai.Int(4),
		}, opts...)
	}()
	return user, out
}

func result(t *testing.T, c <-chan Result, what string) Result {
	t.Helper()
	select {
	case r := <-c:
		return r
	case <-time.After(resultTimeout):
		t.Fatalf("no answer to %s in %v", what, resultTimeout)
		return Result{}
	}
}

// served checks that r is the echo of user's 4 tokens.
func served(t *testing.T, r Result, user, what string) {
	t.Helper()
	if r.Err != nil || r.Status != http.StatusOK || r.Content != tokens.EchoText(user, 4) {
		t.Fatalf("%s: status %d, content %q, err %v; want served", what, r.Status, r.Content, r.Err)
	}
}

// scrape reads the picker's /metrics: every series's value by its name and labels as
// exposed, e.g. `augur_flow_queued_requests{priority="10"}`.
func scrape(t *testing.T, s *Stack) map[string]float64 {
	t.Helper()
	resp, err := http.Get(s.MetricsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("/metrics line %q", line)
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// waitMetrics waits until the picker's /metrics shows every series of want at its value.
// Flow control counts a request's outcome just after it resumed it, so a client can hold its
// answer a moment before the counter moves.
func waitMetrics(t *testing.T, s *Stack, want map[string]float64) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(2 * time.Millisecond) {
		m := scrape(t, s)
		var off []string
		for k, v := range want {
			if m[k] != v {
				off = append(off, fmt.Sprintf("%s = %v, want %v", k, m[k], v))
			}
		}
		if len(off) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics after 10 s: %s", strings.Join(off, "; "))
		}
	}
}

// series returns the series of the metric name (any labels).
func series(m map[string]float64, name string) map[string]float64 {
	out := map[string]float64{}
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			out[k] = v
		}
	}
	return out
}

// A sheddable request is served while the pool has room, refused with 429 and the reason
// header while it is saturated, and served again once the saturation ends.
func TestFlowControlShedsUnderSaturation(t *testing.T) {
	s, fc, pg := startFlowStack(t)
	client := s.NewClient()
	batch := option.WithHeader(headerObjective, "batch")

	user, out := send(context.Background(), client, 1, batch, option.WithHeader("x-request-id", "flow-batch-room"))
	served(t, result(t, out, "a batch request with room"), user, "a batch request with room")

	release := saturate(t, s, fc, client)
	_, out = send(context.Background(), client, 2, batch, option.WithHeader("x-request-id", "flow-batch-shed"))
	r := result(t, out, "a batch request under saturation")
	var apiErr *openai.Error
	if !errors.As(r.Err, &apiErr) || apiErr.StatusCode != http.StatusTooManyRequests || r.ShedReason != flowcontrol.ReasonSaturated {
		t.Fatalf("under saturation a batch request got status %d, dropped reason %q, err %v; want 429 and %q",
			r.Status, r.ShedReason, r.Err, flowcontrol.ReasonSaturated)
	}
	if l := s.Picker.Pool.Replicas()[0].Load(); l.Requests != 1 {
		t.Errorf("%d requests in flight after the shed one, want the holding stream alone", l.Requests)
	}
	if st := fc.Stats(); st.Queued() != 0 {
		t.Errorf("a shed request was queued: %+v", st.Bands)
	}

	release()
	waitUntil(t, "the pool unsaturated", func() bool { return !fc.Stats().Saturation.Saturated })
	user, out = send(context.Background(), client, 3, batch, option.WithHeader("x-request-id", "flow-batch-again"))
	served(t, result(t, out, "a batch request after the saturation"), user, "a batch request after the saturation")

	waitMetrics(t, s, map[string]float64{
		`augur_flow_requests_total{outcome="shed",priority="-1"}`:       1,
		`augur_flow_requests_total{outcome="dispatched",priority="-1"}`: 2,
		`augur_flow_requests_total{outcome="dispatched",priority="10"}`: 1, // the holding stream
	})

	// The shed request is a sample too: refused, with no replica, its reason and status.
	rows := recorded(t, s, pg, "flow-batch-room", "flow-batch-shed", "flow-batch-again")
	if r := rows["flow-batch-shed"]; !r.Refused || r.Replica != "" || r.Reason != flowcontrol.ReasonSaturated ||
		r.Status != http.StatusTooManyRequests || r.Outcome != "rejected" || r.Objective != "batch" || r.QueuedMs == nil {
		t.Errorf("the shed request's sample %+v: want refused, no replica, %q, 429, rejected, batch, a queueing time",
			r, flowcontrol.ReasonSaturated)
	}
	for _, id := range []string{"flow-batch-room", "flow-batch-again"} {
		if r := rows[id]; r.Refused || r.Replica == "" || r.Outcome != "ok" || r.QueuedMs == nil {
			t.Errorf("served request %s's sample %+v: want dispatched, its replica, ok, a queueing time", id, r)
		}
	}
}

// A request whose client leaves while it waits in flow control leaves no trace: its flow is
// gone from the band, the queue gauges drop, it is counted as cancelled, it never reaches the
// replica, and the request queued behind it is served once the pool has room.
func TestFlowControlCancelWhileQueued(t *testing.T) {
	s, fc, pg := startFlowStack(t)
	client := s.NewClient()
	release := saturate(t, s, fc, client)
	band := func() flowcontrol.BandStats {
		for _, b := range fc.Stats().Bands {
			if b.Priority == 10 {
				return b
			}
		}
		return flowcontrol.BandStats{Priority: 10}
	}

	leaving, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, left := send(leaving, client, 1, option.WithHeader(headerFairness, "tenant-a"), option.WithHeader("x-request-id", "flow-leaves"))
	waitUntil(t, "tenant-a's request queued", func() bool { return band().Requests == 1 })
	user, stays := send(context.Background(), client, 2, option.WithHeader(headerObjective, "interactive"),
		option.WithHeader(headerFairness, "tenant-b"), option.WithHeader("x-request-id", "flow-stays"))
	waitUntil(t, "tenant-b's request queued", func() bool { b := band(); return b.Requests == 2 && b.Flows == 2 })

	cancel()
	if r := result(t, left, "the request whose client left"); !errors.Is(r.Err, context.Canceled) {
		t.Fatalf("the request whose client left ended with %+v, want context.Canceled", r)
	}
	waitUntil(t, "tenant-a's request and flow gone", func() bool { b := band(); return b.Requests == 1 && b.Flows == 1 })
	waitMetrics(t, s, map[string]float64{
		`augur_flow_requests_total{outcome="cancelled",priority="10"}`: 1,
		`augur_flow_queued_requests{priority="10"}`:                    1, // tenant-b's
	})
	if l := s.Picker.Pool.Replicas()[0].Load(); l.Requests != 1 {
		t.Errorf("%d requests in flight, want the holding stream alone", l.Requests)
	}

	release() // room: tenant-b's request goes, tenant-a's must not
	served(t, result(t, stays, "the request queued behind"), user, "the request queued behind")

	waitUntil(t, "the replica idle", func() bool {
		return s.Picker.Pool.Replicas()[0].Load().Idle() && s.Replicas[0].Engine.Snapshot().Running == 0
	})
	st := fc.Stats()
	if st.Queued() != 0 {
		t.Errorf("%d requests still queued", st.Queued())
	}
	for _, b := range st.Bands {
		if b.Requests != 0 || b.Bytes != 0 || b.Flows != 0 {
			t.Errorf("band %d holds %+v after every request left", b.Priority, b)
		}
	}
	waitMetrics(t, s, map[string]float64{
		`augur_flow_requests_total{outcome="cancelled",priority="10"}`:  1,
		`augur_flow_requests_total{outcome="dispatched",priority="10"}`: 2, // the holding stream and tenant-b's
	})
	m := scrape(t, s)
	for _, name := range []string{"augur_flow_queued_requests", "augur_flow_queued_bytes"} {
		if len(series(m, name)) == 0 {
			t.Errorf("/metrics has no %s", name)
		}
		for k, v := range series(m, name) {
			if v != 0 {
				t.Errorf("%s = %v, want 0", k, v)
			}
		}
	}
	if l := s.Picker.Pool.Replicas()[0].Load(); l.Counts.Dispatched != 2 || l.Counts.Finished != 2 {
		t.Errorf("the replica's counts %+v: want 2 dispatched and finished (the holding stream and tenant-b's)", l.Counts)
	}
	// Its sample says the client left while it waited, and how long that was.
	if r := recorded(t, s, pg, "flow-leaves", "flow-stays")["flow-leaves"]; !r.Refused || r.Replica != "" ||
		r.Outcome != "cancelled" || r.Status != 0 || r.FairnessID != "tenant-a" || r.QueuedMs == nil || *r.QueuedMs <= 0 {
		t.Errorf("the sample of the request whose client left: %+v; want refused, cancelled, status 0, tenant-a, its wait", r)
	}
}
