package sim

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestBlockPoolEvictsLeastRecentlyFreedAndCountsCachedAsFree(t *testing.T) {
	p := newBlockPool(5) // 4 usable blocks
	a := p.allocate(nil, 2)
	p.cacheBlock(a[0], 100)
	p.cacheBlock(a[1], 101)
	if got := p.usage(); got != 0.5 {
		t.Fatalf("usage = %v, want 0.5", got)
	}
	p.release(a)
	if got := p.usage(); got != 0 {
		t.Fatalf("usage after release = %v, want 0: cached but unreferenced blocks are free", got)
	}
	if hit := p.lookup([]uint64{100, 101, 102}, 10, nil); len(hit) != 2 {
		t.Fatalf("hit %d blocks, want 2", len(hit))
	}
	if hit := p.lookup([]uint64{100, 101}, 1, nil); len(hit) != 1 {
		t.Fatalf("limit ignored: hit %d blocks", len(hit))
	}
	// Two never-used blocks go first, then the request's tail block (101), then its head.
	b := p.allocate(nil, 3)
	if hit := p.lookup([]uint64{100, 101}, 10, nil); len(hit) != 1 {
		t.Fatalf("after evicting one cached block, hit %d blocks, want 1 (the prefix head survives)", len(hit))
	}
	p.touch(p.lookup([]uint64{100}, 1, nil))
	if p.free != 0 {
		t.Fatalf("free = %d, want 0", p.free)
	}
	p.release(b)
	if p.free != 3 {
		t.Fatalf("free = %d, want 3", p.free)
	}
}

// TestLookupAgainChecksEarlierHit: a lookup given an earlier result agrees with a fresh one
// after the blocks it found were evicted, re-cached elsewhere or joined by new ones.
func TestLookupAgainChecksEarlierHit(t *testing.T) {
	p := newBlockPool(9) // 8 usable blocks
	a := p.allocate(nil, 3)
	for i, b := range a {
		p.cacheBlock(b, uint64(100+i))
	}
	p.release(a)
	hashes := []uint64{100, 101, 102, 103}
	prev := p.lookup(hashes, 10, nil)
	if len(prev) != 3 {
		t.Fatalf("hit %d blocks, want 3", len(prev))
	}
	check := func(what string) {
		t.Helper()
		again := p.lookup(hashes, 10, append([]int32(nil), prev...))
		fresh := p.lookup(hashes, 10, nil)
		if len(again) != len(fresh) {
			t.Fatalf("%s: lookup from the earlier hit found %v, a fresh one %v", what, again, fresh)
		}
		for i := range fresh {
			if again[i] != fresh[i] {
				t.Fatalf("%s: lookup from the earlier hit found %v, a fresh one %v", what, again, fresh)
			}
		}
		prev = fresh
	}
	// Five never-used blocks go first, then the tail block (102), which is unhashed.
	b := p.allocate(nil, 6)
	check("tail evicted")
	if len(prev) != 2 {
		t.Fatalf("after evicting the tail, hit %d blocks, want 2", len(prev))
	}
	p.cacheBlock(b[5], 102) // the same content computed again, in another block
	p.cacheBlock(b[4], 103)
	check("content cached in other blocks")
	if len(prev) != 4 {
		t.Fatalf("hit %d blocks, want 4", len(prev))
	}
}

// A forecast's copy of the block table, brought up to date by the blocks that changed, is
// the table: after any mix of the replica's own steps and forecasts that wrote the copy.
func TestBlockPoolCopyFollowsItsPool(t *testing.T) {
	prof := profile(t, "8b-h100")
	prof.NumGPUBlocks, prof.MaxModelLen = 900, 8192 // small, so that blocks are evicted and reused
	r, err := NewReplica(Config{Model: "m", Profile: prof, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	f := NewForecaster(8)
	rng := rand.New(rand.NewPCG(2, 2))
	request := func(i int) Request {
		// Four shared prefixes, so that the copy hits, registers and evicts cached blocks.
		p := append(append([]byte(nil), text(uint64(i%4), 300)...), text(uint64(100+i), 50+rng.IntN(1500))...)
		return Request{Prompt: TextPrompt(p), MaxTokens: 1 + rng.IntN(200)}
	}
	now := time.Unix(0, 0)
	stepping := false
	var due time.Time
	syncs := 0
	for i := range 250 {
		now = now.Add(time.Duration(rng.ExpFloat64() * float64(60*time.Millisecond)))
		for stepping && !due.After(now) {
			r.Finish(due, func(Token) {})
			d, ok, err := r.Step(due)
			if err != nil {
				t.Fatal(err)
			}
			stepping, due = ok, due.Add(d)
		}
		if _, err := f.Forecast(r, now, request(1000+i)); err != nil {
			t.Fatal(err)
		}
		if err := r.Submit(now, i, request(i)); err != nil {
			t.Fatal(err)
		}
		if !stepping {
			d, ok, err := r.Step(now)
			if err != nil {
				t.Fatal(err)
			}
			stepping, due = ok, now.Add(d)
		}
		if i%7 != 0 {
			continue
		}
		real, cp := r.m.core.pool, f.pools[r.m.core.pool]
		if len(cp.dirty) == 0 {
			t.Fatalf("request %d: the forecast wrote nothing in its copy", i)
		}
		cp.syncFrom(real)
		syncs++
		if !slices.Equal(cp.ref, real.ref) || !slices.Equal(cp.hash, real.hash) || !slices.Equal(cp.hashed, real.hashed) ||
			!slices.Equal(cp.prev, real.prev) || !slices.Equal(cp.next, real.next) ||
			cp.head != real.head || cp.tail != real.tail || cp.free != real.free {
			t.Fatalf("request %d: the copy differs from its pool after an update", i)
		}
	}
	if s := r.Snapshot(); s.Preemptions == 0 || s.PrefixCacheHits == 0 {
		t.Errorf("%+v: no preemption or no prefix hit, the copy was not exercised", s)
	}
}
