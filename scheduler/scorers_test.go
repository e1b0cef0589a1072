package scheduler

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"

	"github.com/augur-llm/augur/pool"
)

func cands(ms ...pool.Metrics) []Candidate {
	out := make([]Candidate, len(ms))
	for i, m := range ms {
		out[i] = Candidate{Replica: pool.NewReplica(pool.Endpoint{Name: fmt.Sprint("r", i), Address: fmt.Sprintf("10.0.0.%d:80", i)}), Metrics: m}
	}
	return out
}

func score(s Scorer, req *Request, cs []Candidate) []float64 {
	out := make([]float64, len(cs))
	if ps, ok := s.(PreScorer); ok {
		ps.PreScore(context.Background(), req, cs)
	}
	s.Score(context.Background(), req, cs, out)
	return out
}

func near(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Abs(a[i]-b[i]) > 1e-9 {
			return false
		}
	}
	return true
}

func TestMetricScorers(t *testing.T) {
	cs := cands(pool.Metrics{Waiting: 0, Running: 10, KVUsage: 0.9}, pool.Metrics{Waiting: 4, Running: 30, KVUsage: 0.1}, pool.Metrics{Waiting: 8, Running: 20, KVUsage: 0.5})
	for _, tc := range []struct {
		s    Scorer
		want []float64
	}{
		{QueueScorer{}, []float64{1, 0.5, 0}},
		{RunningScorer{}, []float64{1, 0, 0.5}},
		{KVUsageScorer{}, []float64{0.1, 0.9, 0.5}},
	} {
		if got := score(tc.s, &Request{}, cs); !near(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.s.Name(), got, tc.want)
		}
	}
	same := cands(pool.Metrics{Waiting: 3}, pool.Metrics{Waiting: 3})
	if got := score(QueueScorer{}, &Request{}, same); !near(got, []float64{1, 1}) {
		t.Errorf("equal queues: %v", got)
	}
}

func TestInflightLoadScorer(t *testing.T) {
	cs := cands(pool.Metrics{}, pool.Metrics{}, pool.Metrics{})
	cs[0].Load.Tokens, cs[1].Load.Tokens, cs[2].Load.Tokens = 1000, 0, 500
	if got := score(InflightLoadScorer{}, &Request{}, cs); !near(got, []float64{0, 1, 0.5}) {
		t.Errorf("%v", got)
	}
}

func TestSessionAffinity(t *testing.T) {
	s := NewSessionAffinityScorer(2)
	cs := cands(pool.Metrics{}, pool.Metrics{}, pool.Metrics{})
	req := &Request{SessionID: "conv-1"}
	if got := score(s, req, cs); !near(got, []float64{0, 0, 0}) {
		t.Fatalf("unknown session scored %v", got)
	}
	s.Dispatched(context.Background(), req, cs[2])
	if got := score(s, req, cs); !near(got, []float64{0, 0, 1}) {
		t.Fatalf("session scores %v, want its replica only", got)
	}
	if got := score(s, &Request{}, cs); !near(got, []float64{0, 0, 0}) {
		t.Fatalf("no session id scored %v", got)
	}
	// Capacity 2: a third session evicts the least recently used.
	s.Dispatched(context.Background(), &Request{SessionID: "conv-2"}, cs[0])
	s.Dispatched(context.Background(), &Request{SessionID: "conv-3"}, cs[1])
	if got := score(s, req, cs); !near(got, []float64{0, 0, 0}) || s.sessions.Len() != 2 {
		t.Fatalf("after eviction: %v, %d sessions", got, s.sessions.Len())
	}
}

func TestPickers(t *testing.T) {
	cs := cands(pool.Metrics{}, pool.Metrics{}, pool.Metrics{}, pool.Metrics{})
	scores := []float64{0, 3, 1, 0}
	counts := map[int]int{}
	wr := NewWeightedRandomPicker(1)
	for range 4000 {
		order := wr.Pick(context.Background(), &Request{}, cs, scores, 3, nil)
		if len(order) != 3 {
			t.Fatalf("order %v", order)
		}
		counts[order[0]]++
		if order[0] == 0 || order[0] == 3 {
			t.Fatalf("a zero-score candidate was drawn first: %v", order)
		}
	}
	if r := float64(counts[1]) / float64(counts[2]); r < 2.5 || r > 3.5 {
		t.Errorf("weights 3:1 drawn %d:%d", counts[1], counts[2])
	}
	rp := NewRandomPicker(1)
	first := map[int]int{}
	for range 4000 {
		order := rp.Pick(context.Background(), &Request{}, cs, scores, 2, nil)
		if len(order) != 2 || order[0] == order[1] {
			t.Fatalf("order %v", order)
		}
		first[order[0]]++
	}
	for i := range cs {
		if first[i] < 800 {
			t.Errorf("random picker chose %d first only %d of 4000 times", i, first[i])
		}
	}
}

