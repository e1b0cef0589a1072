package sim

// blockPool is a simplified vLLM V1 KV-cache block manager: reference-counted blocks, a
// hash-to-block map for prefix caching, and a free queue in LRU order. Blocks whose last user
// finished keep their hash and stay in the free queue, so they can be hit again until an
// allocation evicts them; this is why cached-but-unreferenced blocks count as free.
//
// Block 0 is never handed out, as vLLM reserves a null block; usage is therefore measured
// against numBlocks-1.
type blockPool struct {
	numBlocks int
	ref       []int32
	hash      []uint64
	hashed    []bool
	// The free queue is an intrusive doubly linked list over block ids (-1 terminates) so that
	// a cache hit can pull a block out of the middle in O(1).
	prev, next []int32
	head, tail int32
	free       int
	// cached maps a full block's hash to the block that holds it. Hashing is one to one:
	// hashed[b] exactly when cached[hash[b]] == b (in a copy: in cached or shared).
	cached map[uint64]int32
	// shared is, in a forecast's copy of a pool, the original's index, read and never
	// written: copying a map of tens of thousands of entries would cost far more than the
	// forecast. The copy's own arrays say whether an entry still holds (an evicted block is
	// unhashed there), and cached holds only what the copy hashed itself. Nil in a real pool.
	shared map[uint64]int32

	// Write tracking, so that a forecast's copy is brought up to date by copying the blocks
	// that changed rather than every block (see syncFrom). While track is set, each block
	// whose entry in the arrays above is written is listed once in dirty (mark[b] == epoch
	// says it is). A real pool tracks once it has a copy, for that copy (mirror); the copy
	// tracks its forecast's own writes.
	track  bool
	dirty  []int32
	mark   []uint32
	epoch  uint32
	mirror *blockPool
}

func newBlockPool(numBlocks int) *blockPool {
	p := &blockPool{
		numBlocks: numBlocks,
		ref:       make([]int32, numBlocks),
		hash:      make([]uint64, numBlocks),
		hashed:    make([]bool, numBlocks),
		prev:      make([]int32, numBlocks),
		next:      make([]int32, numBlocks),
		head:      -1,
		tail:      -1,
		cached:    make(map[uint64]int32),
	}
	for b := 1; b < numBlocks; b++ {
		p.pushTail(int32(b))
	}
	return p
}

// dirtied notes that block b's entries are about to change.
func (p *blockPool) dirtied(b int32) {
	if p.track && p.mark[b] != p.epoch {
		p.mark[b] = p.epoch
		p.dirty = append(p.dirty, b)
	}
}

func (p *blockPool) pushTail(b int32) {
	p.dirtied(b)
	p.prev[b], p.next[b] = p.tail, -1
	if p.tail >= 0 {
		p.dirtied(p.tail)
		p.next[p.tail] = b
	} else {
		p.head = b
	}
	p.tail = b
	p.free++
}

func (p *blockPool) unlink(b int32) {
	p.dirtied(b)
	if p.prev[b] >= 0 {
		p.dirtied(p.prev[b])
		p.next[p.prev[b]] = p.next[b]
	} else {
		p.head = p.next[b]
	}
	if p.next[b] >= 0 {
		p.dirtied(p.next[b])
		p.prev[p.next[b]] = p.prev[b]
	} else {
		p.tail = p.prev[b]
	}
	p.prev[b], p.next[b] = -1, -1
	p.free--
}

// lookup returns the longest run of cached blocks matching hashes from the start, at most
// limit blocks, in hit's memory. hit is what an earlier lookup of the same hashes returned
// (nil: none): a request blocked at the head of the queue is looked up again every step, and
// the blocks it found last time are checked against the blocks' own hashes, an array read
// each, before the map is asked about the rest. It does not take references; touch does.
func (p *blockPool) lookup(hashes []uint64, limit int, hit []int32) []int32 {
	n := min(len(hashes), limit)
	i := 0
	for ; i < len(hit) && i < n; i++ {
		// A block still hashed with this content is the one the map names for it: allocate
		// unhashes a block when it deletes its map entry.
		if b := hit[i]; !p.hashed[b] || p.hash[b] != hashes[i] {
			break
		}
	}
	hit = hit[:i]
	for ; i < n; i++ {
		b, ok := p.find(hashes[i])
		if !ok {
			break
		}
		hit = append(hit, b)
	}
	return hit
}

