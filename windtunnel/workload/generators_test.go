package workload

import (
	"bytes"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/augur-llm/augur/tokens"
)

// quickLadder keeps generator tests fast under the race detector.
func quickLadder() Ladder { return ConstantLadder(100, 60*time.Second) }

func TestSameSeedSameStream(t *testing.T) {
	for _, name := range Names() {
		t.Run(name, func(t *testing.T) {
			collect := func(seed uint64) []Request {
				g, err := New(name, withTracePath(t, name, Options{Seed: seed, Ladder: quickLadder(), MaxRequests: 1000}))
				if err != nil {
					t.Fatal(err)
				}
				return Collect(g)
			}
			a, b, c := collect(42), collect(42), collect(43)
			if len(a) != 1000 {
				t.Fatalf("%d requests, want the MaxRequests 1000", len(a))
			}
			if !reflect.DeepEqual(a, b) {
				t.Fatal("the same seed gave different streams")
			}
			// Byte for byte, as a client sends it (a sample: bodies are large).
			for i := range 200 {
				if !bytes.Equal(a[i].Body("m"), b[i].Body("m")) {
					t.Fatalf("request %d: bodies differ", i)
				}
			}
			sameAt, samePrompt := 0, 0
			for i := range min(len(a), len(c)) {
				if a[i].At == c[i].At {
					sameAt++
				}
				if bytes.Equal(a[i].PromptText(), c[i].PromptText()) {
					samePrompt++
				}
			}
			if isTraceReplay(name) {
				sameAt = 0 // a replay's arrival times are the trace's, whatever the seed
			}
			if sameAt > 0 || samePrompt > 0 {
				t.Errorf("seeds 42 and 43 share %d arrival times and %d prompts", sameAt, samePrompt)
			}
		})
	}
}

func TestStreamsAreOrderedAndLabelled(t *testing.T) {
	ladder := Ladder{{Rate: 30, Duration: 10 * time.Second, Warmup: true}, {Rate: 60, Duration: 10 * time.Second}}
	for _, name := range Names() {
		g, err := New(name, withTracePath(t, name, Options{Seed: 5, Ladder: ladder}))
		if err != nil {
			t.Fatal(err)
		}
		prev := time.Duration(-1)
		ids := map[string]bool{}
		for i, r := range Collect(g) {
			if r.Seq != i || r.At < prev || r.At >= ladder.Duration() || r.Stage != ladder.StageAt(r.At) {
				t.Fatalf("%s: request %d: seq %d at %v stage %d after %v", name, i, r.Seq, r.At, r.Stage, prev)
			}
			if ids[r.ID] || r.ID == "" {
				t.Fatalf("%s: request %d: id %q repeats", name, i, r.ID)
			}
			ids[r.ID] = true
			if r.MaxTokens < 1 || !r.Stream || !r.IgnoreEOS || r.Class == "" {
				t.Fatalf("%s: request %d: %+v", name, i, r)
			}
			prev = r.At
		}
	}
}