func TestHotspotGuard(t *testing.T) {
	cs := cands(pool.Metrics{Running: 5}, pool.Metrics{Running: 60}, pool.Metrics{Running: 20}, pool.Metrics{Running: 26})
	got := HotspotGuard{Factor: 2, Slack: 16}.Filter(context.Background(), &Request{}, cs)
	var names []string
	for _, c := range got {
		names = append(names, c.Replica.Name)
	}
	if strings.Join(names, ",") != "r0,r2,r3" { // limit 2*5+16 = 26
		t.Fatalf("kept %v", names)
	}
}

// With the guard, a prefix that every request shares cannot pile onto one replica.
func TestHotspotGuardSpreadsAHotPrefix(t *testing.T) {
	p, clk := testPool(t, 4)
	for _, name := range []string{"prefix-load", "prefix-guarded"} {
		prof, err := DefaultRegistry().Build(BuiltinProfiles()[name], Handle{Seed: 1, Pool: p}, nil)
		if err != nil {
			t.Fatal(err)
		}
		s, _ := New(p, prof, 0)
		var leases []*pool.Lease
		perReplica := map[string]int{}
		prompt := []byte(strings.Repeat("the same long system prompt ", 400))
		for range 200 {
			res, err := decide(s, &Request{Prompt: prompt})
			if err != nil {
				t.Fatal(err)
			}
			perReplica[res.Targets[0].Replica.Name]++
			leases = append(leases, res.Targets[0].Replica.Dispatch(time.Time{}, pool.Work{PromptTokens: 1000}))
		}
		for _, l := range leases {
			l.Release()
		}
		for _, r := range p.Replicas() {
			r.SetMetrics(pool.Metrics{ScrapedAt: clk.Now()})
		}
		t.Logf("%s: %v", name, perReplica)
		if name == "prefix-load" && len(perReplica) != 1 {
			t.Errorf("without the guard every request should follow the prefix to one replica: %v", perReplica)
		}
		if name == "prefix-guarded" {
			lo, hi := 200, 0
			for _, r := range p.Replicas() {
				lo, hi = min(lo, perReplica[r.Name]), max(hi, perReplica[r.Name])
			}
			if lo == 0 || float64(hi) > 2*float64(lo)+float64(DefaultHotspotSlack) {
				t.Errorf("guarded: per-replica counts %v", perReplica)
			}
		}
	}
}

func TestPrefixCapacityFromCacheConfigAndPurge(t *testing.T) {
	p, clk := testPool(t, 2)
	s := NewPrefixScorer(1_000_000, p)
	r0 := p.Replicas()[0]
	// 64 blocks of 16 tokens reported: the record keeps at most 64 blocks.
	c := Candidate{Replica: r0, Metrics: pool.Metrics{BlockSize: 16, NumGPUBlocks: 64, ScrapedAt: clk.Now()}}
	for i := range 100 {
		s.Dispatched(context.Background(), &Request{Prompt: []byte(strings.Repeat(fmt.Sprint(i%10), 64*10) + fmt.Sprint(i))}, c)
	}
	if n := s.Blocks(); n != 64 {
		t.Fatalf("recorded %d blocks for a replica of 64", n)
	}
	// r0 leaves the pool; after enough dispatches elsewhere its record is gone.
	if err := p.Set([]pool.Endpoint{p.Replicas()[1].Endpoint()}); err != nil {
		t.Fatal(err)
	}
	other := Candidate{Replica: p.Replicas()[0]}
	for range purgeEvery {
		s.Dispatched(context.Background(), &Request{Prompt: []byte(strings.Repeat("x", 64))}, other)
	}
	s.mu.Lock()
	_, kept := s.indexes[r0.Name]
	s.mu.Unlock()
	if kept {
		t.Fatal("the record of a replica that left the pool was kept")
	}
}

