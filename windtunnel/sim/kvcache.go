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
	cached     map[uint64]int32
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

func (p *blockPool) pushTail(b int32) {
	p.prev[b], p.next[b] = p.tail, -1
	if p.tail >= 0 {
		p.next[p.tail] = b
	} else {
		p.head = b
	}
	p.tail = b
	p.free++
}

func (p *blockPool) unlink(b int32) {
	if p.prev[b] >= 0 {
		p.next[p.prev[b]] = p.next[b]
	} else {
		p.head = p.next[b]
	}
	if p.next[b] >= 0 {
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
		b, ok := p.cached[hashes[i]]
		if !ok {
			break
		}
		hit = append(hit, b)
	}
	return hit
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
		p.ref[b]++
	}
}

// allocate appends n fresh blocks to dst, evicting the least recently freed ones. The caller
// must have checked that n <= p.free.
func (p *blockPool) allocate(dst []int32, n int) []int32 {
	for range n {
		b := p.head
		p.unlink(b)
		if p.hashed[b] {
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
	if _, dup := p.cached[h]; dup || p.hashed[b] {
		return
	}
	p.cached[h] = b
	p.hash[b] = h
	p.hashed[b] = true
}

// release drops one reference to each block. Blocks are queued tail first, as vLLM does, so
// that a request's last blocks are evicted before its shared prefix.
func (p *blockPool) release(blocks []int32) {
	for i := len(blocks) - 1; i >= 0; i-- {
		b := blocks[i]
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
