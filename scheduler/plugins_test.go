package scheduler

import (
	"cmp"
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/augur-llm/augur/pool"
)

func TestRoundRobinTakesTurns(t *testing.T) {
	p, _ := testPool(t, 3)
	prof, err := DefaultRegistry().Build(BuiltinProfiles()["round-robin"], Handle{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.Replicas()[0].Dispatch(time.Time{}, pool.Work{PromptTokens: 1000}) // load must not matter to round-robin
	s, err := New(p, prof, 1)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for range 6 {
		res, err := s.Schedule(context.Background(), &Request{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, res.Targets[0].Replica.Name+">"+res.Targets[1].Replica.Name)
	}
	if want := "r0>r1 r1>r2 r2>r0 r0>r1 r1>r2 r2>r0"; strings.Join(got, " ") != want {
		t.Fatalf("got %v, want %s", got, want)
	}
}

func TestPrefixScorerFollowsSharedPrefixes(t *testing.T) {
	p, _ := testPool(t, 4)
	prof, err := DefaultRegistry().Build(BuiltinProfiles()["prefix-load"], Handle{Seed: 3}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(p, prof, 0)
	if err != nil {
		t.Fatal(err)
	}
	system := strings.Repeat("You are a careful assistant. ", 200) // ~5,600 bytes
	first := map[int]string{}
	for round := range 3 {
		for g := range 4 {
			prompt := []byte(strings.Repeat(string(rune('a'+g)), 4096) + system + "question " + strings.Repeat("x", round*64+64))
			res, err := decide(s, &Request{Prompt: prompt})
			if err != nil {
				t.Fatal(err)
			}
			name := res.Targets[0].Replica.Name
			if round == 0 {
				first[g] = name
			} else if name != first[g] {
				t.Errorf("group %d round %d went to %s, its prefix lives on %s", g, round, name, first[g])
			}
		}
	}
}

func TestBlockIndexIsBounded(t *testing.T) {
	idx := newBlockIndex(100)
	for i := range 1000 {
		idx.add([]uint64{uint64(i), uint64(i) + 1e9}, 100)
	}
	if idx.len() != 100 {
		t.Fatalf("index holds %d blocks, capacity 100", idx.len())
	}
	if idx.matched([]uint64{999, 999 + 1e9}) != 2 || idx.matched([]uint64{0, 1e9}) != 0 {
		t.Fatal("the most recent blocks must stay and the oldest go")
	}
}

// The max-score picker explores the share of decisions it is told to, at random, and
// otherwise picks the best.
func TestMaxScoreExploration(t *testing.T) {
	if _, err := DefaultRegistry().Build(ProfileConfig{Name: "x", Picker: PluginConfig{Name: "max-score", Args: []byte(`{"explore":1.5}`)}}, Handle{}, nil); err == nil {
		t.Fatal("explore 1.5 accepted")
	}
	cands := make([]Candidate, 8)
	scores := []float64{0, 0, 0, 1, 0, 0, 0, 0} // candidate 3 is best
	for _, tc := range []struct {
		explore float64
		lo, hi  int // of 10,000 decisions, how many may not pick the best
	}{{0, 0, 0}, {0.1, 700, 1050}, {1, 8400, 9100}} {
		p, err := NewExploringMaxScorePicker(1, tc.explore)
		if err != nil {
			t.Fatal(err)
		}
		other := 0
		for range 10_000 {
			if p.Pick(context.Background(), nil, cands, scores, 1, nil)[0] != 3 {
				other++
			}
		}
		// Exploring picks uniformly among all 8, the best included: 7/8 of explored decisions
		// go elsewhere.
		if other < tc.lo || other > tc.hi {
			t.Errorf("explore %v: %d of 10,000 decisions away from the best, want %d..%d", tc.explore, other, tc.lo, tc.hi)
		}
	}
}

// The max-score picker's leading candidates are those of a stable sort of the shuffled
// candidates by score, as it first ordered them: same tie-breaks, same random draws.
func TestMaxScorePickerSelectsAsTheSortDid(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 9))
	for trial := range 2000 {
		seed := rng.Uint64()
		p, ref := NewMaxScorePicker(seed), NewMaxScorePicker(seed)
		m := 1 + rng.IntN(70)
		cs := make([]Candidate, m)
		scores := make([]float64, m)
		for i := range scores {
			scores[i] = float64(rng.IntN(4)) / 3 // ties
			if rng.IntN(20) == 0 {
				scores[i] = math.NaN()
			}
		}
		n := 1 + rng.IntN(12)
		got := p.Pick(context.Background(), &Request{}, cs, scores, n, []int{-1})
		want, idx := ref.r.shuffledIndices([]int{-1}, m)
		slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(scores[b], scores[a]) })
		want = want[:1+min(n, m)]
		if !slices.Equal(got, want) {
			t.Fatalf("trial %d, %d of %d: picked %v, the sort %v (scores %v)", trial, n, m, got, want, scores)
		}
	}
}