// TestPrefixIndexMemoryBounded feeds a million distinct prompts through the scorer and checks
// that what it holds stays within its configured capacity, in blocks and in bytes.
func TestPrefixIndexMemoryBounded(t *testing.T) {
	const capacity = 50_000
	p, _ := testPool(t, 4)
	s := NewPrefixScorer(capacity, p)
	cs := make([]Candidate, 4)
	for i, r := range p.Replicas() {
		cs[i] = Candidate{Replica: r}
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	prompt := make([]byte, 4*PrefixBlockTokens*4) // 4 blocks
	for i := range 1_000_000 {
		copy(prompt, fmt.Sprintf("%016d", i))
		s.Dispatched(context.Background(), &Request{Prompt: prompt}, cs[i%4])
		if i%250_000 == 0 && s.Blocks() > 4*capacity {
			t.Fatalf("after %d prompts the index holds %d blocks, capacity %d", i, s.Blocks(), 4*capacity)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if s.Blocks() != 4*capacity {
		t.Fatalf("index holds %d blocks, want exactly the capacity %d", s.Blocks(), 4*capacity)
	}
	held := float64(after.HeapAlloc) - float64(before.HeapAlloc)
	perBlock := held / float64(4*capacity)
	t.Logf("index: %d blocks, %.0f bytes of heap (%.0f bytes per block)", s.Blocks(), held, perBlock)
	if perBlock > 256 {
		t.Errorf("%.0f bytes per tracked block; the bound assumes at most 256", perBlock)
	}
}

func BenchmarkPrefixIndexBytesPerBlock(b *testing.B) {
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		idx := newBlockIndex(100_000)
		hashes := make([]uint64, 100_000)
		for i := range hashes {
			hashes[i] = uint64(i)*0x9e3779b97f4a7c15 + 1
		}
		idx.add(hashes, 100_000)
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/100_000, "bytes/block")
		runtime.KeepAlive(idx)
	}
}

// The chained block hashes are those of a maphash.Hash fed each block's parent hash and then
// the block, as the scorer first computed them: records keep the same keys.
func TestPrefixHashesChainBlocks(t *testing.T) {
	s := NewPrefixScorer(0, nil)
	prompt := make([]byte, 37*prefixBlockBytes+11)
	for i := range prompt {
		prompt[i] = byte(i*7 + i/64)
	}
	got := s.hashes(&Request{Prompt: prompt})
	if len(got) != 37 {
		t.Fatalf("%d hashes for 37 full blocks", len(got))
	}
	var h maphash.Hash
	h.SetSeed(s.seed)
	var parent [8]byte
	for i := range got {
		h.Reset()
		_, _ = h.Write(parent[:])
		_, _ = h.Write(prompt[i*prefixBlockBytes : (i+1)*prefixBlockBytes])
		want := h.Sum64()
		binary.LittleEndian.PutUint64(parent[:], want)
		if got[i] != want {
			t.Fatalf("block %d: hash %x, want %x", i, got[i], want)
		}
	}
}

// The record keeps and forgets exactly the blocks simplelru's LRU (its first implementation)
// keeps and forgets, in the same order, through dispatches that share prefixes, removals
// (Moved), and capacity changes (a replica reporting its KV capacity).
func TestBlockIndexEvictsAsTheLRUDid(t *testing.T) {
	rng := rand.New(rand.NewPCG(10, 11))
	for trial := range 300 {
		capacity := 1 + rng.IntN(60)
		idx := newBlockIndex(capacity)
		ref, _ := simplelru.NewLRU[uint64, struct{}](capacity, nil)
		universe := uint64(2 + rng.IntN(120))
		for op := range 200 {
			switch k := rng.IntN(10); {
			case k < 6: // a dispatched prompt's blocks, at times with a new capacity
				hashes := make([]uint64, rng.IntN(12))
				for i := range hashes {
					hashes[i] = rng.Uint64N(universe)
				}
				c := idx.capacity
				if rng.IntN(20) == 0 {
					c = 1 + rng.IntN(80)
				}
				idx.add(hashes, c)
				if c > 0 && c != capacity {
					ref.Resize(c)
					capacity = c
				}
				for _, h := range slices.Backward(hashes) {
					ref.Add(h, struct{}{})
				}
			case k < 8:
				h := rng.Uint64N(universe)
				idx.remove(h)
				ref.Remove(h)
			default:
				hashes := make([]uint64, rng.IntN(12))
				for i := range hashes {
					hashes[i] = rng.Uint64N(universe)
				}
				lo, hi := 0, len(hashes)
				for lo < hi {
					mid := (lo + hi + 1) / 2
					if ref.Contains(hashes[mid-1]) {
						lo = mid
					} else {
						hi = mid - 1
					}
				}
				if got := idx.matched(hashes); got != lo {
					t.Fatalf("trial %d op %d: matched %d, the LRU %d", trial, op, got, lo)
				}
			}
			var keys []uint64 // oldest first
			for i := idx.tail; i >= 0; i = idx.entries[i].prev {
				keys = append(keys, idx.entries[i].hash)
			}
			if !slices.Equal(keys, ref.Keys()) || idx.len() != ref.Len() {
				t.Fatalf("trial %d op %d: the record holds %v, the LRU %v", trial, op, keys, ref.Keys())
			}
		}
	}
}

// Under pressure the record forgets the ends of prompts first, like the replica's cache, and
// never claims a block whose prefix it has forgotten.
func TestBlockIndexEvictsPromptEndsFirst(t *testing.T) {
	idx := newBlockIndex(3)
	idx.add([]uint64{1, 2, 3, 4}, 3) // one prompt of 4 chained blocks, capacity 3
	if got := idx.matched([]uint64{1, 2, 3, 4}); got != 3 {
		t.Fatalf("matched %d blocks, want the first 3 (the last one evicted)", got)
	}
	idx.add([]uint64{1, 2, 9}, 3) // a second prompt sharing blocks 1 and 2
	if got := idx.matched([]uint64{1, 2, 3, 4}); got != 2 {
		t.Fatalf("matched %d blocks of the first prompt, want its 2 shared ones", got)
	}
	for _, h := range []uint64{1, 2} {
		if !idx.contains(h) {
			t.Fatalf("shared head block %d was evicted before a tail", h)
		}
	}
}