// find returns the block holding the content hashed h.
func (p *blockPool) find(h uint64) (int32, bool) {
	if b, ok := p.cached[h]; ok {
		return b, true
	}
	if p.shared != nil {
		if b, ok := p.shared[h]; ok && p.hashed[b] && p.hash[b] == h {
			return b, true
		}
	}
	return 0, false
}

// evictable counts blocks in hit that sit in the free queue: taking them shrinks what is
// left for fresh allocations.
func (p *blockPool) evictable(hit []int32) int {
	n := 0
	for _, b := range hit {
		if p.ref[b] == 0 {
			n++
		}
	}
	return n
}

func (p *blockPool) touch(blocks []int32) {
	for _, b := range blocks {
		if p.ref[b] == 0 {
			p.unlink(b)
		}
		p.dirtied(b)
		p.ref[b]++
	}
}

// allocate appends n fresh blocks to dst, evicting the least recently freed ones. The caller
// must have checked that n <= p.free.
func (p *blockPool) allocate(dst []int32, n int) []int32 {
	for range n {
		b := p.head
		p.unlink(b) // marks b dirty
		if p.hashed[b] {
			// In a copy the entry may be the shared index's: unhashing b is what retires it.
			if p.cached[p.hash[b]] == b {
				delete(p.cached, p.hash[b])
			}
			p.hashed[b] = false
		}
		p.ref[b] = 1
		dst = append(dst, b)
	}
	return dst
}

// cacheBlock makes a full block findable by its hash. When another block already holds the
// same content the first one stays authoritative and this one is left unhashed.
func (p *blockPool) cacheBlock(b int32, h uint64) {
	if _, dup := p.find(h); dup || p.hashed[b] {
		return
	}
	p.dirtied(b)
	p.cached[h] = b
	p.hash[b] = h
	p.hashed[b] = true
}

// release drops one reference to each block. Blocks are queued tail first, as vLLM does, so
// that a request's last blocks are evicted before its shared prefix.
func (p *blockPool) release(blocks []int32) {
	for i := len(blocks) - 1; i >= 0; i-- {
		b := blocks[i]
		p.dirtied(b)
		p.ref[b]--
		if p.ref[b] == 0 {
			p.pushTail(b)
		}
	}
}

// usage is vLLM's kv_cache_usage_perc.
func (p *blockPool) usage() float64 {
	return 1 - float64(p.free)/float64(p.numBlocks-1)
}

// syncFrom makes p, a forecast's copy of src, equal to src again, reusing p's memory. The
// first time, and whenever src has been copied elsewhere since, it copies every block; after
// that only the blocks src changed since the last sync and those p's forecast changed. src
// must be a real pool: p reads its index (see shared), so the copy holds only while src does
// not change.
func (p *blockPool) syncFrom(src *blockPool) {
	if src.mirror != p || p.numBlocks != src.numBlocks {
		p.numBlocks = src.numBlocks
		p.ref = append(p.ref[:0], src.ref...)
		p.hash = append(p.hash[:0], src.hash...)
		p.hashed = append(p.hashed[:0], src.hashed...)
		p.prev = append(p.prev[:0], src.prev...)
		p.next = append(p.next[:0], src.next...)
		src.mirror = p
		src.startTracking()
		p.startTracking()
	} else {
		for _, b := range src.dirty {
			p.copyBlock(src, b)
		}
		for _, b := range p.dirty {
			p.copyBlock(src, b)
		}
	}
	src.cleanAll()
	p.cleanAll()
	p.head, p.tail, p.free = src.head, src.tail, src.free
	if p.cached == nil {
		p.cached = make(map[uint64]int32)
	} else {
		clear(p.cached)
	}
	p.shared = src.cached
}

func (p *blockPool) copyBlock(src *blockPool, b int32) {
	p.ref[b], p.hash[b], p.hashed[b], p.prev[b], p.next[b] = src.ref[b], src.hash[b], src.hashed[b], src.prev[b], src.next[b]
}

func (p *blockPool) startTracking() {
	p.track = true
	if len(p.mark) != p.numBlocks {
		p.mark = make([]uint32, p.numBlocks)
		p.epoch = 0
	}
	p.dirty = p.dirty[:0]
}

// cleanAll empties the dirty list: a new epoch unmarks every block at once.
func (p *blockPool) cleanAll() {
	p.dirty = p.dirty[:0]
	if p.epoch++; p.epoch == 0 {
		clear(p.mark)
		p.epoch = 1
	}
}