func TestSharedPrefixInferencePerfSemantics(t *testing.T) {
	g, err := NewSharedPrefix(1, ConstantLadder(1000, 2*time.Second), SharedPrefixOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rs := Collect(g)
	if len(rs) < 1600 {
		t.Fatalf("only %d requests; want more than two cycles of 750", len(rs))
	}
	distinct := map[string]bool{}
	groups := map[string]int{} // 6,000-token prefix -> prompts with it
	for i, r := range rs {
		if r.API != Completions || r.MaxTokens != 1000 || !r.IgnoreEOS || !r.Stream || r.Class != DefaultClass {
			t.Fatalf("request %d: %+v", i, r)
		}
		if n := tokens.Count(r.Prompt); n != 7200 || r.PromptTokens() != 7200 {
			t.Fatalf("request %d: %d tokens, want 7200", i, n)
		}
		if i < 750 {
			if distinct[r.Prompt] {
				t.Fatalf("request %d repeats a prompt within the first cycle", i)
			}
			distinct[r.Prompt] = true
			groups[r.Prompt[:6000*tokens.BytesPerToken]]++
		} else if prev := rs[i-750].Prompt; r.Prompt != prev || unsafe.StringData(r.Prompt) != unsafe.StringData(prev) {
			t.Fatalf("request %d is not request %d's prompt (same string) again", i, i-750)
		}
	}
	if len(distinct) != 750 {
		t.Errorf("%d distinct prompts, want 750", len(distinct))
	}
	if len(groups) != 150 {
		t.Errorf("%d distinct 6000-token prefixes, want 150", len(groups))
	}
	for _, n := range groups {
		if n != 5 {
			t.Fatalf("a group prefix is shared by %d prompts, want 5", n)
		}
	}
	// The shuffle spreads a group over the cycle rather than sending its prompts back to back.
	adjacent := 0
	for i := 1; i < 750; i++ {
		if rs[i].Prompt[:24000] == rs[i-1].Prompt[:24000] {
			adjacent++
		}
	}
	if adjacent > 30 {
		t.Errorf("%d consecutive pairs share a group: prompts look unshuffled", adjacent)
	}
	// The questions differ from the start: no prompt extends another group's prefix further.
	for _, r := range rs[:750] {
		if r.Prompt[24000:24004] == "" {
			t.Fatal("empty question")
		}
	}
}

func TestSharedPrefixOptions(t *testing.T) {
	g, err := NewSharedPrefix(1, ConstantLadder(100, 10*time.Second), SharedPrefixOptions{
		Groups: 3, PromptsPerGroup: 2, SystemPromptLen: 100, QuestionLen: 10, OutputLen: 5,
		SLOTTFT: time.Second, SLOTPOT: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Prompts()) != 6 {
		t.Fatalf("%d prompts, want 6", len(g.Prompts()))
	}
	r, _ := g.Next()
	if r.PromptTokens() != 110 || r.MaxTokens != 5 || r.Headers()[HeaderSLOTTFT] != "1000" || r.Headers()[HeaderSLOTPOT] != "20" {
		t.Errorf("request %+v, headers %v", r, r.Headers())
	}
	if _, err := NewSharedPrefix(1, quickLadder(), SharedPrefixOptions{Groups: -1}); err == nil {
		t.Error("negative Groups accepted")
	}
}

// sessions groups a stream's requests by session, in order.
func sessions(rs []Request) map[string][]Request {
	out := map[string][]Request{}
	for _, r := range rs {
		out[r.SessionID] = append(out[r.SessionID], r)
	}
	return out
}

func TestMultiTurnConversations(t *testing.T) {
	const secs = 300
	g, err := NewMultiTurn(9, ConstantLadder(20, secs*time.Second), MultiTurnOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rs := Collect(g)
	convs := sessions(rs)
	if len(convs) < 100 {
		t.Fatalf("only %d conversations", len(convs))
	}
	turnCounts := map[int]int{}
	for id, turns := range convs {
		if id == "" {
			t.Fatal("a turn without a session id")
		}
		// Conversations that start well before the end run all their turns.
		if turns[0].At < (secs-120)*time.Second {
			if n := len(turns); n < 3 || n > 10 {
				t.Errorf("conversation %s has %d turns, want 3-10", id, n)
			}
			turnCounts[len(turns)]++
		}
		var prev []byte
		for k, r := range turns {
			text := r.PromptText()
			if r.Turn != k || r.API != Chat || r.Headers()[HeaderSessionID] != id {
				t.Fatalf("%s turn %d: %+v", id, k, r)
			}
			user := r.Messages[len(r.Messages)-1]
			if n := tokens.Count(user.Text); user.Role != "user" || n < 50 || n > 300 {
				t.Fatalf("%s turn %d: last message %s of %d tokens", id, k, user.Role, n)
			}
			if r.MaxTokens < 100 || r.MaxTokens > 500 {
				t.Fatalf("%s turn %d: answer of %d tokens", id, k, r.MaxTokens)
			}
			if k > 0 {
				if !bytes.HasPrefix(text, prev) {
					t.Fatalf("%s turn %d does not start with turn %d's prompt", id, k, k-1)
				}
				if r.At-turns[k-1].At != r.Think || r.Think < 0 {
					t.Fatalf("%s turn %d: think %v but %v after the previous turn", id, k, r.Think, r.At-turns[k-1].At)
				}
				// The answer in the history is what the simulator generates: the previous
				// user turn echoed for max_tokens tokens.
				prevTurn := turns[k-1]
				answer := r.Messages[len(r.Messages)-2]
				if answer.Role != "assistant" || answer.Text != tokens.EchoText(prevTurn.Messages[len(prevTurn.Messages)-1].Text, prevTurn.MaxTokens) {
					t.Fatalf("%s turn %d: the history's answer is not the echoed previous turn", id, k)
				}
			}
			prev = text
		}
	}
	if len(turnCounts) != 8 {
		t.Errorf("turn counts seen %v, want every one of 3-10", turnCounts)
	}
	// Conversations start at rate/6.5, so once they overlap the request rate is the ladder's.
	n := 0
	for _, r := range rs {
		if r.At >= 60*time.Second && r.At < (secs-60)*time.Second {
			n++
		}
	}
	if got := float64(n) / (secs - 120); math.Abs(got-20)/20 > 0.1 {
		t.Errorf("steady request rate %.1f req/s, want 20 within 10%%", got)
	}
}

func TestAgenticRuns(t *testing.T) {
	g, err := NewAgentic(11, ConstantLadder(40, 120*time.Second), AgenticOptions{})
	if err != nil {
		t.Fatal(err)
	}
	blocks := map[string]bool{}
	for _, b := range g.ToolBlocks() {
		if n := tokens.Count(b); n < 4000 || n > 12000 {
			t.Errorf("tool block of %d tokens, want 4000-12000", n)
		}
		blocks[b] = true
	}
	if len(blocks) != 4 {
		t.Fatalf("%d distinct tool blocks, want 4", len(blocks))
	}
	runs := sessions(Collect(g))
	used := map[string]bool{}
	for id, its := range runs {
		block := its[0].Messages[0]
		if block.Role != "system" || !blocks[block.Text] {
			t.Fatalf("run %s does not start with a tool block", id)
		}
		used[block.Text] = true
		var prev []byte
		for k, r := range its {
			if r.Messages[0] != block {
				t.Fatalf("run %s iteration %d: tool block changed", id, k)
			}
			text := r.PromptText()
			if !bytes.HasPrefix(text, tokens.RenderChat(r.Messages[:1])) || (k > 0 && !bytes.HasPrefix(text, prev)) {
				t.Fatalf("run %s iteration %d does not extend the trajectory", id, k)
			}
			if r.MaxTokens < 20 || r.MaxTokens > 200 || r.Turn != k {
				t.Fatalf("run %s iteration %d: %d output tokens, turn %d", id, k, r.MaxTokens, r.Turn)
			}
			if want := 2 + 2*k; len(r.Messages) != want {
				t.Fatalf("run %s iteration %d: %d messages, want %d", id, k, len(r.Messages), want)
			}
			prev = text
		}
		if its[0].At < 60*time.Second && (len(its) < 4 || len(its) > 16) {
			t.Errorf("run %s: %d iterations, want 4-16", id, len(its))
		}
	}
	if len(used) != 4 {
		t.Errorf("runs used %d of the 4 tool blocks", len(used))
	}
}

func TestMixedSLOClassesAndTenants(t *testing.T) {
	// The default classes with tiny texts: the draws are the same, the test much faster.
	classes := DefaultClasses()
	for i := range classes {
		classes[i].SystemTokens, classes[i].MinInput, classes[i].MaxInput = 4, 1, 1
	}
	g, err := NewMixedSLO(3, ConstantLadder(200, 150*time.Second), MixedSLOOptions{Classes: classes})
	if err != nil {
		t.Fatal(err)
	}
	rs := Collect(g)
	counts := map[string]int{}
	tenants := map[string]int{}
	systems := map[string]string{} // tenant -> its system prompt
	for _, r := range rs {
		counts[r.Class]++
		tenants[r.FairnessID]++
		h := r.Headers()
		var system string
		switch r.Class {
		case "interactive":
			if h[HeaderSLOTTFT] != "500" || h[HeaderSLOTPOT] != "50" || h[HeaderObjective] != "interactive" || r.Priority != 10 || r.API != Chat {
				t.Fatalf("interactive request %+v headers %v", r, h)
			}
			system = r.Messages[0].Text
		case "standard":
			if h[HeaderSLOTTFT] != "2000" || h[HeaderSLOTPOT] != "100" || h[HeaderObjective] != "standard" || r.Priority != 0 || r.API != Chat {
				t.Fatalf("standard request %+v headers %v", r, h)
			}
			system = r.Messages[0].Text
		case "batch":
			if _, ok := h[HeaderSLOTPOT]; ok || h[HeaderSLOTTFT] != "30000" || h[HeaderObjective] != "batch" || r.Priority >= 0 || r.API != Completions {
				t.Fatalf("batch request %+v headers %v", r, h)
			}
			system = r.Prompt[:4*tokens.BytesPerToken]
		default:
			t.Fatalf("unexpected class %q", r.Class)
		}
		if h[HeaderFairnessID] != r.FairnessID || !strings.HasPrefix(r.FairnessID, r.Class+"-") {
			t.Fatalf("fairness id %q in class %s (header %q)", r.FairnessID, r.Class, h[HeaderFairnessID])
		}
		if s, ok := systems[r.FairnessID]; ok && s != system {
			t.Fatalf("tenant %s changed its system prompt", r.FairnessID)
		}
		systems[r.FairnessID] = system
	}
	n := float64(len(rs))
	for name, want := range map[string]float64{"interactive": 0.5, "standard": 0.3, "batch": 0.2} {
		if got := float64(counts[name]) / n; math.Abs(got-want) > 0.015 {
			t.Errorf("class %s: share %.3f, want %.2f", name, got, want)
		}
		// The noisy tenant sends 5x each other tenant: 5/8 of its class.
		noisy := float64(tenants[name+"-noisy"])
		for k := 1; k < 4; k++ {
			quiet := float64(tenants[name+"-t"+string(rune('0'+k))])
			if ratio := noisy / quiet; ratio < 4.3 || ratio > 5.8 {
				t.Errorf("class %s: noisy/t%d = %.2f, want 5", name, k, ratio)
			}
		}
	}
	if len(tenants) != 12 {
		t.Errorf("%d tenants, want 12", len(tenants))
	}
}

func TestMixedSLODefaultLengths(t *testing.T) {
	g, err := NewMixedSLO(3, quickLadder(), MixedSLOOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][4]int{ // system, input min, input max, output max
		"interactive": {1000, 50, 500, 300}, "standard": {2000, 200, 2000, 500}, "batch": {500, 1000, 4000, 800},
	}
	for range 300 {
		r, _ := g.Next()
		w := want[r.Class]
		var system, input int
		if r.API == Chat {
			system, input = tokens.Count(r.Messages[0].Text), tokens.Count(r.Messages[1].Text)
		} else {
			system, input = w[0], tokens.Count(r.Prompt)-w[0]
		}
		if system != w[0] || input < w[1] || input > w[2] || r.MaxTokens > w[3] {
			t.Fatalf("%s request: system %d, input %d, output %d", r.Class, system, input, r.MaxTokens)
		}
	}
}

func TestMixedSLOShares(t *testing.T) {
	shares, err := ParseShares("interactive=3, batch=1,standard=0")
	if err != nil {
		t.Fatal(err)
	}
	classes := DefaultClasses()
	for i := range classes {
		classes[i].SystemTokens, classes[i].MinInput, classes[i].MaxInput = 1, 1, 1
	}
	g, err := NewMixedSLO(1, ConstantLadder(200, 25*time.Second), MixedSLOOptions{Classes: classes, Shares: shares})
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	rs := Collect(g)
	for _, r := range rs {
		counts[r.Class]++
	}
	if counts["standard"] != 0 || math.Abs(float64(counts["interactive"])/float64(len(rs))-0.75) > 0.03 {
		t.Errorf("class counts %v", counts)
	}
	for _, bad := range []MixedSLOOptions{
		{Shares: map[string]float64{"premium": 1}},
		{Shares: map[string]float64{"interactive": 0, "standard": 0, "batch": 0}},
		{Classes: []Class{}},
		{Classes: []Class{{Name: "a", Share: 1}, {Name: "a", Share: 1}}},
		{Classes: []Class{{Share: 1}}},
		{Classes: []Class{{Name: "a", Share: 1, Tenants: -1}}},
		{Classes: []Class{{Name: "a", Share: 1, MinInput: 10, MaxInput: 5}}},
	} {
		if _, err := NewMixedSLO(1, quickLadder(), bad); err == nil {
			t.Errorf("options %+v accepted", bad)
		}
	}
	for _, bad := range []string{"", "a", "a=x", "a=-1", "=1"} {
		if _, err := ParseShares(bad); err == nil {
			t.Errorf("ParseShares(%q) succeeded", bad)
		}
	}
}

func TestCustomClass(t *testing.T) {
	g, err := NewMixedSLO(1, quickLadder(), MixedSLOOptions{Classes: []Class{
		{Name: "solo", Share: 1, Tenants: 1, NoisyFactor: 1, API: Chat, MinInput: 10, MaxInput: 10, MinOutput: 3, MaxOutput: 3},
	}})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := g.Next()
	if r.Class != "solo" || r.Objective != "solo" || r.FairnessID != "solo-noisy" || len(r.Messages) != 1 ||
		tokens.Count(r.Messages[0].Text) != 10 || r.MaxTokens != 3 || r.SLOTTFT != 0 {
		t.Errorf("request %+v", r)
	}
	if _, ok := r.Headers()[HeaderSLOTTFT]; ok {
		t.Error("a class without objectives sent an SLO header")
	}
}

func TestHeterogeneousIsItsOwnStream(t *testing.T) {
	a, _ := NewMixedSLO(1, quickLadder(), MixedSLOOptions{})
	b, _ := NewHeterogeneous(1, quickLadder(), MixedSLOOptions{})
	ra, _ := a.Next()
	rb, _ := b.Next()
	if !strings.HasPrefix(rb.ID, "hp-") || ra.At == rb.At {
		t.Errorf("heterogeneous %s at %v, mixed-slo %s at %v", rb.ID, rb.At, ra.ID, ra.At)
	}
}

func TestRegistry(t *testing.T) {
	for _, name := range Names() {
		if Describe(name) == "" {
			t.Errorf("%s has no description", name)
		}
	}
	_, err := New("sharedprefix", Options{})
	if err == nil || !strings.Contains(err.Error(), "shared-prefix, multi-turn, agentic, mixed-slo, heterogeneous") {
		t.Errorf("unknown name error = %v", err)
	}
	for _, tc := range []struct {
		name string
		o    Options
	}{
		{NameSharedPrefix, Options{SharedPrefix: SharedPrefixOptions{QuestionLen: -1}}},
		{NameMultiTurn, Options{MultiTurn: MultiTurnOptions{MinTurns: 5, MaxTurns: 4}}},
		{NameAgentic, Options{Agentic: AgenticOptions{MinOutput: -1}}},
		{NameMixedSLO, Options{MixedSLO: MixedSLOOptions{Shares: map[string]float64{"x": 1}}}},
		{NameHeterogeneous, Options{Ladder: Ladder{}}},
		{NameAgentic, Options{MaxRequests: -1}},
	} {
		if _, err := New(tc.name, tc.o); err == nil {
			t.Errorf("New(%s, %+v) accepted bad options", tc.name, tc.o)
		}
	}
	g, err := New(NameSharedPrefix, Options{Seed: 1, MaxRequests: 3})
	if err != nil {
		t.Fatal(err)
	}
	if rs := Collect(g); len(rs) != 3 || rs[0].Stage != 0 {
		t.Errorf("%d requests with MaxRequests 3", len(rs))
	}
	if _, ok := g.Next(); ok {
		t.Error("Next after the limit returned a request")
	}
}

// BenchmarkSharedPrefix12000 is ten simulated minutes at 20 req/s of the shared-prefix
// benchmark (12,000 requests of 7,200 tokens), including building its 750 prompts.
func BenchmarkSharedPrefix12000(b *testing.B) {
	// A ladder with room to spare, so that Poisson noise never ends it before 12,000.
	ladder := ConstantLadder(20, 11*time.Minute)
	for b.Loop() {
		g, err := NewSharedPrefix(1, ladder, SharedPrefixOptions{})
		if err != nil {
			b.Fatal(err)
		}
		for range 12000 {
			if _, ok := g.Next(); !ok {
				b.Fatal("stream ended early")
			}
		}
	}
}

// Classes assigned to a workload without objectives follow the shares and leave the
// requests themselves as they were.
func TestWithClasses(t *testing.T) {
	const n = 6000
	plain, err := New(NameSharedPrefix, Options{Seed: 4, Ladder: ConstantLadder(20, time.Hour), MaxRequests: n})
	if err != nil {
		t.Fatal(err)
	}
	base, err := New(NameSharedPrefix, Options{Seed: 4, Ladder: ConstantLadder(20, time.Hour), MaxRequests: n})
	if err != nil {
		t.Fatal(err)
	}
	g, err := WithClasses(base, 9, nil)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for i := range n {
		want, ok1 := plain.Next()
		got, ok2 := g.Next()
		if !ok1 || !ok2 {
			t.Fatalf("stream ended at %d", i)
		}
		if got.At != want.At || got.Prompt != want.Prompt || got.MaxTokens != want.MaxTokens || got.ID != want.ID {
			t.Fatalf("request %d changed beyond its class", i)
		}
		count[got.Class]++
		if got.SLOTTFT == 0 || got.Objective != got.Class {
			t.Fatalf("request %d: class %q TTFT %v objective %q", i, got.Class, got.SLOTTFT, got.Objective)
		}
	}
	for _, c := range DefaultClasses() {
		share := float64(count[c.Name]) / n
		if math.Abs(share-c.Share) > 0.03 {
			t.Errorf("class %s: share %.3f, want %.2f", c.Name, share, c.Share)
		}
	}
	if _, err := WithClasses(plain, 1, []Class{{Name: "x"}}); err == nil {
		t.Error("a class without a share accepted")
	}
}
