package sim

import "testing"

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
	if hit := p.lookup([]uint64{100, 101, 102}, 10); len(hit) != 2 {
		t.Fatalf("hit %d blocks, want 2", len(hit))
	}
	if hit := p.lookup([]uint64{100, 101}, 1); len(hit) != 1 {
		t.Fatalf("limit ignored: hit %d blocks", len(hit))
	}
	// Two never-used blocks go first, then the request's tail block (101), then its head.
	b := p.allocate(nil, 3)
	if hit := p.lookup([]uint64{100, 101}, 10); len(hit) != 1 {
		t.Fatalf("after evicting one cached block, hit %d blocks, want 1 (the prefix head survives)", len(hit))
	}
	p.touch(p.lookup([]uint64{100}, 1))
	if p.free != 0 {
		t.Fatalf("free = %d, want 0", p.free)
	}
	p.release(b)
	if p.free != 3 {
		t.Fatalf("free = %d, want 3", p.free)
	}
}
